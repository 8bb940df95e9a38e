"""The background monitor's step over new telemetry only (no Dagster import).

The runbook's monitor.sh re-greps the whole log every 5 minutes; here each step reads only the bytes
captured since the previous step, so its cost does not grow with the log. The rules themselves
(`acceptance.monitor.monitor_alerts`) apply per 5-campaign-minute window of event time; the events of
windows that may still receive lines are kept in a small buffer between steps, so a window split
across two steps is judged whole. Each (rule, window) alerts once.

A step stores nothing: its caller stores the alerts (and the early stop they call for) and sends them,
then `commit`s the step. A step cut short before its commit is therefore judged again — an alert may be
raised twice, not lost (except a capture warning about lines lost to rotation: the capture's own cursor
has already moved past them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from staging_validation.acceptance.decision import early_stop
from staging_validation.acceptance.monitor import Alert, monitor_alerts
from staging_validation.acceptance.policy import Policy
from staging_validation.campaigns import HOURLY_ASSET_PROBE_RECORDS, CampaignState, hourly_asset_dir
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.schemas.probe_records import RECORD_SCHEMA
from staging_validation.storage import atomic_write_bytes, atomic_write_text, campaign_dir
from staging_validation.telemetry.capture import CaptureError
from staging_validation.schemas.events import EVENT_SCHEMA
from staging_validation.telemetry.sources import CampaignTelemetry

MONITOR_STATE_DIR = "monitor"


def _epoch_ms(frame: pd.DataFrame) -> pd.Series:
    return frame["time"].astype("datetime64[ms, UTC]").astype("int64")


def with_hour(frame: pd.DataFrame, timing: CampaignTiming) -> pd.DataFrame:
    """The frame with its campaign `hour` column, derived from each row's time."""
    hours = timing.hour_of_ms(_epoch_ms(frame)) if len(frame) else []
    return frame.assign(hour=pd.Series(hours, index=frame.index, dtype="int64"))


def alerts_by_window(
    events: pd.DataFrame, records: pd.DataFrame, timing: CampaignTiming, policy: Policy
) -> list[tuple[int, Alert]]:
    """The monitor rules applied to every 5-minute window present in the data."""
    window_ms = timing.scale(policy.monitor.window_seconds) * 1000
    event_windows = (_epoch_ms(events) - timing.start_ms) // window_ms if len(events) else pd.Series(dtype="int64")
    record_windows = (_epoch_ms(records) - timing.start_ms) // window_ms if len(records) else pd.Series(dtype="int64")
    found = []
    for window in sorted(set(event_windows.tolist()) | set(record_windows.tolist())):
        window_events = events[event_windows == window] if len(events) else events
        window_records = records[record_windows == window] if len(records) else records
        for alert in monitor_alerts(window_events, window_records, policy):
            found.append((int(window), alert))
    return found


@dataclasses.dataclass
class MonitorCursor:
    raw_offsets: dict[str, int] = dataclasses.field(default_factory=dict)  # raw hour file -> bytes read
    record_mtimes: dict[str, float] = dataclasses.field(default_factory=dict)  # probe partition -> mtime seen
    alerted: list[str] = dataclasses.field(default_factory=list)  # "<rule>@<window>" already raised
    # The open-window buffer that goes with these offsets: each commit writes a new one, then the cursor.
    open_windows: str = "open_windows.parquet"


@dataclasses.dataclass
class MonitorStep:
    alerts: list[Alert]  # raised for the first time
    early_stop: dict | None  # the early stop a critical alert calls for (acceptance.decision.EarlyStop)
    cursor: MonitorCursor  # where the next step starts, once committed
    open_windows: pa.Table  # events of the windows that may still receive lines


class CampaignMonitor:
    """One campaign's monitor; its cursor and open-window buffers live in the campaign folder."""

    def __init__(self, data_root: str | Path, state: CampaignState, follower: CampaignTelemetry, policy: Policy):
        self.data_root = data_root
        self.state = state
        self.follower = follower
        self.policy = policy
        self.folder = campaign_dir(data_root, state.campaign) / MONITOR_STATE_DIR
        self.cursor_path = self.folder / "cursor.json"

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Whether this caller has the campaign's monitor to itself until the block ends: False while an
        earlier step is still storing or sending (a sensor evaluation goes on after its tick timed out)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "step.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load_cursor(self) -> MonitorCursor:
        if not self.cursor_path.exists():
            return MonitorCursor()
        return MonitorCursor(**json.loads(self.cursor_path.read_text(encoding="utf-8")))

    def _new_events(self, cursor: MonitorCursor) -> pa.Table:
        tables = [self.follower.read_new(cursor.raw_offsets).events]
        buffer_path = self.folder / cursor.open_windows
        if buffer_path.exists():
            tables.append(pq.read_table(buffer_path, schema=EVENT_SCHEMA))
        return pa.concat_tables(tables)

    def _new_records(self, cursor: MonitorCursor) -> pd.DataFrame:
        frames = []
        folder = hourly_asset_dir(self.data_root, self.state.campaign, HOURLY_ASSET_PROBE_RECORDS)
        for path in sorted(folder.glob("*.parquet")):
            mtime = path.stat().st_mtime
            if cursor.record_mtimes.get(path.name) == mtime:
                continue
            cursor.record_mtimes[path.name] = mtime
            frames.append(pq.read_table(path, schema=RECORD_SCHEMA).to_pandas())
        if not frames:
            return RECORD_SCHEMA.empty_table().to_pandas()
        return pd.concat(frames, ignore_index=True)

    def step(self) -> MonitorStep:
        """Capture what is new, judge it: the alerts not raised before, and the early stop they call for."""
        cursor = self._load_cursor()
        found = []
        now_ms = int(time.time() * 1000)
        try:
            chunk = self.follower.poll()
        except CaptureError as exc:
            # Keep watching what was captured and the probes; say once per distinct problem that the
            # telemetry is out of sight.
            found.append((str(exc), Alert(now_ms, "warning", "monitor.telemetry_unavailable",
                                          f"The target's log cannot be read: {exc}", 1, [])))
        else:
            # Lines lost to a rotation are gone for good: every loss is its own alert.
            found += [(f"{now_ms}:{warning}", Alert(now_ms, "warning", "monitor.telemetry_lost",
                                                    f"Telemetry was lost: {warning}", 1, []))
                      for warning in chunk.warnings]
        events_table = self._new_events(cursor)
        timing = self.state.timing
        events = with_hour(events_table.to_pandas(), timing)
        records = with_hour(self._new_records(cursor), timing)
        found += alerts_by_window(events, records, timing, self.policy)
        raised = []
        for window, alert in found:
            key = f"{alert.rule}@{window}"
            if key not in cursor.alerted:
                cursor.alerted.append(key)
                raised.append(alert)
        stop = None
        if any(alert.severity == "critical" for alert in raised):
            critical = early_stop(records, events, self.policy)
            if critical is not None:
                stop = json.loads(json.dumps(dataclasses.asdict(critical), default=str))
        open_windows = self._open_windows(events_table, timing.scale(self.policy.monitor.window_seconds) * 1000)
        return MonitorStep(raised, stop, cursor, open_windows)

    def commit(self, step: MonitorStep) -> None:
        """Store where the next step starts: a new open-window buffer, then the cursor naming it (so a crash
        leaves the previous pair whole), then drop every other buffer."""
        buffer_name = f"open_windows-{time.time_ns()}.parquet"
        sink = io.BytesIO()
        pq.write_table(step.open_windows, sink)
        atomic_write_bytes(self.folder / buffer_name, sink.getvalue())
        cursor = dataclasses.replace(step.cursor, open_windows=buffer_name)
        atomic_write_text(self.cursor_path, json.dumps(dataclasses.asdict(cursor)))
        for stale in self.folder.glob("open_windows*.parquet"):
            if stale.name != buffer_name:
                stale.unlink(missing_ok=True)

    def _open_windows(self, events: pa.Table, window_ms: float) -> pa.Table:
        """The events of the current and previous window: late lines may still join them."""
        timing = self.state.timing
        current = int((time.time() * 1000 - timing.start_ms) // window_ms)
        oldest_open_ms = timing.start_ms + (current - 1) * window_ms
        frame = events.to_pandas()
        if len(frame):
            frame = frame[_epoch_ms(frame) >= oldest_open_ms]
        return pa.Table.from_pandas(frame, schema=EVENT_SCHEMA, preserve_index=False)
