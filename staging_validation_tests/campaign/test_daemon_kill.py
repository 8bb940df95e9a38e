"""kill -9 of the real dagster-daemon and of a running hour run's worker, then a restart: the campaign still
decides, the missed hours are alerted as validator gaps and named in the decision (or made up), the killed
run is failed by run monitoring instead of holding its slot, and no run key is requested twice."""

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

from staging_validation.campaign.jobs import start_campaign
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.run_launcher import worker_pid
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.validator_gaps import NOT_RECORDED
from staging_validation_tests.campaign.test_daemon_e2e import BIN, REPO, dagster_home, wait_until  # noqa: F401

CAMPAIGN = "kill-e2e"
HOURS = 2  # 0 deploy, 1 smoke loop: one is probed by the run killed, the other missed while the daemon is down
HOUR_SECONDS = 20.0
# Every run starts a worker and a process per step: on a loaded 2-CPU machine (load 30) the verdict alone
# took over 5 minutes, so the deadlines are generous; the test waits on conditions, never on time.
DEADLINE_S = 1200


def start_daemon(env: dict, log_path) -> subprocess.Popen:
    # Its own session, so the test can end everything it started (code server, run workers) by group.
    with open(log_path, "ab") as output:
        return subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def runs_of(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    return list(instance.get_run_records(dg.RunsFilter(tags={"staging-validation/campaign": CAMPAIGN})))


def runs_text(instance: dg.DagsterInstance) -> str:
    """The campaign's runs, for an assertion message."""
    return "\n".join(f"{r.dagster_run.tags.get('dagster/run_key')}: {r.dagster_run.status.value}"
                     for r in sorted(runs_of(instance), key=lambda r: r.create_timestamp))


def run_by_key(instance: dg.DagsterInstance, key: str) -> dg.RunRecord | None:
    found = instance.get_run_records(dg.RunsFilter(tags={"dagster/run_key": key}), limit=1)
    return found[0] if found else None


@pytest.mark.e2e
def test_kill_9_of_the_daemon_and_a_run_is_a_named_validator_gap_not_a_verdict_against_the_target(
    tmp_path, dagster_home, simulator_factory  # noqa: F811 (the fixture imported above)
):
    simulator = simulator_factory(profile="healthy", hour_seconds=HOUR_SECONDS, organic_rps=10.0)
    data_root = tmp_path / "data"
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "STAGING_VALIDATION_DATA": str(data_root),
           "STAGING_VALIDATION_SENSOR_INTERVAL_S": "1"}
    subprocess.run([str(BIN / "dagster"), "instance", "migrate"], cwd=REPO, env=env, check=True, capture_output=True)
    daemon_log = tmp_path / "daemon.txt"
    daemons: list[subprocess.Popen] = []
    figures: dict[str, float] = {}
    campaign_dir = data_root / "campaigns" / CAMPAIGN
    try:
        daemons.append(start_daemon(env, daemon_log))
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            launched = start_campaign.execute_in_process(
                instance=instance, resources={"store": CampaignStore(data_root=str(data_root))},
                run_config={"ops": {"register_campaign_op": {"config": {
                    "campaign": CAMPAIGN, "base_url": simulator.base_url, "telemetry_path": str(simulator.log_path),
                    "hours": HOURS, "hour_seconds": HOUR_SECONDS, "stress_baseline_rps": 2.0}}}})
            assert launched.success
            state = json.loads((campaign_dir / "campaign.json").read_text())
            simulator.set_campaign_start(state["timing"]["start_ms"])
            timing = CampaignTiming(**state["timing"])
            processes = {daemon_log: daemons[0]}

            def running_probe_worker() -> tuple[int, int] | None:
                """(hour, worker pid) of the campaign's first probe run that is running."""
                for record in runs_of(instance):
                    run = record.dagster_run
                    if run.job_name == "campaign_probes" and run.status == dg.DagsterRunStatus.STARTED:
                        pid = worker_pid(instance, run.run_id)
                        if pid is not None:
                            return int(run.tags["staging-validation/hour"]), pid
                return None

            killed_hour, pid = wait_until(running_probe_worker, DEADLINE_S, "a probe run running", processes)
            killed_at = time.monotonic()
            daemons[0].send_signal(signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
            daemons[0].wait(timeout=10)
            # The daemon stays down until every planned hour is over: the hours after the killed run's get
            # no probe run at all.
            wait_until(lambda: timing.campaign_seconds() >= HOURS * 3600, DEADLINE_S, "the end of the planned hours")
            restart = time.monotonic()
            daemons.append(start_daemon(env, daemon_log))
            processes = {daemon_log: daemons[1]}

            def killed_run_failed() -> bool:
                record = run_by_key(instance, f"{CAMPAIGN}:probes:{killed_hour:02d}")
                return record is not None and record.dagster_run.status == dg.DagsterRunStatus.FAILURE

            wait_until(killed_run_failed, DEADLINE_S, "run monitoring failing the killed run", processes)
            figures["killed run failed, s after restart"] = time.monotonic() - restart
            try:
                wait_until(lambda: (campaign_dir / "decision.json").exists(), DEADLINE_S, "the decision", processes)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the campaign's runs:\n{runs_text(instance)}") from None
            figures["decision, s after restart"] = time.monotonic() - restart
            figures["decision, s after kill"] = time.monotonic() - killed_at
            records = runs_of(instance)
    finally:
        for daemon in daemons:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)  # the daemon's group: its code server and run workers
            daemon.wait(timeout=10)

    decision = json.loads((campaign_dir / "decision.json").read_text())
    gaps = decision["validator"]["gaps"]
    alerts = [json.loads(line) for line in (campaign_dir / "alerts.jsonl").read_text().splitlines()]
    gap_alerts = [a for a in alerts if a["rule"] == "monitor.validator_gap"]
    print(f"figures: {figures}; killed the hour {killed_hour} probe run; {len(gaps)} gaps, {len(gap_alerts)} gap "
          f"alerts; decision {decision['decision']} ({decision['rule']})")
    # The missed hours are the validator's: alerted, named in the decision, never a REJECT of the target.
    # The killed run's hour and every hour after it (the daemon was down) recorded nothing.
    missed = {(hour, step) for hour in range(killed_hour, HOURS)
              for step in ("identity", "deploy" if hour == 0 else "smoke")}
    assert {(g["hour"], g["step"]) for g in gaps} >= missed
    assert {(e["hour"], e["step"]) for a in gap_alerts for e in a["evidence"]} >= missed
    # The decision carries the clock's cause of each gap (run killed, daemon down or queued past the hour).
    assert all(g["cause"] != NOT_RECORDED for g in gaps), gaps
    assert "hour 1 smoke" in decision["notification"]["body"]
    assert decision["decision"] != "REJECT"
    if decision["decision"] == "INCONCLUSIVE":
        assert decision["rule"] == "inconclusive.validator"
    assert decision["validator"]["probe_coverage"] < 1
    # Every run key was requested once, across the two daemons.
    keys = collections.Counter(r.dagster_run.tags.get("dagster/run_key") for r in records
                               if "dagster/parent_run_id" not in r.dagster_run.tags)
    assert [key for key, count in keys.items() if count > 1] == []
