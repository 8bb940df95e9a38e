"""The daemon's part of a rehearsal played by processes of the test's own, for the profile matrix.

Dagster's daemon ticks the sensors, queues the runs they request and launches each in a fresh Python
process that imports the code location first — most of a compressed rehearsal's cost. Here a server
process ticks the same sensors (their real evaluation, on the same instance, every TICK_S) and starts a
process per requested run, which runs it with `execute_in_process` and the request's tags and config: a
run in a process of its own, as the daemon's are, forked from a forkserver that imported the code once.
Each run key runs once; one run at a time per lane (collector, hour, notification), in request order, as
dagster.yaml's per-campaign lane limits have it (a rehearsal has one campaign). Not played: the queue's
priorities and slot limits, run retries and run monitoring. The real daemon serves
test_daemon_rehearsal.py, test_daemon_e2e.py and the UI test.

Processes from a forkserver, not threads or plain forks: two runs executing in threads of one process
deadlock in Dagster's log handlers, and DuckDB (the telemetry classifier) hangs in a child forked from a
process that used it.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import time
import traceback
from collections.abc import Iterator
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path

import dagster as dg

# The instance's SQLite storage classes, which Dagster imports lazily when a run opens the instance: imported
# here, they are imported once by the forkserver instead of once per run (about 0.75 CPU-s a run).
import dagster._core.storage.sqlite_storage

from staging_validation.campaign.jobs import campaign_collector
from staging_validation.campaign.notification_jobs import campaign_alert_notifications
from staging_validation.campaign.rehearsal import QUIET_RUN_CONFIG
from staging_validation.definitions import build_definitions

TICK_S = 0.5  # the real daemon ticks a rehearsal's sensors every second at most
LOOP_S = 0.05  # how often the server reaps ended runs and starts waiting ones
STOP_GRACE_S = 20


def _context() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # the code location, imported once by the forkserver
    return context


def _lane(request: dg.RunRequest) -> str:
    if request.job_name == campaign_collector.name:
        return "collector"
    if request.job_name == campaign_alert_notifications.name:
        return "notification"
    return "hour"  # ingestion and verdicts share the hour lane


def _execute_run(instance_ref: dg.InstanceRef, data_root: str, job_name: str, partition_key: str | None,
                 run_config: dict, tags: dict[str, str]) -> None:
    """One requested run, in a process of its own."""
    with dg.DagsterInstance.from_ref(instance_ref) as instance:
        build_definitions(data_root).resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=partition_key, raise_on_error=False,
            run_config={**QUIET_RUN_CONFIG, **run_config}, tags=tags)


def _start_run(context: ForkServerContext, instance_ref: dg.InstanceRef, data_root: str,
               request: dg.RunRequest) -> BaseProcess:
    run = context.Process(target=_execute_run, args=(
        instance_ref, data_root, request.job_name or "", request.partition_key, dict(request.run_config or {}),
        {**request.tags, "dagster/run_key": request.run_key or ""}))
    run.start()
    return run


def _serve(instance_ref: dg.InstanceRef, data_root: str, stopping: Event) -> None:
    context = _context()
    instance = dg.DagsterInstance.from_ref(instance_ref)
    defs = build_definitions(data_root)
    sensors = list(defs.sensors or [])
    cursors: dict[str, str | None] = {}
    waiting: dict[str, collections.deque[dg.RunRequest]] = collections.defaultdict(collections.deque)
    running: dict[str, BaseProcess] = {}  # lane -> its run
    requested: set[str] = set()
    next_tick = 0.0
    try:
        while not stopping.is_set():
            running = {lane: run for lane, run in running.items() if run.is_alive()}
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_S
                for sensor in sensors:
                    tick = dg.build_sensor_context(instance=instance, cursor=cursors.get(sensor.name),
                                                   definitions=defs, instance_ref=instance_ref,
                                                   resources=defs.resources)
                    try:
                        result = sensor.evaluate_tick(tick)
                    except Exception:  # the daemon logs a failed tick and ticks again
                        traceback.print_exc()
                        continue
                    if result.cursor is not None:
                        cursors[sensor.name] = result.cursor
                    for request in result.run_requests or []:
                        if request.run_key not in requested:  # the daemon launches a run key once
                            requested.add(request.run_key or "")
                            waiting[_lane(request)].append(request)
            for lane, pending in waiting.items():
                if pending and lane not in running:
                    running[lane] = _start_run(context, instance_ref, data_root, pending.popleft())
            stopping.wait(LOOP_S)
    finally:
        for run in running.values():
            run.kill()
            run.join()


@contextlib.contextmanager
def runs_in_process(instance: dg.DagsterInstance, dagster_home: Path, data_root: Path,
                    log_path: Path) -> Iterator[None]:
    """`rehearse(..., serve_runs=runs_in_process)`: the campaign's runs served by processes of this test."""
    context = _context()
    stopping = context.Event()
    server = context.Process(target=_serve, args=(instance.get_ref(), str(data_root), stopping))
    server.start()
    try:
        yield
    finally:
        stopping.set()
        server.join(STOP_GRACE_S)
        if server.is_alive():
            server.kill()
            server.join()
