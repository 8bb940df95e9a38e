"""A whole campaign against the built-in simulator, run by the real `dagster-daemon`.

The rehearsal starts the simulator and a `dagster-daemon` of its own on the instance in `dagster_home`
(the same `dagster.yaml`: queued run coordinator, lane limits, run retries and monitoring), registers the
campaign with `start_campaign`, and from then on only watches: the daemon's sensors request the runs,
its run coordinator queues and launches them, exactly as for a live campaign, so the UI shows the
rehearsed campaign like any other. The one difference from a deployment: the daemon
ticks the sensors every second (`STAGING_VALIDATION_SENSOR_INTERVAL_S=1`), as compressed hours need.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from staging_validation.campaign.jobs import start_campaign
from staging_validation.campaign.run_tags import (
    COLLECTOR_PHASE,
    TAG_CAMPAIGN,
    TAG_HOUR,
    TAG_PHASE,
    TAG_ROUND,
    VERDICT_PHASE,
)
from staging_validation.campaign.sensors import SENSOR_INTERVAL_ENV
from staging_validation.config_files import ConfigError
from staging_validation.definitions import build_definitions
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignState, CampaignStatus, load_campaign_state
from staging_validation.simulator.process import RunningSimulator, start_simulator
from staging_validation.simulator.profiles import load_profile
from staging_validation.storage import DATA_ROOT_ENV, local_path, validate_campaign_id
from staging_validation.target.profile import ALTERNATE_PROFILE, DOCUMENTED_PROFILE, SPARSE_PROFILE

# The simulator's dialects and the shipped target profile that reads each one.
DIALECT_PROFILES = {"documented": DOCUMENTED_PROFILE, "alternate": ALTERNATE_PROFILE, "sparse": SPARSE_PROFILE}
# The sparse dialect's governor JSONL file: its capture folder and its mapping under the profile's
# telemetry.sources.
GOVERNOR_SOURCE = "governor"

# Run events stay in the instance (the UI shows them); the terminal shows the progress bars.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"
DAEMON_READY_DEADLINE_S = 180
DAEMON_STOP_GRACE_S = 20
HEARTBEAT_FRESH_S = 30
# The daemons a campaign needs: sensors, the run queue, run monitoring.
NEEDED_DAEMONS = ("SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING")
PRE_CAMPAIGN_OFFSET_MS = 86_400_000
POLL_S = 0.5  # how often the rehearsal reads the runs' progress from the instance
STALL_S = 600


@dataclasses.dataclass
class RehearsalOutcome:
    campaign: str
    decision: dict
    gates: list[dict]
    report_path: Path
    failed_runs: list[str]


def instance_home(folder: Path) -> Path:
    """A DAGSTER_HOME in `folder` with a copy of the project's dagster.yaml (its storage is then inside
    `folder`: the instance keeps Dagster's default, relative to DAGSTER_HOME)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(WORKSPACE.parent / "dagster.yaml", folder / "dagster.yaml")
    return folder


def _fresh_heartbeats(instance: dg.DagsterInstance, since: float) -> set[str]:
    return {daemon_type for daemon_type, beat in instance.get_daemon_heartbeats().items() if beat.timestamp >= since}


@contextmanager
def running_daemon(instance: dg.DagsterInstance, dagster_home: Path, data_root: Path, log_path: Path) -> Iterator[None]:
    """A `dagster-daemon run` of our own on the instance, stopped (with the runs it launched) at the end.

    Refuses when a daemon already serves the instance (`make ui`): two daemons would both tick the
    sensors and dequeue runs."""
    serving = _fresh_heartbeats(instance, time.time() - HEARTBEAT_FRESH_S)
    if serving:
        raise RuntimeError(f"a dagster-daemon already serves the instance in {dagster_home} (`make ui`?): stop it, "
                           "or rehearse with another DAGSTER_HOME")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), DATA_ROOT_ENV: str(data_root), SENSOR_INTERVAL_ENV: "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(log_path, "wb") as output:
        # Its own session, so the daemon, its code server and the runs they launch stop together.
        daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
                                  cwd=WORKSPACE.parent, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + DAEMON_READY_DEADLINE_S
        while not set(NEEDED_DAEMONS) <= _fresh_heartbeats(instance, started):
            if daemon.poll() is not None:
                raise RuntimeError(f"dagster-daemon exited with {daemon.returncode}; its log: {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dagster-daemon not ready within {DAEMON_READY_DEADLINE_S} s; its log: {log_path}")
            time.sleep(POLL_S)  # polling interval of a deadline wait
        yield
    finally:
        stop_process_group(daemon)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process's session (started with start_new_session), SIGKILL to what is left after a grace."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=DAEMON_STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever the daemon left behind (a run it launched)
    process.wait()


# (instance, dagster_home, data_root, log_path) -> the context in which the campaign's runs are served.
RunServer = Callable[[dg.DagsterInstance, Path, Path, Path], AbstractContextManager[None]]


def rehearse(
    dagster_home: Path,
    data_root: Path,
    profile: str = "healthy",
    hours: int = 24,
    hour_seconds: float = 3.0,
    campaign: str | None = None,
    seed: int = 1,
    organic_rps: float = 20.0,
    stress_baseline_rps: float = 10.0,
    notification: dict | None = None,
    console: Console | None = None,
    policy: str | None = None,
    first_verdict_only: bool = False,
    serve_runs: RunServer | None = None,
    dialect: str = "documented",
) -> RehearsalOutcome:
    """`dagster_home`: the instance's folder (its `dagster.yaml`). `policy`: an acceptance policy YAML
    instead of the shipped one. `first_verdict_only`: the campaign ends at its first verdict; an EXTEND
    is decided and notified, but its extension hours are not run. `serve_runs`: what ticks the sensors
    and runs what they request, `running_daemon` unless a test plays that part itself. `dialect`: the
    simulator's HTTP and telemetry dialect, validated with its shipped target profile (`DIALECT_PROFILES`)
    and its further telemetry files."""
    if dialect not in DIALECT_PROFILES:
        raise ConfigError(f"dialect: unknown dialect {dialect!r} (known: {', '.join(DIALECT_PROFILES)})")
    serve_runs = serve_runs or running_daemon
    console = console or Console()
    campaign = validate_campaign_id(
        campaign or f"rehearsal-{profile}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    )
    load_profile(profile)  # an unknown profile is a one-line error before anything starts
    data_root = Path(data_root)
    defs = build_definitions(str(data_root))
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance, \
            serve_runs(instance, Path(dagster_home), data_root, data_root / "rehearsals" / f"{campaign}-daemon.log"):
        # Hour 0 a day ahead until the campaign registers and sets the real start: the profile's fault
        # windows stay closed meanwhile instead of opening on the simulator's own clock.
        simulator = start_simulator(
            data_root / "simulator" / campaign, profile=profile, seed=seed, dialect=dialect,
            hour_seconds=hour_seconds, organic_rps=organic_rps,
            campaign_start_ms=int(time.time() * 1000) + PRE_CAMPAIGN_OFFSET_MS,
        )
        try:
            launch = defs.get_job_def(start_campaign.name).execute_in_process(
                instance=instance,
                run_config={**QUIET_RUN_CONFIG, "ops": {"register_campaign_op": {"config": {
                    "campaign": campaign, "base_url": simulator.base_url, "telemetry_path": str(simulator.log_path),
                    "hours": hours, "hour_seconds": hour_seconds, "stress_baseline_rps": stress_baseline_rps,
                    "first_verdict_only": first_verdict_only,
                    **dialect_launch_config(simulator),
                    **({"notification": notification} if notification else {}),
                    **({"policy": str(policy)} if policy else {}),
                }}}},
                raise_on_error=False,
            )
            if not launch.success:
                failure = next((e for e in launch.all_events if e.is_failure), None)
                raise RuntimeError(f"start_campaign failed: {failure.message if failure else 'see the run in the UI'}")
            failed = _watch(instance, data_root, campaign, console,
                            on_clock_start=lambda state: _anchor(simulator, state))
        finally:
            simulator.stop()
    layout = CampaignLayout.of(data_root, campaign)
    decision = json.loads(layout.decision_file.read_text(encoding="utf-8"))
    return RehearsalOutcome(campaign, decision, decision.get("gates", []), local_path(layout.report_file), failed)


def dialect_launch_config(simulator: RunningSimulator) -> dict:
    """The target profile of the simulator's dialect and its further telemetry files, as launch config
    (the documented dialect: the launch's default profile, as before)."""
    config: dict = {}
    if simulator.dialect != "documented":
        config["target_profile"] = str(DIALECT_PROFILES[simulator.dialect])
    if simulator.events_log_path is not None:
        config["extra_telemetry_sources"] = [
            {"name": GOVERNOR_SOURCE, "path": str(simulator.events_log_path), "mapping": GOVERNOR_SOURCE}]
    return config


def _anchor(simulator, state: CampaignState) -> None:
    """The simulator's fault windows open on the campaign's hours, from the start the collector set."""
    simulator.set_campaign_start(state.timing.start_ms)


def _bar_name(run: dg.DagsterRun) -> str:
    phase = run.tags.get(TAG_PHASE, "")
    if phase == COLLECTOR_PHASE:
        return f"collector (round of {run.tags.get(TAG_ROUND)} hours)"
    if phase == VERDICT_PHASE:
        return f"verdict {run.tags.get(TAG_HOUR)}"
    if TAG_HOUR not in run.tags:
        return f"{run.job_name} {run.run_id[:8]}"  # alert notifications
    return f"hour {run.tags.get(TAG_HOUR)} {phase}"


def _watch(instance: dg.DagsterInstance, data_root: Path, campaign: str, console: Console,
           on_clock_start: Callable[[CampaignState], None]) -> list[str]:
    """Follow the campaign's runs until it has its final decision and none of its runs is still going;
    `on_clock_start` is called once its collector has started the campaign clock."""
    # Stuck, not slow: nothing moved (no run changed status, the campaign did not) for this long. A busy
    # machine launches runs late, which delays the verdict but never changes what was collected.
    stall_s = STALL_S + 2 * load_campaign_state(data_root, campaign).timing.hour_seconds
    last_change, last_seen = time.monotonic(), None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        bars: dict[str, TaskID] = {}
        clock_started = False
        while True:
            state = load_campaign_state(data_root, campaign)
            if not clock_started and state.status is not CampaignStatus.REGISTERED:
                on_clock_start(state)
                clock_started = True
            runs = [r.dagster_run for r in instance.get_run_records(dg.RunsFilter(tags={TAG_CAMPAIGN: campaign}))]
            for run in sorted(runs, key=lambda r: r.tags.get("dagster/run_key", "")):
                key = run.tags.get("dagster/run_key")
                if key is None:
                    continue  # start_campaign
                if key not in bars:
                    bars[key] = progress.add_task(_bar_name(run), total=1, status="queued")
                status = {dg.DagsterRunStatus.SUCCESS: "[green]done", dg.DagsterRunStatus.FAILURE: "[red]failed",
                          dg.DagsterRunStatus.CANCELED: "[red]canceled"}.get(run.status, run.status.value.lower())
                progress.update(bars[key], status=status, completed=1 if run.is_finished else 0)
            going = [run for run in runs if not run.is_finished and run.tags.get("dagster/run_key")]
            if state.status.final and not going:
                return sorted(run.tags["dagster/run_key"] for run in runs
                              if run.status is not dg.DagsterRunStatus.SUCCESS and run.tags.get("dagster/run_key"))
            seen = (state.status, len(state.rounds), sorted((run.run_id, run.status.value) for run in runs))
            if seen != last_seen:
                last_change, last_seen = time.monotonic(), seen
            elif time.monotonic() - last_change > stall_s:
                raise RuntimeError(f"campaign {campaign}: nothing moved for {stall_s:.0f} s; "
                                   "its runs are in the instance")
            time.sleep(POLL_S)  # polling interval of a deadline wait


def print_outcome(console: Console, outcome: RehearsalOutcome) -> None:
    table = Table(title=f"Campaign {outcome.campaign}: gates")
    for column in ("#", "gate", "critical", "status", "samples", "reason"):
        table.add_column(column)
    for gate in outcome.gates:
        table.add_row(str(gate["gate"]), gate["name"], "yes" if gate["critical"] else "no", gate["status"],
                      str(gate["samples"]), gate["reason"])
    console.print(table)
    console.print(f"Decision: [bold]{outcome.decision['decision']}[/bold]  (rule {outcome.decision['rule']})")
    console.print(f"Report: {outcome.report_path}")
    if outcome.failed_runs:
        console.print(f"[red]Runs that failed: {', '.join(outcome.failed_runs)}")
