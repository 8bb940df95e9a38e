"""Fault matrix, telemetry (issue 10 item 4): hostile log lines are counted and kept as unparsed — filed
under the hour of the previous line, like untimed lines — and never crash or wedge the capture or the
parser, nor create a stray raw file. Each case goes through the campaign's own capture and hourly parse
(`campaign_target.log_follower` / `hour_capture.hour_telemetry`) and the monitor's step, as a campaign runs them."""

from __future__ import annotations

import json

import pytest

from staging_validation.acceptance.policy import load_policy
from staging_validation.campaign_target import log_follower, telemetry_store
from staging_validation.hour_capture import hour_telemetry
from staging_validation.lifecycle import CampaignState
from staging_validation.schemas.telemetry_mapping import TelemetryMapping
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.telemetry.capture import (
    TRUNCATION_MARK,
    LogFollower,
    TelemetrySource,
    raw_dir,
)
from staging_validation.telemetry.parse import parse_log
from staging_validation.watch.telemetry_watch import TelemetryWatch

START_MS = 1_795_392_000_000
HOUR_MS = 3_600_000
TIMING = CampaignTiming(start_ms=START_MS, hour_seconds=3600)


def pino(msg: str, time_ms: object, level: object = 30, **fields) -> bytes:
    return json.dumps({"level": level, "time": time_ms, "msg": msg, **fields}).encode() + b"\n"


def campaign(tmp_path, log_bytes: bytes, telemetry: object = None) -> CampaignState:
    log = tmp_path / "staging.log"
    log.write_bytes(log_bytes)
    return CampaignState(campaign="hostile", created_at_ms=START_MS, timing=TIMING,
                         settings={"telemetry": telemetry or {"path": str(log)}})


def raw_files(tmp_path, state) -> list[str]:
    return sorted(path.name for path in raw_dir(telemetry_store(tmp_path / "data", state)).iterdir())


HOSTILE_TIMES = {
    "1e308": b'{"level":30,"time":1e308,"msg":"x"}\n',
    "far future (year 5138)": pino("x", 99_999_999_999_999),
    "after the last possible hour": pino("x", START_MS + 96 * HOUR_MS),
    "infinite string": pino("x", "inf"),
    "NaN string": pino("x", "NaN"),
    "negative": pino("x", -5),
    "not a time": pino("x", "yesterday"),
    "boolean": pino("x", True),
    "an object": pino("x", {"at": 1}),
    "null": pino("x", None),
    "long before the start": pino("x", START_MS - 86_400_000),
}


@pytest.mark.parametrize("case", HOSTILE_TIMES, ids=list(HOSTILE_TIMES))
def test_a_line_with_a_hostile_time_is_unparsed_under_the_previous_lines_hour(tmp_path, case):
    before = pino("request completed", START_MS + 2 * HOUR_MS + 1)
    after = pino("request completed", START_MS + 3 * HOUR_MS + 1)
    state = campaign(tmp_path, before + HOSTILE_TIMES[case] + after)
    follower = log_follower(tmp_path / "data", state)
    assert follower.poll().hours == {2, 3}
    assert follower.poll().lines == 0  # nothing wedged: the next poll works and finds nothing new
    assert raw_files(tmp_path, state) == ["02.log", "03.log"]  # no stray hour file
    hour = hour_telemetry(tmp_path / "data", state, 2)
    assert (hour.lines_total, hour.events.num_rows, hour.unparsed_lines) == (2, 1, 1)
    assert sum(hour.rejected.values()) == 1 and set(hour.rejected) <= {"bad_time", "out_of_window"}
    assert hour.readable_lines == 2  # a JSON record: readable, only not an event
    assert hour_telemetry(tmp_path / "data", state, 3).events.num_rows == 1


def test_a_line_shortly_before_the_start_is_an_event_of_hour_0(tmp_path):
    skewed = pino("request completed", START_MS - 60_000)  # within the mapping's 300 s allowance
    state = campaign(tmp_path, skewed)
    log_follower(tmp_path / "data", state).poll()
    assert hour_telemetry(tmp_path / "data", state, 0).events.num_rows == 1


def test_the_monitor_keeps_watching_through_hostile_times(tmp_path):
    errors = b"".join(pino("Unhandled error in chat handler", START_MS + n, level=50) for n in range(11))
    state = campaign(tmp_path, HOSTILE_TIMES["1e308"] + HOSTILE_TIMES["far future (year 5138)"] + errors)
    monitor = TelemetryWatch(tmp_path / "data", state, log_follower(tmp_path / "data", state), load_policy())
    # The campaign's clock has run with no collector: its hours' probe steps are also alerted, as gaps.
    (alert,) = [a for a in monitor.step().alerts if a.rule != "monitor.validator_gap"]
    assert (alert.rule, alert.count) == ("monitor.errors", 11)


def test_an_oversize_line_is_kept_truncated_counted_and_the_next_line_is_whole(tmp_path):
    mapping = TelemetryMapping(max_line_bytes=4096)
    huge = pino("request completed", START_MS + 5, blob="a" * 300_000)
    log = tmp_path / "staging.log"
    log.write_bytes(pino("first", START_MS + 1) + huge + pino("request completed", START_MS + 9))
    store = tmp_path / "capture"
    # A poll budget below the line's length: the line spans polls, as a line over 64 MiB does by default.
    follower = LogFollower(TelemetrySource(path=str(log)), store, TIMING, mapping=mapping, max_poll_bytes=65_536)
    while not follower.poll().caught_up:
        pass
    lines = (raw_dir(store) / "00.log").read_bytes().splitlines()
    assert len(lines) == 3
    assert lines[1] == huge[:4096] + TRUNCATION_MARK
    assert json.loads(lines[2])["time"] == START_MS + 9
    assert follower.load_cursor().oversize_lines == 1
    assert follower.load_cursor().offset == log.stat().st_size
    parsed = parse_log(raw_dir(store) / "00.log", mapping)
    assert parsed.rejected == {"oversize": 1}
    assert parsed.events.column("msg").to_pylist() == ["first", "request completed"]
    assert parsed.readable_lines == 2


def test_an_oversize_line_given_to_the_parser_directly_is_counted_not_read(tmp_path):
    mapping = TelemetryMapping(max_line_bytes=4096)
    data = pino("boom", START_MS, level=50, blob="a" * 10_000) + pino("ok", START_MS)
    parsed = parse_log(data, mapping)
    assert (parsed.rejected, parsed.events.column("msg").to_pylist()) == ({"oversize": 1}, ["ok"])


def test_a_level_50_line_with_invalid_utf8_still_counts_as_an_error(tmp_path):
    bad = b'{"level":50,"time":%d,"msg":"Unhandled error \xff\xfe in chat handler"}\n' % (START_MS + 1)
    state = campaign(tmp_path, bad + pino("request completed", START_MS + 2))
    log_follower(tmp_path / "data", state).poll()
    assert (raw_dir(telemetry_store(tmp_path / "data", state)) / "00.log").read_bytes().startswith(bad)  # kept as is
    hour = hour_telemetry(tmp_path / "data", state, 0)
    assert hour.invalid_utf8_lines == 1
    rows = hour.events.select(["kind", "level"]).to_pylist()
    assert rows == [{"kind": "error", "level": 50}, {"kind": "request_completed", "level": 30}]
    assert "\ufffd" in hour.events.column("raw")[0].as_py()


def test_deep_nesting_neither_crashes_the_capture_nor_the_parser(tmp_path):
    # The time key twice makes the capture parse the line with json (which recurses), not its fast path.
    deep = (b'{"level":30,"time":%d,"msg":"deep","time":%d,"a":' % (START_MS + 1, START_MS + 1)
            + b"[" * 200_000 + b"]" * 200_000 + b"}\n")
    state = campaign(tmp_path, pino("first", START_MS + HOUR_MS) + deep)
    assert log_follower(tmp_path / "data", state).poll().hours == {1}  # untimed for the capture: previous hour
    hour = hour_telemetry(tmp_path / "data", state, 1)
    assert (hour.lines_total, hour.events.num_rows) == (2, 2)  # DuckDB reads it, nesting and all
