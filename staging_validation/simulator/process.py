"""Start the real simulator as a separate process (`python -m staging_validation.cli simulate`).

The rehearsal and the tests use it (tests directly or through the `simulator_factory` fixture). The
process binds port 0 and writes its port to a file; `start_simulator` polls that file and then the
health route until the service answers, with a deadline, no fixed sleep.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import httpx

from staging_validation.simulator.engine import SPARSE
from staging_validation.simulator.sparse_log import events_log_path

STARTUP_DEADLINE_S = 20.0
# The readiness check carries a probe request id, so it neither counts as organic traffic nor uses up a
# `req-<n>` number of the organic sequence.
READINESS_REQUEST_ID = "sv-harness-ready"
HEALTH_ROUTES = {"documented": "/health", "alternate": "/api/v2/status", "sparse": "/healthz"}


class SimulatorDidNotStart(RuntimeError):
    pass


@dataclasses.dataclass
class RunningSimulator:
    process: subprocess.Popen
    port: int
    log_path: Path
    dialect: str
    stderr_path: Path
    final_stats_path: Path

    @property
    def events_log_path(self) -> Path | None:
        """The sparse dialect's second telemetry file (governor JSONL); None for the other dialects."""
        return events_log_path(self.log_path) if self.dialect == SPARSE else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        response = httpx.get(f"{self.base_url}/_sim/stats", timeout=10)
        response.raise_for_status()
        return response.json()

    def set_campaign_start(self, start_ms: int) -> dict:
        response = httpx.post(f"{self.base_url}/_sim/campaign", json={"start_ms": start_ms}, timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_for(
        self, condition: Callable[[dict], bool], timeout_s: float = 15.0, what: str = "condition"
    ) -> dict:
        """Poll /_sim/stats until `condition(stats)` holds; returns those stats."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.stats()
            if condition(stats):
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"simulator: {what} not reached within {timeout_s} s; last stats: {stats}")
            time.sleep(0.05)  # polling interval of a deadline wait, not a synchronisation sleep

    def final_stats(self) -> dict:
        """The stats the simulator wrote on its graceful shutdown: exact for everything in the log."""
        self.stop()
        return json.loads(self.final_stats_path.read_text(encoding="utf-8"))

    def snapshot(self) -> tuple[dict, list[str]]:
        """Stats and exactly the log lines they count (the first `lines_total`), while it keeps running.

        Only meaningful without log rotation. Requests still in flight are not in it yet, so shares of
        slow outcomes (regenerations) are biased low; `final_stats()` drains them first.
        """
        stats = self.stats()
        return stats, self.log_lines()[: stats["lines_total"]]

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8").splitlines() if self.log_path.exists() else []

    def kill(self) -> None:
        """Immediate end, no drain: for teardown when nothing reads the simulator any more."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> int:
        """SIGTERM and wait: the simulator finishes requests in flight, writes its final stats.

        Worst case about 20 s: up to 10 s (`server.GRACEFUL_SHUTDOWN_S`) for HTTP requests in flight,
        then up to 10 s more for organic requests in flight; killed after 30 s.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def simulator_command(
    run_dir: Path,
    profile: str,
    dialect: str,
    seed: int,
    hour_seconds: float,
    organic_rps: float,
    campaign_start_ms: int | None,
    extra_args: Iterable[str],
) -> list[str]:
    command = [
        sys.executable, "-m", "staging_validation.cli", "simulate",
        "--port", "0", "--port-file", str(run_dir / "port"), "--log", str(run_dir / "staging.log"),
        "--stats-file", str(run_dir / "final-stats.json"),
        "--profile", profile, "--dialect", dialect, "--seed", str(seed),
        "--hour-seconds", str(hour_seconds), "--organic-rps", str(organic_rps),
    ]  # fmt: skip
    if campaign_start_ms is not None:
        command += ["--campaign-start-ms", str(campaign_start_ms)]
    return command + list(extra_args)


def start_simulator(
    tmp_path: Path,
    profile: str = "healthy",
    dialect: str = "documented",
    seed: int = 1,
    hour_seconds: float = 3600.0,
    organic_rps: float = 0.0,
    campaign_start_ms: int | None = None,
    extra_args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> RunningSimulator:
    """Launch the simulator in its own folder under tmp_path and wait until its health route answers."""
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    run_dir = Path(os.path.realpath(os.path.join(tmp_path, f"sim-{time.monotonic_ns()}")))
    run_dir.mkdir()
    log_path, port_file, stderr_path = run_dir / "staging.log", run_dir / "port", run_dir / "stderr.txt"
    command = simulator_command(
        run_dir, profile, dialect, seed, hour_seconds, organic_rps, campaign_start_ms, extra_args
    )
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, **(env or {})}
        )
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    port = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = stderr_path.read_text(errors="replace").strip()
            raise SimulatorDidNotStart(f"simulator exited with {process.returncode}: {error}")
        if port is None and port_file.exists():
            port = int(port_file.read_text())
        if port is not None and _answers(f"http://127.0.0.1:{port}{HEALTH_ROUTES[dialect]}"):
            return RunningSimulator(
                process, port, log_path, dialect, stderr_path, run_dir / "final-stats.json"
            )
        time.sleep(0.02)  # polling interval of a deadline wait
    process.kill()
    process.wait()
    raise SimulatorDidNotStart(f"simulator did not answer within {STARTUP_DEADLINE_S} s: {' '.join(command)}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, headers={"x-request-id": READINESS_REQUEST_ID}, timeout=1.0).status_code < 500
    except httpx.HTTPError:
        return False
