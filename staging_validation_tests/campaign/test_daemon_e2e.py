"""The product as deployed: the real dagster-daemon and webserver, a launch through GraphQL like the UI's."""

from __future__ import annotations

import json
import os
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
DEADLINE_S = 150


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


@pytest.fixture
def dagster_home(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance_yaml = (REPO / "dagster.yaml").read_text().replace("data/dagster", str(home / "storage"))
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
                processes[logs / f"{name}.txt"] = subprocess.Popen(
                    command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)

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

            def registered() -> bool:
                run = instance.get_run_by_id(run_id)
                assert run.status != dg.DagsterRunStatus.FAILURE, failure_of(instance, run_id)
                return state_file.exists()

            wait_until(registered, 90, "the campaign registered by start_campaign", processes)
            simulator.set_campaign_start(json.loads(state_file.read_text())["timing"]["start_ms"])
            wait_until(lambda: run_finished(instance, "daemon-e2e:verdict:2"), DEADLINE_S, "the verdict run", processes)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    decision = json.loads(decision_file.read_text())
    assert decision["campaign"] == "daemon-e2e"
    assert decision["decision"] in {"ACCEPT", "EXTEND", "REJECT"} and decision["rule"]
    assert len(decision["gates"]) == 5
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        launched = instance.get_run_records(dg.RunsFilter(tags={"staging-validation/campaign": "daemon-e2e"}))
        by_key = {r.dagster_run.tags.get("dagster/run_key"): r.dagster_run for r in launched}
        assert {"daemon-e2e:probes:00", "daemon-e2e:hour:00", "daemon-e2e:hour:01", "daemon-e2e:verdict:2"} <= set(by_key)
        assert all(run.tags.get("dagster/sensor_name") == "campaign_clock" for run in by_key.values())
        first_round = ["daemon-e2e:probes:00", "daemon-e2e:hour:00", "daemon-e2e:hour:01", "daemon-e2e:verdict:2"]
        assert {key: by_key[key].status.value for key in first_round} == {key: "SUCCESS" for key in first_round}
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        outbox = list((data_root / "campaigns" / "daemon-e2e" / "outbox").glob("*.eml"))
        assert any(decision["decision"] in path.read_text() for path in outbox)


def test_campaign_start_and_wait_drive_a_headless_campaign_to_its_exit_code(tmp_path, dagster_home, simulator_factory):
    """A deploy pipeline's view: a YAML run config in, a command that waits, an exit code out."""
    simulator = simulator_factory(profile="healthy", hour_seconds=6.0, organic_rps=10.0)
    data_root = tmp_path / "data"
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "STAGING_VALIDATION_DATA": str(data_root),
           "STAGING_VALIDATION_SENSOR_INTERVAL_S": "1"}
    port = free_port()
    config = tmp_path / "launch.yaml"
    config.write_text(
        "ops:\n  register_campaign_op:\n    config:\n"
        f"      campaign: headless\n      base_url: {simulator.base_url}\n      telemetry_path: {simulator.log_path}\n"
        "      hours: 2\n      hour_seconds: 6.0\n      stress_baseline_rps: 2.0\n")
    cli = [str(BIN / "staging-validation"), "campaign"]
    logs = tmp_path / "logs"
    logs.mkdir()
    subprocess.run([str(BIN / "dagster"), "instance", "migrate"], cwd=REPO, env=env, check=True, capture_output=True)
    processes: dict[Path, subprocess.Popen] = {}
    try:
        for name, command in (
            ("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]),
            ("webserver", [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]),
        ):
            with open(logs / f"{name}.txt", "wb") as output:
                processes[logs / f"{name}.txt"] = subprocess.Popen(
                    command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)

        def webserver_ready():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(webserver_ready, 90, "the webserver answering", processes)
        started = subprocess.run([*cli, "start", "--config", str(config), "--port", str(port)], env=env,
                                 capture_output=True, text=True, timeout=300)
        assert (started.returncode, started.stdout.strip()) == (0, "headless"), started.stderr
        state = json.loads((data_root / "campaigns" / "headless" / "campaign.json").read_text())
        simulator.set_campaign_start(state["timing"]["start_ms"])
        status = subprocess.run([*cli, "status", "headless", "--json"], env=env, capture_output=True, text=True)
        assert status.returncode == 0 and json.loads(status.stdout)["status"] in {"active", "stopped", "decided"}
        waited = subprocess.run([*cli, "wait", "headless", "--timeout", str(DEADLINE_S), "--poll", "1"], env=env,
                                capture_output=True, text=True, timeout=DEADLINE_S + 30)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    decision = json.loads((data_root / "campaigns" / "headless" / "decision.json").read_text())
    assert waited.returncode == {"ACCEPT": 0, "EXTEND": 3, "REJECT": 4}[decision["decision"]], waited.stderr
    assert waited.stdout.strip() == f"{decision['decision']} ({decision['rule']})"
