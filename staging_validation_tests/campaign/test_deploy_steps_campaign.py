"""Hour 0 runs the launch config's migrate and deploy commands before the smoke tests: a failing step
stops the campaign with REJECT naming the step; their results are in the report's deployment section."""

from __future__ import annotations

import json
import sys

import dagster as dg
import pandas as pd

from staging_validation.campaign.partitions import campaign_hour_key
from staging_validation.campaign.rehearsal import QUIET_RUN_CONFIG
from staging_validation.campaign.sensors import campaign_clock
from staging_validation.campaigns import load_campaign_state
from staging_validation.definitions import build_definitions


def launch(defs, instance, campaign: str, base_url: str, log, deploy: dict) -> None:
    assert defs.get_job_def("start_campaign").execute_in_process(instance=instance, run_config={
        **QUIET_RUN_CONFIG, "ops": {"register_campaign_op": {"config": {
            "campaign": campaign, "base_url": base_url, "telemetry_path": str(log), "hour_seconds": 600.0,
            "deploy": deploy}}}}).success


def run_probes_of_hour_0(defs, instance, campaign: str) -> None:
    assert defs.resolve_job_def("campaign_probes").execute_in_process(
        instance=instance, partition_key=campaign_hour_key(campaign, 0), run_config=QUIET_RUN_CONFIG).success


def test_a_failing_deploy_step_rejects_the_campaign_naming_the_step(tmp_path, simulator_factory):
    simulator = simulator_factory()
    data_root = tmp_path / "data"
    defs = build_definitions(str(data_root))
    migrate = f"{sys.executable} -c 'print(\"applied 3 migrations\")'"
    deploy = f"{sys.executable} -c 'import sys; print(\"pulling image\"); sys.exit(7)'"
    with dg.instance_for_test() as instance:
        launch(defs, instance, "bad-deploy", simulator.base_url, simulator.log_path,
               {"migrate_command": migrate, "deploy_command": deploy})
        run_probes_of_hour_0(defs, instance, "bad-deploy")
        state = load_campaign_state(data_root, "bad-deploy")
        assert state.status == "stopped"
        assert state.early_stop["rule"] == "early_stop.deploy_step_failed"
        assert state.early_stop["reason"] == f"deploy step failed: deploy step `{deploy}`: exit code 7"
        # No smoke test ran against a deployment that did not deploy.
        assert simulator.stats()["requests"]["probe"] == 1  # the harness's readiness check only

        context = dg.build_sensor_context(instance=instance, definitions=defs, instance_ref=instance.get_ref(),
                                          resources=defs.resources)
        for request in campaign_clock.evaluate_tick(context).run_requests:
            assert defs.resolve_job_def(request.job_name).execute_in_process(
                instance=instance, partition_key=request.partition_key, run_config=QUIET_RUN_CONFIG).success

    folder = data_root / "campaigns" / "bad-deploy"
    decision = json.loads((folder / "decision.json").read_text())
    assert (decision["decision"], decision["rule"]) == ("REJECT", "early_stop.deploy_step_failed")
    report = (folder / "STAGING_ACCEPTANCE_REPORT.md").read_text()
    assert f"| Migrate step `{migrate}` | PASS | exit code 0 after" in report
    assert f"| Deploy step `{deploy}` | FAIL | exit code 7 after" in report
    assert "applied 3 migrations" in report and "pulling image" in report
    stored = json.loads((folder / "deploy" / "steps.json").read_text())
    assert [(s["step"], s["exit_code"]) for s in stored] == [("migrate", 0), ("deploy", 7)]


def test_succeeding_deploy_steps_run_before_the_smoke_tests(tmp_path, simulator_factory):
    simulator = simulator_factory()
    data_root = tmp_path / "data"
    defs = build_definitions(str(data_root))
    stats_at_migration = tmp_path / "stats-at-migration.json"
    # The migration reads the simulator's ground truth: no smoke test may have reached it yet.
    migrate = (f"{sys.executable} -c 'import httpx, pathlib; pathlib.Path(\"{stats_at_migration}\")"
               f".write_text(httpx.get(\"{simulator.base_url}/_sim/stats\").text)'")
    with dg.instance_for_test() as instance:
        launch(defs, instance, "good-deploy", simulator.base_url, simulator.log_path, {"migrate_command": migrate})
        run_probes_of_hour_0(defs, instance, "good-deploy")
        assert load_campaign_state(data_root, "good-deploy").status == "active"
    assert json.loads(stats_at_migration.read_text())["requests"]["probe"] == 1  # the readiness check only
    records = pd.read_parquet(next((data_root / "campaigns" / "good-deploy" / "hours").rglob("probe_records*")))
    steps = records[records["probe"] == "deploy_step"]
    assert steps[["case", "passed", "method"]].values.tolist() == [["migrate", True, "RUN"]]
    assert records[records["probe"] == "deploy"]["passed"].all()  # the smoke tests ran after it, and passed
