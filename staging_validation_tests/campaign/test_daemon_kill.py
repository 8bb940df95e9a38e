"""kill -9 of the real dagster-daemon and of the campaign's running collector, then a restart: the killed run
is failed by run monitoring and retried, the hours missed meanwhile are recorded as not run, alerted as
validator gaps and named in the decision, never charged to the target, and no run key is requested twice."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import time

import dagster as dg
import pytest

from staging_validation.campaign.rehearsal import QUIET_RUN_CONFIG, instance_home
from staging_validation.campaign.run_launcher import worker_pid
from staging_validation.campaign.run_tags import TAG_CAMPAIGN
from staging_validation.definitions import build_definitions
from staging_validation.schemas.timing import CampaignTiming
from staging_validation_tests.campaign.test_daemon_e2e import BIN, REPO
from staging_validation_tests.waiting import still_running, wait_until

pytestmark = pytest.mark.e2e
CAMPAIGN = "kill-e2e"
HOURS = 3  # 0 deploy, 1 smoke loop, 2 prompt set: at least the last is missed while the daemon is down
HOUR_SECONDS = 10.0
DEADLINE_S = 900  # an upper bound: the test waits on conditions, never on time
# Reasons the decision may give only if the target were blamed for what the validator missed.
BLAMING_RULES = ("extend.critical_no_data", "extend.low_coverage", "reject.no_evidence_after_extension")


def start_daemon(env: dict, log_path) -> subprocess.Popen:
    # Its own session, so the test can end everything it started (code server, run workers) by group.
    with open(log_path, "ab") as output:
        return subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def campaign_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    return list(instance.get_run_records(dg.RunsFilter(tags={TAG_CAMPAIGN: CAMPAIGN})))


def runs_text(instance: dg.DagsterInstance) -> str:
    return "\n".join(f"{r.dagster_run.tags.get('dagster/run_key')}: {r.dagster_run.status.value}"
                     for r in sorted(campaign_runs(instance), key=lambda r: r.create_timestamp))


def test_kill_9_of_the_daemon_and_the_collector_is_a_named_validator_gap_not_a_verdict_against_the_target(
        tmp_path, simulator_factory):
    simulator = simulator_factory(profile="healthy", hour_seconds=HOUR_SECONDS, organic_rps=10.0)
    home = instance_home(tmp_path / "home")
    data_root = tmp_path / "data"
    env = {**os.environ, "DAGSTER_HOME": str(home), "STAGING_VALIDATION_DATA": str(data_root),
           "STAGING_VALIDATION_SENSOR_INTERVAL_S": "1"}
    subprocess.run([str(BIN / "dagster"), "instance", "migrate"], cwd=REPO, env=env, check=True, capture_output=True)
    daemon_log = tmp_path / "daemon.txt"
    daemons: list[subprocess.Popen] = []
    figures: dict[str, float] = {}
    campaign_dir = data_root / "campaigns" / CAMPAIGN
    try:
        daemons.append(start_daemon(env, daemon_log))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            launched = build_definitions(str(data_root)).get_job_def("start_campaign").execute_in_process(
                instance=instance, run_config={**QUIET_RUN_CONFIG, "ops": {"register_campaign_op": {"config": {
                    "campaign": CAMPAIGN, "base_url": simulator.base_url, "telemetry_path": str(simulator.log_path),
                    "hours": HOURS, "hour_seconds": HOUR_SECONDS, "stress_baseline_rps": 2.0}}}})
            assert launched.success
            processes = {daemon_log: daemons[0]}

            def running_collector() -> tuple[str, int] | None:
                """(run id, worker pid) of the campaign's collector once it has started the clock."""
                state = json.loads((campaign_dir / "campaign.json").read_text())
                for record in campaign_runs(instance):
                    run = record.dagster_run
                    if run.job_name == "campaign_collector" and run.status == dg.DagsterRunStatus.STARTED \
                            and state["status"] == "running":
                        pid = worker_pid(instance, run.run_id)
                        if pid is not None:
                            return run.run_id, pid
                return None

            killed_run, pid = wait_until(running_collector, DEADLINE_S, "the collector running", poll_s=0.5,
                                         still_possible=still_running(processes))
            timing = CampaignTiming(**json.loads((campaign_dir / "campaign.json").read_text())["timing"])
            simulator.set_campaign_start(timing.start_ms)
            killed_at = time.monotonic()
            daemons[0].send_signal(signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
            daemons[0].wait(timeout=10)
            killed_in_hour = int(timing.campaign_seconds() // 3600)
            # Down until every planned hour is over: the hours after the kill get no collector at all.
            wait_until(lambda: timing.campaign_seconds() >= HOURS * 3600, DEADLINE_S, "the end of the planned hours")
            restart = time.monotonic()
            daemons.append(start_daemon(env, daemon_log))
            processes = {daemon_log: daemons[1]}

            def killed_run_failed() -> bool:
                record = instance.get_run_record_by_id(killed_run)
                return record is not None and record.dagster_run.status == dg.DagsterRunStatus.FAILURE

            wait_until(killed_run_failed, DEADLINE_S, "run monitoring failing the killed collector", poll_s=0.5,
                       still_possible=still_running(processes))
            figures["killed run failed, s after restart"] = time.monotonic() - restart
            try:
                wait_until(lambda: (campaign_dir / "decision.json").exists(), DEADLINE_S, "the decision", poll_s=0.5,
                           still_possible=still_running(processes))
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the campaign's runs:\n{runs_text(instance)}") from None
            figures["decision, s after restart"] = time.monotonic() - restart
            figures["decision, s after kill"] = time.monotonic() - killed_at
            records = campaign_runs(instance)
    finally:
        for daemon in daemons:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)  # the daemon's group: its code server and run workers
            daemon.wait(timeout=10)

    decision = json.loads((campaign_dir / "decision.json").read_text())
    gaps = decision["validator"]["gaps"]
    alerts = [json.loads(line) for line in (campaign_dir / "alerts.jsonl").read_text().splitlines()]
    gap_alerts = [a for a in alerts if a["rule"] == "monitor.validator_gap"]
    print(f"figures: {figures}; killed in hour {killed_in_hour}; {len(gaps)} gaps, {len(gap_alerts)} gap alerts; "
          f"decision {decision['decision']} ({decision['rule']})")
    # Every hour after the one the kill cut short was missed whole: named, alerted, not blamed on the target.
    missed = {(hour, "identity") for hour in range(killed_in_hour + 1, HOURS)}
    assert missed and {(g["hour"], g["step"]) for g in gaps} >= missed, gaps
    assert {(e["hour"], e["step"]) for a in gap_alerts for e in a["evidence"]} >= missed
    assert all("no collector was running" in g["cause"] for g in gaps if g["hour"] > killed_in_hour), gaps
    assert decision["decision"] != "REJECT" and decision["rule"] not in BLAMING_RULES, decision["rule"]
    assert decision["validator"]["probe_coverage"] < 1
    # Every run key was requested once, across the two daemons (a retry re-executes its run, same key).
    keys = collections.Counter(r.dagster_run.tags.get("dagster/run_key") for r in records
                               if "dagster/parent_run_id" not in r.dagster_run.tags)
    assert [key for key, count in keys.items() if count > 1] == []
