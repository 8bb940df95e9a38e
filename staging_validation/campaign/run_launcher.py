"""Dagster's default run launcher, plus the worker health check run monitoring needs to see a killed run.

The default launcher starts each run worker as a process on this host but cannot tell run monitoring
whether that process still lives, so a run whose worker was killed (kill -9, OOM) stays STARTED and holds
a run slot until its `dagster/max_runtime`. Here the worker's pid (the run's own "Started process for run"
event) is checked each monitoring poll (`dagster.yaml` `run_monitoring.poll_interval_seconds`): a gone
process, or a pid since reused by a process younger than the run, fails the run at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

PROC = Path("/proc")


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid the run's latest worker reported (an engine event carrying a `pid`)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, ascending=False,
                                           limit=50).records
    for record in records:
        event = record.event_log_entry.dagster_event
        metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
        pid = metadata.get("pid")
        if pid is not None and str(pid.value).isdigit():
            return int(str(pid.value))
    return None


def _process_started_at(pid: int) -> float | None:
    """Epoch seconds the process started, or None if it is gone or a zombie (Linux /proc)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        boot = next(float(line.split()[1]) for line in (PROC / "stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ", which may contain spaces
    if fields[0] in ("Z", "X"):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose workers run on the daemon's host, with a worker health check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return PROC.is_dir()

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        instance = self._instance
        pid = worker_pid(instance, run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid reported yet")
        started_at = _process_started_at(pid)
        record = instance.get_run_record_by_id(run.run_id)
        run_started = record.start_time if record and record.start_time else None
        # /proc start times have clock-tick resolution; a reused pid belongs to a process started after the run.
        if started_at is None or (run_started is not None and started_at > run_started + 1.0):
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed)")
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {pid} is alive")
