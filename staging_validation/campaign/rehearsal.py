"""A whole campaign against the built-in simulator, driven through the project's Dagster definitions.

The rehearsal plays the daemon's part in-process: it evaluates the same `campaign_clock` and
`campaign_monitor` sensors, executes the runs they request (the same jobs, assets and checks) in the
persistent instance, honours run keys, and records the monitor's observations, so the UI shows the
rehearsed campaign exactly like a live one.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import queue
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from staging_validation.campaign.jobs import start_campaign
from staging_validation.campaign.sensors import (
    TAG_HOUR,
    TAG_HOUR_LANE,
    TAG_PHASE,
    TAG_PROBE_LANE,
    campaign_clock,
    campaign_monitor,
)
from staging_validation.campaigns import (
    MAX_CAMPAIGN_HOURS,
    CampaignState,
    load_campaign_state,
    save_campaign_state,
)
from staging_validation.definitions import build_definitions
from staging_validation.simulator.process import RunningSimulator, start_simulator
from staging_validation.simulator.profiles import load_profile
from staging_validation.storage import campaign_dir, validate_campaign_id
from staging_validation.target.profile import ALTERNATE_PROFILE, DOCUMENTED_PROFILE, SPARSE_PROFILE

DIALECT_PROFILES = {"documented": DOCUMENTED_PROFILE, "alternate": ALTERNATE_PROFILE, "sparse": SPARSE_PROFILE}
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
# Run events stay in the instance (the UI shows them); the terminal shows the progress bars.
LANE_TAGS = (TAG_PROBE_LANE, TAG_HOUR_LANE)
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@dataclasses.dataclass
class RehearsalOutcome:
    campaign: str
    decision: dict
    gates: list[dict]
    report_path: Path
    failed_runs: list[str]


WORKER_START_DEADLINE_S = 120
PRE_CAMPAIGN_OFFSET_MS = 86_400_000


def _lane_worker(instance_ref, data_root: str, requests: multiprocessing.Queue, results: multiprocessing.Queue,
                 ready: multiprocessing.Queue) -> None:
    """A lane's worker process: executes the runs it is handed, one at a time, in the shared instance.

    Separate processes, as the daemon's run launcher uses: Dagster's in-process execution is not safe
    to run from two threads of one process (its logging setup deadlocks).
    """
    instance = dg.DagsterInstance.from_ref(instance_ref)
    defs = build_definitions(data_root)
    ready.put(True)
    while (work := requests.get()) is not None:
        result = defs.resolve_job_def(work["job_name"]).execute_in_process(
            instance=instance, partition_key=work["partition_key"], tags=work["tags"],
            run_config=QUIET_RUN_CONFIG, raise_on_error=False,
        )
        results.put((work["run_key"], result.success))


class _Lanes:
    """Executes requested runs like the queued coordinator with the lane limits of dagster.yaml: per lane
    one run at a time, in request order, each lane in its own worker process."""

    def __init__(self, instance: dg.DagsterInstance, data_root: Path):
        self.instance = instance
        self.data_root = data_root
        self.context = multiprocessing.get_context("spawn")
        self.results = self.context.Queue()
        self.ready = self.context.Queue()
        self.workers: dict[str, tuple[multiprocessing.Process, multiprocessing.Queue]] = {}
        self.in_flight: dict[str, dg.RunRequest] = {}

    def start_workers(self, campaign: str) -> None:
        """Starts the campaign's lane workers and waits until they can execute runs. Before the campaign
        starts: a worker takes seconds to import Dagster and load the definitions, which in a compressed
        rehearsal would be whole campaign hours without probes."""
        for tag in LANE_TAGS:
            requests = self.context.Queue()
            worker = self.context.Process(target=_lane_worker, daemon=True, args=(
                self.instance.get_ref(), str(self.data_root), requests, self.results, self.ready))
            worker.start()
            self.workers[f"{tag}={campaign}"] = (worker, requests)
        for _ in LANE_TAGS:
            try:
                self.ready.get(timeout=WORKER_START_DEADLINE_S)
            except queue.Empty:
                raise RuntimeError(f"the run workers did not start within {WORKER_START_DEADLINE_S} s") from None

    def submit(self, request: dg.RunRequest, sensor_name: str) -> None:
        if request.run_key in self.in_flight or self._launched_before(request.run_key):
            return
        lane = next(f"{tag}={request.tags[tag]}" for tag in LANE_TAGS if tag in request.tags)
        self.in_flight[request.run_key] = request
        self.workers[lane][1].put({
            "job_name": request.job_name, "partition_key": str(request.partition_key), "run_key": request.run_key,
            "tags": {**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: sensor_name},
        })

    def _launched_before(self, run_key: str) -> bool:
        return bool(self.instance.get_run_records(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))

    def finished(self) -> list[tuple[dg.RunRequest, bool]]:
        done = []
        while not self.results.empty():
            run_key, success = self.results.get()
            done.append((self.in_flight.pop(run_key), success))
        for lane, (worker, _) in self.workers.items():
            if not worker.is_alive():
                raise RuntimeError(f"the run worker of lane {lane} died with exit code {worker.exitcode}")
        return done

    @property
    def idle(self) -> bool:
        return not self.in_flight

    def __enter__(self) -> "_Lanes":
        return self

    def __exit__(self, *exc_info) -> None:
        for _, requests in self.workers.values():
            requests.put(None)
        for worker, _ in self.workers.values():
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()


def rehearse(
    instance: dg.DagsterInstance,
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
    dialect: str = "documented",
) -> RehearsalOutcome:
    """`policy`: an acceptance policy YAML instead of the shipped one. `first_verdict_only`: the campaign
    ends at its first verdict; an EXTEND is decided and notified, but its extension hours are not played.
    `dialect`: the simulator's HTTP and telemetry dialect, validated with its shipped target profile."""
    console = console or Console()
    campaign = validate_campaign_id(
        campaign or f"rehearsal-{profile}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    )
    load_profile(profile)  # an unknown profile is a one-line error before anything starts
    defs = build_definitions(str(data_root))
    with _Lanes(instance, Path(data_root)) as lanes:
        lanes.start_workers(campaign)
        # Hour 0 a day ahead until the campaign registers and sets the real start: the profile's fault
        # windows stay closed meanwhile instead of opening on the simulator's own clock.
        simulator = start_simulator(
            Path(data_root) / "simulator" / campaign, profile=profile, seed=seed, dialect=dialect,
            hour_seconds=hour_seconds, organic_rps=organic_rps,
            campaign_start_ms=int(time.time() * 1000) + PRE_CAMPAIGN_OFFSET_MS,
        )
        try:
            launch = defs.get_job_def(start_campaign.name).execute_in_process(
                instance=instance,
                run_config={**QUIET_RUN_CONFIG, "ops": {"register_campaign_op": {"config": {
                    "campaign": campaign, "base_url": simulator.base_url, "telemetry_path": str(simulator.log_path),
                    "hours": hours, "hour_seconds": hour_seconds, "stress_baseline_rps": stress_baseline_rps,
                    **({"notification": notification} if notification else {}),
                    **({"policy": str(policy)} if policy else {}),
                    **dialect_launch_config(simulator),
                }}}},
                raise_on_error=False,
            )
            if not launch.success:
                failure = next((e for e in launch.all_events if e.is_failure), None)
                raise RuntimeError(f"start_campaign failed: {failure.message if failure else 'see the run in the UI'}")
            state = load_campaign_state(data_root, campaign)
            simulator.set_campaign_start(state.timing.start_ms)
            failed = _drive(instance, defs, data_root, campaign, lanes, console, first_verdict_only)
        finally:
            simulator.stop()
    folder = campaign_dir(data_root, campaign)
    decision = json.loads((folder / "decision.json").read_text(encoding="utf-8"))
    return RehearsalOutcome(campaign, decision, decision.get("gates", []),
                            folder / "STAGING_ACCEPTANCE_REPORT.md", failed)


def dialect_launch_config(simulator: RunningSimulator) -> dict:
    """The target profile of the simulator's dialect and its further telemetry files, as launch config."""
    config: dict = {"target_profile": str(DIALECT_PROFILES[simulator.dialect])}
    if simulator.events_log_path is not None:
        config["telemetry_sources"] = [
            {"name": "governor", "path": str(simulator.events_log_path), "mapping": "governor"}]
    return config


def _drive(instance: dg.DagsterInstance, defs: dg.Definitions, data_root: Path, campaign: str, lanes: _Lanes,
           console: Console, first_verdict_only: bool) -> list[str]:
    """Tick the sensors and execute what they request until the campaign has its final decision."""
    cursors: dict[str, str | None] = {campaign_clock.name: None, campaign_monitor.name: None}
    failed: list[str] = []
    # The longest campaign there can be, plus slack for the verdicts: past it, something is stuck.
    hour_seconds = load_campaign_state(data_root, campaign).timing.hour_seconds
    deadline = time.time() + (MAX_CAMPAIGN_HOURS + 1) * hour_seconds + 600
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                         TimeElapsedColumn(), console=console, transient=False) as progress:
        # One bar per campaign hour (probes, then ingestion) and one per verdict.
        bars: dict[str, int] = {}

        def bar_for(request: dg.RunRequest) -> int:
            hour, phase = request.tags[TAG_HOUR], request.tags[TAG_PHASE]
            name = f"verdict {hour}" if phase == "verdict" else f"hour {hour}"
            if name not in bars:
                steps = 1 if phase == "verdict" or request.job_name == "campaign_hour" else 2
                bars[name] = progress.add_task(f"{name} {phase}", total=steps, status="queued")
            return bars[name]

        while True:
            state = load_campaign_state(data_root, campaign)
            for sensor in (campaign_clock, campaign_monitor):
                context = dg.build_sensor_context(instance=instance, cursor=cursors[sensor.name],
                                                  definitions=defs, instance_ref=instance.get_ref(),
                                                  resources=defs.resources)
                result = sensor.evaluate_tick(context)
                cursors[sensor.name] = result.cursor or cursors[sensor.name]
                for event in result.asset_events:
                    instance.report_runless_asset_event(event)
                for request in result.run_requests or []:
                    if first_verdict_only and _after_the_planned_hours(request, state):
                        continue  # an extension hour, requested while the first verdict is still running
                    lanes.submit(request, sensor.name)
                    progress.update(bar_for(request), status="running")
            for request, success in lanes.finished():
                progress.update(bar_for(request), advance=1, status="[green]done" if success else "[red]failed")
                if not success:
                    failed.append(request.run_key)
                if first_verdict_only and request.tags[TAG_PHASE] == "verdict":
                    if not success:  # there is no decision to end the campaign on
                        raise RuntimeError(f"the verdict run {request.run_key} failed; its events are in the instance")
                    _close_campaign(data_root, campaign)
            if state.status == "decided" and lanes.idle:
                return failed
            if time.time() > deadline:
                raise RuntimeError(f"campaign {campaign} reached no decision in time; its runs are in the instance")
            # Pace the loop at a fraction of the monitor window so alerts stay timely in compressed time.
            time.sleep(max(0.05, state.timing.scale(60)))


def _after_the_planned_hours(request: dg.RunRequest, state: CampaignState) -> bool:
    return request.tags[TAG_PHASE] != "verdict" and int(request.tags[TAG_HOUR]) >= state.planned_hours


def _close_campaign(data_root: Path, campaign: str) -> None:
    """Marks the campaign decided on the verdict just made, so the clock requests no extension hours."""
    state = load_campaign_state(data_root, campaign)
    if state.status != "decided":
        save_campaign_state(data_root, state.model_copy(update={"status": "decided"}))


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
