"""The product as deployed: the real dagster-daemon and webserver, a launch through GraphQL like the UI's."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
from dagster_graphql import DagsterGraphQLClient

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# An upper bound, not an expectation: on a loaded machine every run launch takes seconds.
DEADLINE_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout_s: float, what: str, processes: dict[Path, subprocess.Popen] | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for log, process in (processes or {}).items():
            assert process.poll() is None, (
                f"{process.args[0]} exited early with {process.returncode}; its output ends:\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            )
        value = condition()
        if value:
            return value
        time.sleep(0.5)  # polling interval of a deadline wait
    raise AssertionError(f"{what} not reached within {timeout_s} s")


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


def test_daemon_sensors_drive_a_campaign_launched_through_graphql_to_a_stored_decision(
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

        wait_until(webserver_ready, 90, "the webserver answering", processes)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution("start_campaign", run_config={"ops": {"register_campaign_op": {"config": {
            "campaign": "daemon-e2e", "base_url": simulator.base_url, "telemetry_path": str(simulator.log_path),
            "hours": 2, "hour_seconds": 6.0, "stress_baseline_rps": 2.0,
        }}}})
        state_file = data_root / "campaigns" / "daemon-e2e" / "campaign.json"
        decision_file = data_root / "campaigns" / "daemon-e2e" / "decision.json"
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:

            def clock_started() -> bool:
                run = instance.get_run_by_id(run_id)
                assert run.status != dg.DagsterRunStatus.FAILURE, failure_of(instance, run_id)
                return state_file.exists() and json.loads(state_file.read_text())["status"] != "registered"

            # Registered by start_campaign; hour 0 begins when the collector the clock requested starts.
            wait_until(clock_started, 180, "the campaign clock started by its collector", processes)
            simulator.set_campaign_start(json.loads(state_file.read_text())["timing"]["start_ms"])
            wait_until(lambda: run_finished(instance, "daemon-e2e:verdict:2"), DEADLINE_S, "the verdict run", processes)
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
