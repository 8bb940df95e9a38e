"""Against the real simulator: the captured raw hours, parsed, count exactly what the simulator wrote —
per kind, per hour, per origin, errors and unparsed lines — through noise and through rotations."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.telemetry.capture import LogFollower, TelemetrySource, raw_dir
from staging_validation.telemetry.parse import parse_log

POLL_INTERVAL_S = 0.05  # the follower's cadence, far shorter than the time between two rotations


def follow_until(simulator, follower, condition, timeout_s: float) -> None:
    """Poll the log like the campaign's sensor does until the simulator's stats satisfy `condition`."""
    deadline = time.monotonic() + timeout_s
    while not condition(simulator.stats()):
        assert time.monotonic() < deadline, f"not reached within {timeout_s} s: {simulator.stats()}"
        follower.poll()
        time.sleep(POLL_INTERVAL_S)  # polling cadence of a deadline wait


def parsed_store(store) -> dict:
    events, by_hour, by_origin, unparsed_by_hour = Counter(), {}, {"probe": Counter(), "organic": Counter()}, Counter()
    error_lines = lines_total = 0
    for path in sorted(raw_dir(store).glob("*.log")):
        hour = str(int(path.stem))
        parsed = parse_log(path)
        rows = parsed.events.select(["kind", "origin", "level"]).to_pylist()
        kinds = Counter(row["kind"] for row in rows)
        events.update(kinds)
        by_hour[hour] = dict(kinds)
        for row in rows:
            by_origin[row["origin"]][row["kind"]] += 1
        error_lines += sum(1 for row in rows if row["level"] is not None and row["level"] >= 50)
        if parsed.unparsed_lines:
            unparsed_by_hour[hour] = parsed.unparsed_lines
        lines_total += parsed.lines_total
    return {
        "events": dict(events),
        "events_by_hour": {hour: counts for hour, counts in by_hour.items() if counts},
        "events_by_origin": {origin: dict(counts) for origin, counts in by_origin.items()},
        "error_lines": error_lines,
        "unparsed_by_hour": dict(unparsed_by_hour),
        "lines_total": lines_total,
    }


@pytest.mark.parametrize(
    "profile, hour_seconds, enough",
    [
        ("noisy-logs", 2.0, lambda stats: stats["unparsed_lines"] >= 30 and "1" in stats["events_by_hour"]),
        ("log-rotation", 6.0, lambda stats: len(stats["rotations"]) >= 2),
    ],
)
def test_captured_events_equal_the_simulator_ground_truth(simulator_factory, tmp_path, profile, hour_seconds, enough):
    simulator = simulator_factory(
        profile=profile, hour_seconds=hour_seconds, organic_rps=40,
        campaign_start_ms=int(time.time() * 1000) - 500,
    )  # fmt: skip
    start = simulator.stats()
    timing = CampaignTiming(start_ms=start["campaign_start_ms"], hour_seconds=start["hour_seconds"])
    store = tmp_path / "capture"
    follower = LogFollower(TelemetrySource(path=str(simulator.log_path)), store, timing)
    follower.poll()
    assert simulator.stats()["rotations"] == [], "rotated before the first poll: the test cannot see it all"
    follow_until(simulator, follower, enough, timeout_s=40)
    truth = simulator.final_stats()  # stopped: the log is complete
    chunk = follower.poll()
    while not chunk.caught_up:
        chunk = follower.poll()
    if profile == "log-rotation":
        assert {rotation["mode"] for rotation in truth["rotations"]} == {"rename", "copytruncate"}
    captured = parsed_store(store)
    assert captured["lines_total"] == truth["lines_total"]
    assert captured["events"] == {kind: n for kind, n in truth["events"].items() if n}
    def nonzero(by_key: dict) -> dict:
        return {key: {kind: n for kind, n in counts.items() if n} for key, counts in by_key.items()}

    assert captured["events_by_hour"] == nonzero(truth["events_by_hour"])
    assert captured["events_by_origin"] == nonzero(truth["events_by_origin"])
    assert captured["error_lines"] == truth["error_lines"]
    assert captured["unparsed_by_hour"] == {h: n for h, n in truth["unparsed_by_hour"].items() if n}
    assert follower.load_cursor().lines_captured == truth["lines_total"]
