"""An ended hour's telemetry: drain the target's log until the capture holds the whole hour, then parse
exactly the lines whose time falls inside it (no Dagster import)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from staging_validation.campaign_target import log_follower
from staging_validation.lifecycle import CampaignState
from staging_validation.telemetry.capture import CaptureError
from staging_validation.telemetry.parse import ParsedTelemetry
from staging_validation.telemetry.sources import CampaignTelemetry

CAPTURE_POLL_S = 1.0  # how often an hour run drains the target's log while it waits for the hour's end


def capture_until_hour_end(
    follower: CampaignTelemetry, state: CampaignState, hour: int, should_stop: Callable[[], bool]
) -> list[str]:
    """Drain the target's log until the hour (plus a short grace for buffered writes) is over and the
    capture has caught up with the log, however large the backlog.

    Returns the capture's problems, each once: a log that cannot be read (reported, not raised: the hour
    is then built from what was already captured, which is all a re-run after the target's log is gone
    can have) and lines the capture says are lost (a rotation whose rest could not be found).
    """
    grace_s = min(2.0, state.timing.hour_seconds * 0.05)
    deadline = state.timing.hour_start_s(hour + 1) + grace_s
    problems: list[str] = []
    while True:
        try:
            chunk = follower.poll()
        except CaptureError as exc:
            found, backlog = [str(exc)], False
        else:
            found, backlog = chunk.warnings, not chunk.caught_up
        problems += [problem for problem in found if problem not in problems]
        if backlog:
            continue  # one poll's byte budget ran out: read on at once, past the deadline if need be
        remaining = deadline - time.time()
        if remaining <= 0 or should_stop():
            return problems
        time.sleep(min(CAPTURE_POLL_S, remaining))


def hour_telemetry(data_root: str | Path, state: CampaignState, hour: int) -> ParsedTelemetry:
    """The hour's captured lines of every source, parsed and merged by time."""
    return log_follower(data_root, state).parse_hour(hour)
