"""A whole campaign against the built-in simulator, driven through the project's Dagster definitions.

The rehearsal plays the daemon's part in-process: it evaluates the same `campaign_clock` and
`campaign_monitor` sensors, executes the runs they request (the same jobs, assets and checks) in the
persistent instance, honours run keys, and records the monitor's observations, so the UI shows the
rehearsed campaign exactly like a live one.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from staging_validation.campaign.jobs import start_campaign
from staging_validation.campaign.sensors import campaign_clock, campaign_monitor
from staging_validation.campaigns import load_campaign_state
from staging_validation.definitions import build_definitions
from staging_validation.simulator.process import start_simulator
from staging_validation.storage import campaign_dir, validate_campaign_id

EXIT_CODES = {"ACCEPT": 0, "EXTEND": 3, "REJECT": 4}
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
# Run events stay in the instance (the UI shows them); the terminal shows the progress bars.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@dataclasses.dataclass
class RehearsalOutcome:
    campaign: str
    decision: dict
    gates: list[dict]
    report_path: Path
    failed_runs: list[str]


class _RunLane:
    """Executes requested runs one at a time in a worker thread, like the per-campaign hour lane."""

    def __init__(self, instance: dg.DagsterInstance, defs: dg.Definitions):
        self.instance = instance
        self.defs = defs
        self.queue: list[tuple[dg.RunRequest, str]] = []
        self.current: threading.Thread | None = None
        self.finished: list[tuple[dg.RunRequest, bool]] = []

    def already_launched(self, run_key: str) -> bool:
        return bool(self.instance.get_run_records(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))

    def submit(self, request: dg.RunRequest, sensor_name: str) -> None:
        if not self.already_launched(request.run_key) and all(q.run_key != request.run_key for q, _ in self.queue):
            self.queue.append((request, sensor_name))

    def _execute(self, request: dg.RunRequest, sensor_name: str) -> None:
        job = self.defs.resolve_job_def(request.job_name)
        result = job.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags={**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: sensor_name},
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
        )
        self.finished.append((request, result.success))

    def pump(self) -> None:
        if self.current is not None and not self.current.is_alive():
            self.current = None
        if self.current is None and self.queue:
            request, sensor_name = self.queue.pop(0)
            self.current = threading.Thread(target=self._execute, args=(request, sensor_name), daemon=True)
            self.current.start()

    @property
    def idle(self) -> bool:
        return self.current is None and not self.queue


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
) -> RehearsalOutcome:
    console = console or Console()
    campaign = validate_campaign_id(
        campaign or f"rehearsal-{profile}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    )
    defs = build_definitions(str(data_root))
    simulator = start_simulator(
        Path(data_root) / "simulator" / campaign, profile=profile, seed=seed,
        hour_seconds=hour_seconds, organic_rps=organic_rps,
    )
    try:
        launch = defs.get_job_def(start_campaign.name).execute_in_process(
            instance=instance,
            run_config={**QUIET_RUN_CONFIG, "ops": {"register_campaign_op": {"config": {
                "campaign": campaign, "base_url": simulator.base_url, "telemetry_path": str(simulator.log_path),
                "hours": hours, "hour_seconds": hour_seconds, "stress_baseline_rps": stress_baseline_rps,
                **({"notification": notification} if notification else {}),
            }}}},
            raise_on_error=False,
        )
        if not launch.success:
            failure = next((e for e in launch.all_events if e.is_failure), None)
            raise RuntimeError(f"start_campaign failed: {failure.message if failure else 'see the run in the UI'}")
        state = load_campaign_state(data_root, campaign)
        simulator.set_campaign_start(state.timing.start_ms)
        failed = _drive(instance, defs, data_root, campaign, console)
    finally:
        simulator.stop()
    folder = campaign_dir(data_root, campaign)
    decision = json.loads((folder / "decision.json").read_text(encoding="utf-8"))
    return RehearsalOutcome(campaign, decision, decision.get("gates", []),
                            folder / "STAGING_ACCEPTANCE_REPORT.md", failed)


def _drive(instance: dg.DagsterInstance, defs: dg.Definitions, data_root: Path, campaign: str,
           console: Console) -> list[str]:
    """Tick the sensors and execute what they request until the campaign has its final decision."""
    lane = _RunLane(instance, defs)
    cursors: dict[str, str | None] = {campaign_clock.name: None, campaign_monitor.name: None}
    failed: list[str] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        hour_tasks: dict[str, int] = {}
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
                    lane.submit(request, sensor.name)
                    label = request.tags.get("staging-validation/hour", "")
                    phase = request.tags.get("staging-validation/phase", "")
                    hour_tasks.setdefault(request.run_key, progress.add_task(
                        f"{'verdict' if phase == 'verdict' else 'hour ' + label} {phase}", total=1, status="queued"))
            lane.pump()
            for request, success in lane.finished:
                progress.update(hour_tasks[request.run_key], completed=1,
                                status="[green]done" if success else "[red]failed")
                if not success:
                    failed.append(request.run_key)
            lane.finished.clear()
            if state.status == "decided" and lane.idle:
                return failed
            # Pace the loop at a fraction of the monitor window so alerts stay timely in compressed time.
            time.sleep(max(0.05, state.timing.scale(60)))


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
