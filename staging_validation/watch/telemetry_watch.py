"""A campaign's telemetry watch: one step over new telemetry and probe rows only (no Dagster import).

The runbook's monitor.sh re-greps the whole log every 5 minutes; here each step reads only the bytes
captured since the previous step, so its cost does not grow with the log. The alert rules
(`acceptance.alert_rules`) apply per 5-campaign-minute window of event time (`watch.windows`); the events of
windows that may still receive lines are kept in a small buffer between steps, so a window split
across two steps is judged whole. Each (rule, window) alerts once.

A step stores nothing: its caller stores the alerts (and the early stop they call for) as a batch to send,
then `commit`s the step. A step cut short before its commit is therefore judged again — an alert may be
raised twice, not lost (except a capture warning about lines lost to rotation: the capture's own cursor
has already moved past them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from staging_validation.acceptance.alert_rules import Alert
from staging_validation.acceptance.decision import early_stop
from staging_validation.acceptance.policy import Policy
from staging_validation.collection.recorded_steps import collection_by_hour, probe_steps_dir
from staging_validation.collection.validator_gaps import GAP_ALERT_RULE, find_gaps, gap_alert_message
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignState, EarlyStop
from staging_validation.schemas.events import EVENT_SCHEMA
from staging_validation.schemas.probe_records import RECORD_SCHEMA
from staging_validation.storage import atomic_write_bytes, local_path
from staging_validation.telemetry.capture import CaptureError
from staging_validation.telemetry.sources import CampaignTelemetry
from staging_validation.watch.cursor import WatchCursor, load_watch_cursor, save_watch_cursor
from staging_validation.watch.windows import alerts_by_window, epoch_ms, with_hour


@dataclasses.dataclass
class WatchStep:
    alerts: list[Alert]  # raised for the first time
    early_stop: EarlyStop | None  # the early stop a critical alert calls for
    cursor: WatchCursor  # where the next step starts, once committed
    open_windows: pa.Table  # events of the windows that may still receive lines


class TelemetryWatch:
    """One campaign's watch; its cursor and open-window buffers live in the campaign's monitor folder."""

    def __init__(self, data_root: str | Path, state: CampaignState, follower: CampaignTelemetry, policy: Policy):
        self.data_root = data_root
        self.state = state
        self.follower = follower
        self.policy = policy
        self.layout = CampaignLayout.of(data_root, state.campaign)
        self.folder = local_path(self.layout.monitor_dir)
        self.cursor_path = local_path(self.layout.monitor_cursor_file)

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

    def _new_events(self, cursor: WatchCursor) -> pa.Table:
        tables = [self.follower.read_new(cursor.raw_offsets).events]
        buffer_path = self.folder / cursor.open_windows
        if buffer_path.exists():
            tables.append(pq.read_table(buffer_path, schema=EVENT_SCHEMA))
        return pa.concat_tables(tables)

    def _new_records(self, cursor: WatchCursor) -> pd.DataFrame:
        """The probe steps recorded since the last step (each step file is written once)."""
        frames = []
        folder = probe_steps_dir(self.data_root, self.state.campaign)
        for path in sorted(folder.glob("*/*.parquet")):
            name = f"{path.parent.name}/{path.name}"
            if name in cursor.record_mtimes:
                continue
            cursor.record_mtimes[name] = path.stat().st_mtime
            frames.append(pq.read_table(path, schema=RECORD_SCHEMA).to_pandas())
        if not frames:
            return RECORD_SCHEMA.empty_table().to_pandas()
        return pd.concat(frames, ignore_index=True)

    def step(self) -> WatchStep:
        """Capture what is new, judge it: the alerts not raised before, and the early stop they call for."""
        cursor = load_watch_cursor(self.cursor_path, self.state.campaign)
        found: list[tuple[object, Alert]] = []  # (the window or problem it is keyed by, the alert)
        now_ms = int(time.time() * 1000)
        try:
            self.follower.poll()
        except CaptureError as exc:
            # Keep watching what was captured and the probes; say once per distinct problem that the
            # telemetry is out of sight.
            found.append((str(exc), Alert(now_ms, "warning", "monitor.telemetry_unavailable",
                                          f"The target's log cannot be read: {exc}", 1, [])))
        try:
            losses = self.follower.losses()
        except CaptureError as exc:
            losses = []
            found.append((str(exc), Alert(now_ms, "warning", "monitor.telemetry_unavailable",
                                          f"The capture's record of lost telemetry cannot be read: {exc}", 1, [])))
        # Lines lost to a rotation are gone for good: every loss is its own alert, whichever poll (this
        # one or an hour run's) found it.
        found += [(loss.key, Alert(loss.time_ms, "warning", "monitor.telemetry_lost",
                                   f"Telemetry was lost: {loss.message}", 1,
                                   [] if loss.after_hour is None else [{"after_hour": loss.after_hour}]))
                  for loss in losses]
        events_table = self._new_events(cursor)
        timing = self.state.timing
        events = with_hour(events_table.to_pandas(), timing)
        records = with_hour(self._new_records(cursor), timing)
        found += alerts_by_window(events, records, timing, self.policy)
        # The validator's own gaps, alerted once each as soon as they are known (not the target's faults).
        hours = collection_by_hour(self.data_root, self.state, now_ms / 1000)
        found += [(gap.key, Alert(now_ms, "warning", GAP_ALERT_RULE, gap_alert_message(gap), 1,
                                  [{"hour": gap.hour, "step": gap.step.value, "cause": gap.cause}]))
                  for gap in find_gaps(self.state, hours, now_ms / 1000)]
        raised = []
        for window, alert in found:
            key = f"{alert.rule}@{window}"
            if key not in cursor.alerted:
                cursor.alerted.append(key)
                raised.append(alert)
        stop = None
        if any(alert.severity == "critical" for alert in raised):
            stop = early_stop(records, events, self.policy)
        open_windows = self._open_windows(events_table, timing.scale(self.policy.monitor.window_seconds) * 1000)
        return WatchStep(raised, stop, cursor, open_windows)

    def commit(self, step: WatchStep) -> None:
        """Store where the next step starts: a new open-window buffer, then the cursor naming it (so a crash
        leaves the previous pair whole), then drop every other buffer."""
        buffer_name = f"open_windows-{time.time_ns()}.parquet"
        sink = io.BytesIO()
        pq.write_table(step.open_windows, sink)
        atomic_write_bytes(self.folder / buffer_name, sink.getvalue())
        cursor = dataclasses.replace(step.cursor, open_windows=buffer_name)
        save_watch_cursor(self.cursor_path, cursor)
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
            frame = frame[epoch_ms(frame) >= oldest_open_ms]
        return pa.Table.from_pandas(frame, schema=EVENT_SCHEMA, preserve_index=False)
