"""The background monitor's step over new telemetry only (no Dagster import).

The runbook's monitor.sh re-greps the whole log every 5 minutes; here each step reads only the bytes
captured since the previous step, so its cost does not grow with the log. The rules themselves
(`acceptance.monitor.monitor_alerts`) apply per 5-campaign-minute window of event time; the events of
windows that may still receive lines are kept in a small buffer between steps, so a window split
across two steps is judged whole. Each (rule, window) alerts once.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from staging_validation.acceptance.decision import early_stop
from staging_validation.acceptance.monitor import Alert, monitor_alerts
from staging_validation.acceptance.policy import Policy
from staging_validation.campaigns import (
    HOURLY_ASSET_PROBE_RECORDS,
    CampaignState,
    CampaignTiming,
    hourly_asset_dir,
)
from staging_validation.probes.records import RECORD_SCHEMA
from staging_validation.storage import atomic_write_bytes, atomic_write_text, campaign_dir
from staging_validation.telemetry.capture import CaptureError, LogFollower
from staging_validation.telemetry.events import EVENT_SCHEMA
from staging_validation.telemetry.mapping import TelemetryMapping
from staging_validation.telemetry.parse import parse_log

MONITOR_STATE_DIR = "monitor"


def _epoch_ms(frame: pd.DataFrame) -> pd.Series:
    return frame["time"].astype("datetime64[ms, UTC]").astype("int64")


def with_hour(frame: pd.DataFrame, timing: CampaignTiming) -> pd.DataFrame:
    """The frame with its campaign `hour` column, derived from each row's time."""
    hours = (_epoch_ms(frame) - timing.start_ms) // int(timing.hour_seconds * 1000) if len(frame) else []
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


class CampaignMonitor:
    """One campaign's monitor; its cursor and open-window buffer live in the campaign folder."""

    def __init__(self, data_root: str | Path, state: CampaignState, follower: LogFollower,
                 mapping: TelemetryMapping, policy: Policy):
        self.data_root = data_root
        self.state = state
        self.follower = follower
        self.mapping = mapping
        self.policy = policy
        self.folder = campaign_dir(data_root, state.campaign) / MONITOR_STATE_DIR
        self.cursor_path = self.folder / "cursor.json"
        self.buffer_path = self.folder / "open_windows.parquet"

    def _load_cursor(self) -> MonitorCursor:
        if not self.cursor_path.exists():
            return MonitorCursor()
        return MonitorCursor(**json.loads(self.cursor_path.read_text(encoding="utf-8")))

    def _new_events(self, cursor: MonitorCursor) -> pa.Table:
        tables = []
        for raw_file in sorted((self.follower.store_dir / "raw").glob("*.log")):
            start = cursor.raw_offsets.get(raw_file.name, 0)
            size = raw_file.stat().st_size
            if size <= start:
                continue
            with raw_file.open("rb") as handle:
                handle.seek(start)
                chunk = handle.read(size - start)
            cursor.raw_offsets[raw_file.name] = size
            tables.append(parse_log(chunk, self.mapping).events)
        if self.buffer_path.exists():
            tables.append(pq.read_table(self.buffer_path, schema=EVENT_SCHEMA))
        return pa.concat_tables(tables) if tables else EVENT_SCHEMA.empty_table()

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

    def step(self) -> tuple[list[Alert], dict | None]:
        """Capture what is new, judge it: the alerts not raised before, and the early stop they call for."""
        cursor = self._load_cursor()
        found = []
        try:
            self.follower.poll()
        except CaptureError as exc:
            # Keep watching what was captured and the probes; say once per distinct problem that the
            # telemetry is out of sight.
            found.append((str(exc), Alert(int(time.time() * 1000), "warning", "monitor.telemetry_unavailable",
                                          f"The target's log cannot be read: {exc}", 1, [])))
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
        self._keep_open_windows(events_table, timing.scale(self.policy.monitor.window_seconds) * 1000)
        atomic_write_text(self.cursor_path, json.dumps(dataclasses.asdict(cursor)))
        stop = None
        if any(alert.severity == "critical" for alert in raised):
            found = early_stop(records, events, self.policy)
            if found is not None:
                stop = json.loads(json.dumps(dataclasses.asdict(found), default=str))
        return raised, stop

    def _keep_open_windows(self, events: pa.Table, window_ms: float) -> None:
        """Keep the events of the current and previous window: late lines may still join them."""
        timing = self.state.timing
        current = int((time.time() * 1000 - timing.start_ms) // window_ms)
        oldest_open_ms = timing.start_ms + (current - 1) * window_ms
        frame = events.to_pandas()
        if len(frame):
            frame = frame[_epoch_ms(frame) >= oldest_open_ms]
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, schema=EVENT_SCHEMA, preserve_index=False), sink)
        atomic_write_bytes(self.buffer_path, sink.getvalue())
