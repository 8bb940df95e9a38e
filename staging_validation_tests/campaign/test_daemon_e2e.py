"""The product as deployed: the real dagster-daemon and webserver; a deploy pipeline's launch: `campaign start`
(a YAML run config, through GraphQL like the UI's launchpad) and `campaign wait` (its exit code)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import httpx
import pytest

from staging_validation.acceptance.cli import EXIT_CODES
from staging_validation_tests.waiting import still_running, wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# An upper bound, not an expectation: on a loaded machine every run launch takes seconds.
DEADLINE_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_finished(instance: dg.DagsterInstance, run_key: str) -> bool:
    runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    return bool(runs) and runs[0].dagster_run.is_finished


def failure_of(instance: dg.DagsterInstance, run_id: str) -> str:
    """The error messages of a failed run, for the assertion message."""
    records = instance.get_records_for_run(run_id).records
    return "\n".join(
        f"{record.event_log_entry.dagster_event_type}: {record.event_log_entry.message}"
        for record in records
        if record.event_log_entry.is_dagster_event and record.event_log_entry.get_dagster_event().is_failure
    ) or "the run failed without a failure event"


@pytest.fixture(params=["sqlite", "postgres"])
def dagster_home(request, tmp_path):
    """The repository's instance (SQLite), or deploy/postgres's on a fresh database of the test server."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    if request.param == "postgres":
        request.getfixturevalue("postgres_database")
        instance_yaml = (REPO / "deploy" / "postgres" / "dagster.yaml").read_text()
    else:
        instance_yaml = (REPO / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(instance_yaml)
    return home


def test_daemon_sensors_drive_a_campaign_started_headless_to_its_decision_and_exit_code(
    tmp_path, dagster_home, simulator_factory
):
    simulator = simulator_factory(profile="healthy", hour_seconds=6.0, organic_rps=10.0)
    data_root = tmp_path / "data"
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "STAGING_VALIDATION_DATA": str(data_root),
           "STAGING_VALIDATION_SENSOR_INTERVAL_S": "1"}
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    # The storage is created once, as a deployment does (`dagster instance migrate`) before starting its
    # services: a daemon and a webserver both creating a fresh SQLite schema at once can race.
    subprocess.run([str(BIN / "dagster"), "instance", "migrate"], cwd=REPO, env=env, check=True, capture_output=True)
    processes: dict[Path, subprocess.Popen] = {}
    running = still_running(processes)
    try:
        for name, command in (
            ("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]),
            ("webserver", [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]),
        ):
            with open(logs / f"{name}.txt", "wb") as output:
                # Its own process group: the code servers it starts end with it (killpg below); one left
                # running would outlive the test's PostgreSQL database and never exit.
                processes[logs / f"{name}.txt"] = subprocess.Popen(
                    command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)

        def webserver_ready():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(webserver_ready, 90, "the webserver answering", poll_s=0.5, still_possible=running)
        cli = [str(BIN / "staging-validation"), "campaign"]
        url = f"http://127.0.0.1:{port}"
        launch = ("ops:\n  register_campaign_op:\n    config:\n"
                  f"      campaign: daemon-e2e\n      base_url: {simulator.base_url}\n"
                  f"      telemetry_path: {simulator.log_path}\n"
                  "      hours: 2\n      hour_seconds: 6.0\n      stress_baseline_rps: 2.0\n")
        # What only the run worker can check (the profile file) fails the registration run; its message is shown.
        refused_config = tmp_path / "refused.yaml"
        refused_config.write_text(launch.replace("campaign: daemon-e2e", "campaign: daemon-e2e-refused\n"
                                                 f"      target_profile: {tmp_path / 'no-such-profile.yaml'}"))
        refused = subprocess.run([*cli, "start", "--config", str(refused_config), "--url", url], env=env,
                                 capture_output=True, text=True, timeout=DEADLINE_S)
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert "campaign daemon-e2e-refused not started" in refused.stderr
        assert "no-such-profile.yaml: cannot read" in refused.stderr

        config = tmp_path / "launch.yaml"
        config.write_text(launch)
        started = subprocess.run([*cli, "start", "--config", str(config), "--url", url], env=env,
                                 capture_output=True, text=True, timeout=DEADLINE_S)
        assert started.returncode == 0, (started.stdout, started.stderr)
        printed = dict(line.split(": ", 1) for line in started.stdout.splitlines())
        assert printed["campaign"] == "daemon-e2e"
        run_id = printed["run"]
        state_file = data_root / "campaigns" / "daemon-e2e" / "campaign.json"
        decision_file = data_root / "campaigns" / "daemon-e2e" / "decision.json"
        assert state_file.exists()  # `start` returns once the registration run has succeeded
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS

            def clock_started() -> bool:
                return json.loads(state_file.read_text())["status"] != "registered"

            # Hour 0 begins when the collector the clock requested starts: the simulator's hours follow it.
            wait_until(clock_started, 180, "the campaign clock started by its collector", poll_s=0.5,
                       still_possible=running)
            simulator.set_campaign_start(json.loads(state_file.read_text())["timing"]["start_ms"])
            status = subprocess.run([*cli, "status", "daemon-e2e", "--json"], env=env, capture_output=True,
                                    text=True, timeout=120)
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["status"] in {"running", "stopped", "extended", "decided"}
            waited = subprocess.run([*cli, "wait", "daemon-e2e", "--timeout", str(DEADLINE_S), "--poll", "1"],
                                    env=env, capture_output=True, text=True, timeout=DEADLINE_S + 60)
            # `wait` returns once the decision and its report are stored; the run then sends the message.
            wait_until(lambda: run_finished(instance, "daemon-e2e:verdict:2"), DEADLINE_S, "the verdict run",
                       poll_s=0.5, still_possible=running)
    finally:
        for process in processes.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):  # the group's stragglers
                os.killpg(process.pid, signal.SIGKILL)

    decision = json.loads(decision_file.read_text())
    assert decision["campaign"] == "daemon-e2e"
    assert waited.returncode == EXIT_CODES[decision["decision"]], (waited.stdout, waited.stderr)
    assert waited.stdout.startswith(f"{decision['decision']} ({decision['rule']}), round 2, report ")
    assert decision["decision"] in {"ACCEPT", "EXTEND", "REJECT"} and decision["rule"]
    assert len(decision["gates"]) == 5
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        launched = instance.get_run_records(dg.RunsFilter(tags={"staging-validation/campaign": "daemon-e2e"}))
        by_key = {r.dagster_run.tags.get("dagster/run_key"): r.dagster_run for r in launched}
        first_round = ["daemon-e2e:collector:2", "daemon-e2e:hour:00", "daemon-e2e:hour:01", "daemon-e2e:verdict:2"]
        assert set(first_round) <= set(by_key)
        # The clock requested every collector, hour and verdict run; alert notifications come from the watch.
        assert all(run.tags.get("dagster/sensor_name") == "campaign_clock" for run in by_key.values()
                   if run.job_name != "campaign_alert_notifications")
        assert {key: by_key[key].status.value for key in first_round} == {key: "SUCCESS" for key in first_round}
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        outbox = list((data_root / "campaigns" / "daemon-e2e" / "outbox").glob("*.eml"))
        assert any(decision["decision"] in path.read_text() for path in outbox)
