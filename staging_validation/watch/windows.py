"""The alert rules applied per monitor window of campaign time, and the campaign hour of a row's time."""

from __future__ import annotations

import pandas as pd

from staging_validation.acceptance.alert_rules import Alert, window_alerts
from staging_validation.acceptance.policy import Policy
from staging_validation.schemas.timing import CampaignTiming


def epoch_ms(frame: pd.DataFrame) -> pd.Series:
    return frame["time"].astype("datetime64[ms, UTC]").astype("int64")


def with_hour(frame: pd.DataFrame, timing: CampaignTiming) -> pd.DataFrame:
    """The frame with its campaign `hour` column, derived from each row's time."""
    hours = timing.hour_of_ms(epoch_ms(frame)) if len(frame) else []
    return frame.assign(hour=pd.Series(hours, index=frame.index, dtype="int64"))


def alerts_by_window(
    events: pd.DataFrame, records: pd.DataFrame, timing: CampaignTiming, policy: Policy
) -> list[tuple[int, Alert]]:
    """The alert rules applied to every monitor window (5 campaign-minutes by default) present in the data."""
    window_ms = timing.scale(policy.monitor.window_seconds) * 1000
    event_windows = (epoch_ms(events) - timing.start_ms) // window_ms if len(events) else pd.Series(dtype="int64")
    record_windows = (epoch_ms(records) - timing.start_ms) // window_ms if len(records) else pd.Series(dtype="int64")
    found = []
    for window in sorted(set(event_windows.tolist()) | set(record_windows.tolist())):
        window_events = events[event_windows == window] if len(events) else events
        window_records = records[record_windows == window] if len(records) else records
        for alert in window_alerts(window_events, window_records, policy):
            found.append((int(window), alert))
    return found
