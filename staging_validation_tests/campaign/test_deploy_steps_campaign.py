"""The runbook's hour 0, steps 1-2 before the smoke tests: the launch config's migrate and deploy commands
run as real commands by the collector; a failing one stops the campaign with REJECT naming the step, and
every step's exit code, duration and output are in the report's deployment section.

The target is a closed port: the steps run before any request, the deploy verification (when it runs)
fails at once, so the collector ends at once and no simulator or daemon is needed; only the first test
also runs the hour and verdict the clock requests (the report)."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from staging_validation.campaign.jobs import CampaignLaunchConfig, register_campaign
from staging_validation.campaign.rehearsal import QUIET_RUN_CONFIG, instance_home
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.sensors import campaign_clock
from staging_validation.campaign.watch_sensor import campaign_watch
from staging_validation.collection.recorded_steps import hour_outcomes, hour_records
from staging_validation.config_files import ConfigError
from staging_validation.definitions import build_definitions
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignStatus, load_campaign_state
from staging_validation.plan import ProbeStep
from staging_validation_tests.waiting import wait_until


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def collect(tmp_path, instance, defs, campaign: str, deploy: dict, **launch) -> None:
    """Launch, then collect hour 0 (the collector ends at the early stop)."""
    log = tmp_path / "staging.log"
    log.touch()
    assert defs.get_job_def("start_campaign").execute_in_process(instance=instance, run_config={
        **QUIET_RUN_CONFIG, "ops": {"register_campaign_op": {"config": {
            "campaign": campaign, "base_url": f"http://127.0.0.1:{closed_port()}", "telemetry_path": str(log),
            "hour_seconds": 600.0, "deploy": deploy, **launch}}}}).success
    assert defs.get_job_def("campaign_collector").execute_in_process(instance=instance, run_config={
        **QUIET_RUN_CONFIG, "ops": {"collect_probe_steps": {"config": {"campaign": campaign}}}}).success
    assert load_campaign_state(tmp_path / "data", campaign).status is CampaignStatus.STOPPED


def run_campaign(tmp_path, campaign: str, deploy: dict, **launch) -> tuple[dict, str]:
    """Launch, collect hour 0, then the runs the clock requests: (decision.json, the report)."""
    data_root = tmp_path / "data"
    defs = build_definitions(str(data_root))
    with dg.instance_for_test() as instance:
        collect(tmp_path, instance, defs, campaign, deploy, **launch)
        context = dg.build_sensor_context(instance=instance, definitions=defs, instance_ref=instance.get_ref(),
                                          resources=defs.resources)
        requests = campaign_clock.evaluate_tick(context).run_requests
        assert [r.run_key for r in requests] == [f"{campaign}:hour:00", f"{campaign}:verdict:early"]
        for request in requests:
            assert defs.resolve_job_def(request.job_name).execute_in_process(
                instance=instance, partition_key=request.partition_key, run_config=QUIET_RUN_CONFIG).success
    layout = CampaignLayout.of(data_root, campaign)
    return json.loads(layout.decision_file.read_text()), layout.report_file.read_text()


def collect_only(tmp_path, campaign: str, deploy: dict, **launch) -> None:
    """Launch and collect hour 0 only (cheaper: what the collector stored is what is checked)."""
    defs = build_definitions(str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        collect(tmp_path, instance, defs, campaign, deploy, **launch)


def deployment_section(report: str) -> str:
    return report.split("## 1. Deployment status", 1)[1].split("\n## 2.", 1)[0]


def test_a_failing_deploy_step_rejects_the_campaign_naming_the_step_and_the_smoke_tests_are_not_run(tmp_path):
    migrate = python("print('applied 3 migrations')")
    deploy = python("import sys; print('pulling image'); sys.stderr.write('manifest unknown\\n'); sys.exit(7)")
    decision, report = run_campaign(tmp_path, "bad-deploy", {"migrate_command": migrate, "deploy_command": deploy})

    assert (decision["decision"], decision["rule"]) == ("REJECT", "early_stop.deploy_step_failed")
    state = load_campaign_state(tmp_path / "data", "bad-deploy")
    assert state.early_stop is not None and state.early_stop.hour == 0
    assert state.early_stop.reason == (f"deploy step `deploy` ({shlex.join(deploy)}): exit code 7; the smoke tests "
                                       "were not run")
    assert "deploy step `deploy`" in decision["notification"]["body"]
    # The deploy verification is recorded as run and failed, with no probe row: no smoke test was sent.
    verification = hour_outcomes(tmp_path / "data", "bad-deploy", 0)[ProbeStep.DEPLOY_VERIFICATION]
    assert verification.passed is False and verification.failures == [
        state.early_stop.reason.removesuffix("; the smoke tests were not run")]
    assert [s["exit_code"] for s in verification.summary["deploy_steps"]] == [0, 7]
    rows = hour_records(tmp_path / "data", "bad-deploy", 0).to_pandas()
    assert not (rows["probe"] == "deploy").any()

    section = deployment_section(report)
    print(section)
    assert "| Migrate step `" in section and "| PASS | exit code 0 after " in section
    assert "| Deploy step `" in section and "| FAIL | exit code 7 after " in section
    assert "| Health | NOT RUN | not run: the deploy step failed |" in section
    assert "applied 3 migrations" in section and "pulling image\nmanifest unknown" in section


def test_succeeding_deploy_steps_run_before_the_deploy_verification(tmp_path):
    migrate = python("print('migrated to v42')")
    deploy = python("print('deployed build 1234')")
    collect_only(tmp_path, "good-deploy", {"migrate_command": migrate, "deploy_command": deploy})

    # Both steps passed; the deploy verification then ran, against a closed port, and failed.
    state = load_campaign_state(tmp_path / "data", "good-deploy")
    assert state.early_stop is not None and state.early_stop.rule == "early_stop.deploy_verification_failed"
    layout = CampaignLayout.of(tmp_path / "data", "good-deploy")
    stored = [json.loads(layout.deploy_step_file(step).read_text()) for step in ("migrate", "deploy")]
    assert [(s["step"], s["exit_code"], s["output"]) for s in stored] == [
        ("migrate", 0, "migrated to v42\n"), ("deploy", 0, "deployed build 1234\n")]
    rows = hour_records(tmp_path / "data", "good-deploy", 0).to_pandas()
    verification = rows[rows["probe"] == "deploy"]
    assert len(verification)
    deploy_ended = pd.Timestamp(stored[1]["started_at_ms"] + stored[1]["duration_s"] * 1000, unit="ms", tz="UTC")
    assert verification["time"].min() >= deploy_ended.floor("ms"), "a smoke test ran before the deploy ended"


def test_with_the_policy_switch_off_a_failing_step_is_recorded_and_the_deploy_verification_runs(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("early_stop:\n  deploy_step_failed: false\n")
    collect_only(tmp_path, "switch-off", {"migrate_command": python("import sys; sys.exit(2)")}, policy=str(policy))
    state = load_campaign_state(tmp_path / "data", "switch-off")
    assert state.early_stop is not None and state.early_stop.rule == "early_stop.deploy_verification_failed"
    verification = hour_outcomes(tmp_path / "data", "switch-off", 0)[ProbeStep.DEPLOY_VERIFICATION]
    assert [s["exit_code"] for s in verification.summary["deploy_steps"]] == [2]
    rows = hour_records(tmp_path / "data", "switch-off", 0).to_pandas()
    assert (rows["probe"] == "deploy").any()


@pytest.mark.parametrize(("deploy", "problem"), [
    ({"migrate_command": []}, "deploy.migrate_command: an empty argv names no program"),
    ({"deploy_command": [""]}, "deploy.deploy_command: the program (argv[0]) is empty"),
    ({"migrate_command": ["true"], "timeout_s": 0.0}, "deploy.timeout_s: 0 must be a positive number of seconds"),
    ({"deploy_command": ["true"], "timeout_s": -5.0}, "deploy.timeout_s: -5 must be a positive number of seconds"),
])
def test_a_deploy_step_that_cannot_run_is_refused_at_launch_naming_the_field(tmp_path, deploy, problem):
    store = CampaignStore(data_root=str(tmp_path / "data"))
    config = CampaignLaunchConfig(campaign="refused", telemetry_path=str(tmp_path / "x.log"), deploy=deploy)
    with pytest.raises(ConfigError, match="campaign 'refused' not launched") as error:
        register_campaign(store, config)
    assert problem in str(error.value)
    assert not (tmp_path / "data" / "campaigns" / "refused").exists()


# The migration of a validator killed mid-step: it marks that it runs, then lives until the collector that
# started it is gone (it is then re-parented), so it outlasts the kill and nothing of it outlasts the test.
ORPHANED_MIGRATION = ("import os, sys, time; parent = os.getppid(); open(sys.argv[1], 'w').write(str(os.getpid())); "
                      "exec('while os.getppid() == parent: time.sleep(0.05)')")
COLLECTOR_IN_A_PROCESS = (
    "import sys, dagster as dg; from staging_validation.definitions import build_definitions; "
    "defs = build_definitions(sys.argv[1]); instance = dg.DagsterInstance.get(); "
    "defs.get_job_def('campaign_collector').execute_in_process(instance=instance, run_config={"
    "'ops': {'collect_probe_steps': {'config': {'campaign': sys.argv[2]}}}})")


def test_a_collector_killed_during_a_deploy_step_leaves_a_validator_failed_campaign_and_a_critical_alert(
        tmp_path, monkeypatch):
    data_root, home = tmp_path / "data", instance_home(tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    defs = build_definitions(str(data_root))
    log, migrating = tmp_path / "staging.log", tmp_path / "migrating.pid"
    log.touch()
    with dg.DagsterInstance.get() as instance:
        assert defs.get_job_def("start_campaign").execute_in_process(instance=instance, run_config={
            **QUIET_RUN_CONFIG, "ops": {"register_campaign_op": {"config": {
                "campaign": "killed", "base_url": f"http://127.0.0.1:{closed_port()}", "telemetry_path": str(log),
                "hour_seconds": 600.0,
                "deploy": {"migrate_command": [*python(ORPHANED_MIGRATION), str(migrating)]}}}}}).success
        collector = subprocess.Popen([sys.executable, "-c", COLLECTOR_IN_A_PROCESS, str(data_root), "killed"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: migrating.exists() and migrating.read_text(), 120, "the migration under way",
                       still_possible=lambda: None if collector.poll() is None else pytest.fail(
                           f"the collector exited with {collector.returncode} before the migration started"))
        finally:
            collector.kill()
            collector.wait()
        migration = int(migrating.read_text())
        wait_until(lambda: not Path(f"/proc/{migration}").exists(), 30, "the orphaned migration's exit")

        # The collector the clock requests again finds the step started and never finished: it never runs it
        # again (half a migration is not repeated blindly), and nothing more is run for the campaign.
        assert defs.get_job_def("campaign_collector").execute_in_process(instance=instance, run_config={
            **QUIET_RUN_CONFIG, "ops": {"collect_probe_steps": {"config": {"campaign": "killed"}}}}).success
        state = load_campaign_state(data_root, "killed")
        assert state.status is CampaignStatus.VALIDATOR_FAILED
        assert state.validator_failure is not None
        assert "deploy step `migrate`" in state.validator_failure.reason
        assert "the validator cannot tell what was deployed" in state.validator_failure.reason
        store = CampaignStore(data_root=str(data_root))
        [alert] = store.read_alerts("killed")
        assert (alert["severity"], alert["rule"]) == ("critical", "monitor.validator_failed")
        assert alert["message"].startswith("Campaign stopped, not judged: deploy step `migrate`")

        # The watch serves the ended campaign's last alert: one notification run, whose message is in the outbox.
        context = dg.build_sensor_context(instance=instance, definitions=defs, instance_ref=instance.get_ref(),
                                          resources=defs.resources)
        [request] = campaign_watch.evaluate_tick(context).run_requests
        assert request.job_name == "campaign_alert_notifications"
        assert defs.get_job_def(request.job_name).execute_in_process(
            instance=instance, run_config={**QUIET_RUN_CONFIG, **request.run_config}).success
        [message] = CampaignLayout.of(data_root, "killed").outbox_dir.glob("*.eml")
        assert "not judged" in message.read_text()
        assert campaign_watch.evaluate_tick(context).run_requests == []  # delivered: not requested again
