"""LogFollower: every line of the log captured exactly once through appends, partial lines, rotation,
truncation, restarts, crashes and concurrent pollers — asserted on exact line content."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from staging_validation.campaign_target import log_follower, telemetry_store
from staging_validation.config_files import ConfigError, validate_model
from staging_validation.hour_capture import capture_until_hour_end
from staging_validation.lifecycle import CampaignState
from staging_validation.schemas.telemetry_mapping import (
    EventFieldPaths,
    TelemetryMapping,
)
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.target.profile import DOCUMENTED_PROFILE
from staging_validation.telemetry.capture import (
    CaptureError,
    LogFollower,
    TelemetrySource,
    raw_dir,
    raw_hour_path,
)

START_MS = 1_795_392_000_000
HOUR_MS = 3_600_000
TIMING = CampaignTiming(start_ms=START_MS, hour_seconds=3600)


class Log:
    """Writes numbered pino lines into a file, remembering every complete line written."""

    def __init__(self, path):
        self.path = path
        self.written: list[str] = []
        self.count = 0

    def line(self, hour: int = 0) -> str:
        self.count += 1
        time_ms = START_MS + hour * HOUR_MS + self.count
        return json.dumps({"level": 30, "time": time_ms, "msg": "request completed", "n": self.count})

    def append(self, n: int, hour: int = 0, path=None) -> None:
        lines = [self.line(hour) for _ in range(n)]
        with open(path or self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
        self.written += lines

    def append_text(self, text: str, path=None) -> None:
        with open(path or self.path, "a", encoding="utf-8") as handle:
            handle.write(text)


def captured_lines(store) -> list[str]:
    lines = []
    for path in sorted(raw_dir(store).glob("*.log")):
        lines += path.read_text(encoding="utf-8").splitlines()
    return lines


@pytest.fixture
def log(tmp_path):
    return Log(tmp_path / "staging.log")


@pytest.fixture
def store(tmp_path):
    return tmp_path / "capture"


def mapping_with_time(path: str) -> TelemetryMapping:
    return TelemetryMapping(fields=EventFieldPaths(time=path))


def follower(log, store, **options) -> LogFollower:
    return LogFollower(TelemetrySource(path=str(log.path)), store, TIMING, **options)


def test_appends_and_a_partial_last_line_are_captured_once(log, store):
    log.append(3)
    partial = log.line()
    log.append_text(partial[:10])
    chunk = follower(log, store).poll()
    assert chunk.lines == 3
    assert chunk.data.decode().splitlines() == log.written
    log.append_text(partial[10:] + "\n")
    log.written.append(partial)
    log.append(2)
    chunk = follower(log, store).poll()
    assert chunk.lines == 3
    assert follower(log, store).poll().lines == 0
    assert captured_lines(store) == log.written


def test_lines_go_to_the_raw_file_of_their_hour_and_untimed_lines_follow_the_previous_line(log, store):
    log.append(2, hour=0)
    log.append(1, hour=1)
    log.append_text("Error: boom\n    at handler (chat.js:10:5)\n")
    log.append(1, hour=3)
    chunk = follower(log, store).poll()
    assert chunk.hours == {0, 1, 3}
    assert chunk.lines == 6
    assert len(raw_hour_path(store, 0).read_text().splitlines()) == 2
    assert raw_hour_path(store, 1).read_text().splitlines()[1:] == ["Error: boom", "    at handler (chat.js:10:5)"]
    assert raw_hour_path(store, 3).read_text().splitlines() == log.written[-1:]


def test_rename_rotation_drains_the_old_file_before_the_new_one(log, store):
    log.append(5)
    follower(log, store).poll()
    log.append(4)  # written after the poll, before the rotation
    os.replace(log.path, str(log.path) + ".1")
    log.append(3)  # the new file
    chunk = follower(log, store).poll()
    assert chunk.lines == 7
    assert chunk.warnings == []
    log.append(2)
    assert follower(log, store).poll().lines == 2
    assert captured_lines(store) == log.written


def test_copytruncate_drains_the_copy_then_reads_the_truncated_file_from_its_start(log, store):
    log.append(5)
    follower(log, store).poll()
    log.append(4)
    shutil.copyfile(log.path, str(log.path) + ".1")
    os.truncate(log.path, 0)
    log.append(1)
    chunk = follower(log, store).poll()
    assert chunk.lines == 5
    assert chunk.warnings == []
    assert captured_lines(store) == log.written


def test_copytruncate_detected_by_the_head_even_when_the_new_content_is_longer(log, store):
    log.append(2)
    follower(log, store).poll()
    shutil.copyfile(log.path, str(log.path) + ".1")
    os.truncate(log.path, 0)
    log.append(10)  # already past the old offset: only the head tells it is a different content
    assert follower(log, store).poll().lines == 10
    assert captured_lines(store) == log.written


def test_truncation_without_a_copy_reads_from_the_start_and_says_what_was_lost(log, store):
    log.append(5)
    follower(log, store).poll()
    log.append_text("")
    os.truncate(log.path, 0)
    log.append(2)
    chunk = follower(log, store).poll()
    assert chunk.lines == 2
    assert len(chunk.warnings) == 1 and "lost" in chunk.warnings[0]
    assert captured_lines(store) == log.written


def test_copytruncate_then_rename_between_two_polls_reads_the_rewritten_file_and_records_the_loss(log, store):
    # The log-rotation profile's alternation: the copy (holding the unread rest) is overwritten by the
    # rename of the same inode, rewritten since; only its first bytes tell it is not what was read.
    log.append(5)
    follower(log, store).poll()
    log.append(3)  # unread, then lost with the overwritten copy
    lost = log.written[-3:]
    shutil.copyfile(log.path, str(log.path) + ".1")
    os.truncate(log.path, 0)
    log.append(8)  # longer than the old offset
    os.replace(log.path, str(log.path) + ".1")
    log.append(2)
    chunk = follower(log, store).poll()
    assert chunk.lines == 10
    assert len(chunk.warnings) == 1 and "lost" in chunk.warnings[0]
    assert captured_lines(store) == [line for line in log.written if line not in lost]
    (loss,) = follower(log, store).losses()
    assert loss.message == chunk.warnings[0] and loss.after_hour == 0


def test_a_rename_seen_before_the_log_is_recreated_still_tells_a_second_rotation(log, store):
    log.append(5)
    follower(log, store).poll()
    log.append(2)
    os.replace(log.path, str(log.path) + ".1")  # the writer has not reopened the log yet
    assert follower(log, store).poll().lines == 2
    log.append(3)  # the next file, rotated away before any poll saw it
    os.replace(log.path, str(log.path) + ".1")
    log.append(1)
    chunk = follower(log, store).poll()
    assert len(chunk.warnings) == 1 and "lost" in chunk.warnings[0]
    assert [loss.message for loss in follower(log, store).losses()] == chunk.warnings
    log.append(1)
    assert follower(log, store).poll().warnings == []


def test_losses_are_recorded_once_for_whichever_caller_polled(log, store):
    log.append(5)
    follower(log, store).poll()
    before_the_loss = (store / "cursor.json").read_text()
    os.truncate(log.path, 0)  # truncated without a copy
    log.append(2)
    problems = capture_until_hour_end(follower(log, store), past_hour_state(), 0, should_stop=lambda: False)
    assert len(problems) == 1
    # A crash after the loss was stored and before the cursor moved on: found again, it is the same loss.
    (store / "cursor.json").write_text(before_the_loss)
    assert follower(log, store).poll().warnings == problems
    assert [loss.message for loss in follower(log, store).losses()] == problems
    os.truncate(log.path, 0)
    log.append(1)
    follower(log, store).poll()
    assert len(follower(log, store).losses()) == 2


def test_a_corrupt_record_of_losses_is_an_error_naming_the_file(log, store):
    log.append(1)
    follower(log, store).poll()
    (store / "losses.jsonl").write_text("not json\n")
    with pytest.raises(CaptureError, match=r"losses\.jsonl: line 1 is not a recorded loss"):
        follower(log, store).losses()


def test_a_restarted_validator_resumes_from_the_cursor(log, store):
    log.append(3)
    first = follower(log, store)
    first.poll()
    log.append(2)
    resumed = follower(log, store)  # a new process: nothing but the store
    assert resumed.poll().data.decode().splitlines() == log.written[3:]
    assert resumed.load_cursor().lines_captured == 5


def test_a_crash_between_appending_and_the_cursor_write_captures_the_lines_exactly_once(log, store):
    log.append(3)
    follower(log, store).poll()
    committed_cursor = (store / "cursor.json").read_bytes()
    log.append(4, hour=0)
    log.append(2, hour=1)
    follower(log, store).poll()  # appended to the raw files and committed ...
    (store / "cursor.json").write_bytes(committed_cursor)  # ... but the crash lost the cursor write
    assert follower(log, store).poll().lines == 6
    assert captured_lines(store) == log.written


def test_a_poll_budget_smaller_than_the_backlog_catches_up_over_several_polls(log, store):
    log.append(1)
    small = follower(log, store, max_poll_bytes=1000)
    small.poll()
    log.append(40)
    os.replace(log.path, str(log.path) + ".1")
    log.append(40)
    chunks = [small.poll()]
    while not chunks[-1].caught_up:
        chunks.append(small.poll())
    assert len(chunks) > 3
    assert captured_lines(store) == log.written  # both files, no line split or repeated


def test_concurrent_pollers_never_capture_a_line_twice(log, store):
    log.append(1)
    stop = threading.Event()
    captured: list[int] = []

    def poll_until_stopped():
        poller = follower(log, store)
        while not stop.is_set():
            captured.append(poller.poll().lines)

    pollers = [threading.Thread(target=poll_until_stopped) for _ in range(3)]
    for thread in pollers:
        thread.start()
    for _ in range(200):
        log.append(3)
    stop.set()
    for thread in pollers:
        thread.join()
    captured.append(follower(log, store).poll().lines)
    assert sum(captured) == len(log.written) == 601
    assert captured_lines(store) == log.written


def test_a_command_source_follows_appends_partial_lines_and_a_replaced_log(log, store):
    source = TelemetrySource(command=f"tail -c +{{tail_offset}} {shlex.quote(str(log.path))}")
    log.append(3)
    partial = log.line()
    log.append_text(partial[:7])
    assert LogFollower(source, store, TIMING).poll().lines == 3
    log.append_text(partial[7:] + "\n")
    log.written.append(partial)
    log.append(2)
    assert LogFollower(source, store, TIMING).poll().lines == 3
    os.unlink(log.path)  # replaced by a new log
    log.append(1)
    chunk = LogFollower(source, store, TIMING).poll()
    assert chunk.lines == 1 and chunk.warnings
    assert captured_lines(store) == log.written


def test_a_failing_command_raises_a_clear_error_and_leaves_the_cursor(log, store):
    log.append(2)
    good = TelemetrySource(command=f"{shlex.quote(sys.executable)} -c " + shlex.quote(
        f"import sys; sys.stdout.buffer.write(open({str(log.path)!r}, 'rb').read()[int(sys.argv[1]):])"
    ) + " {offset}")
    LogFollower(good, store, TIMING).poll()
    cursor_before = (store / "cursor.json").read_bytes()
    failing = TelemetrySource(command="sh -c 'echo permission denied >&2; exit 3' {offset}")
    with pytest.raises(CaptureError, match="status 3: permission denied"):
        LogFollower(failing, store, TIMING).poll()
    missing = TelemetrySource(command="/nonexistent/ssh host tail -c +{tail_offset} x")
    with pytest.raises(CaptureError, match="cannot run"):
        LogFollower(missing, store, TIMING).poll()
    assert (store / "cursor.json").read_bytes() == cursor_before
    log.append(1)
    assert LogFollower(good, store, TIMING).poll().lines == 1
    assert captured_lines(store) == log.written


def test_an_unreadable_path_raises_a_clear_error_and_leaves_the_cursor(log, store):
    log.append(2)
    follower(log, store).poll()
    cursor_before = (store / "cursor.json").read_bytes()
    missing = LogFollower(TelemetrySource(path=str(log.path) + ".missing"), store / "other", TIMING)
    with pytest.raises(CaptureError, match="no such file"):
        missing.poll()
    os.replace(log.path, str(log.path) + ".saved")
    os.mkdir(log.path)  # a path that exists but cannot be read as a log
    with pytest.raises(CaptureError, match="cannot read the log: Is a directory"):
        follower(log, store).poll()
    assert (store / "cursor.json").read_bytes() == cursor_before


@pytest.mark.parametrize(
    "data, problem",
    [
        ({}, "exactly one of path, command"),
        ({"path": "a", "command": "cat {offset}"}, "exactly one of path, command"),
        ({"command": "tail -f /var/log/x"}, "{offset} or {tail_offset}"),
        ({"command": "ssh 'unterminated {offset}"}, "cannot be split"),
    ],
)
def test_a_bad_source_is_a_config_error_naming_the_problem(data, problem):
    with pytest.raises(ConfigError, match=problem):
        validate_model(data, TelemetrySource, "profile.yaml: telemetry.source")


def iso(time_ms: int, zone: timezone = UTC) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=zone).isoformat(timespec="milliseconds")


def test_a_renamed_time_key_files_lines_by_their_own_time(log, store):
    hour_ms = [START_MS + hour * HOUR_MS + 5 for hour in range(4)]
    log.append_text("".join(json.dumps(line) + "\n" for line in [
        {"level": 30, "ts": hour_ms[0], "msg": "a"},
        {"level": 30, "ts": hour_ms[2], "time": hour_ms[3], "msg": "b"},  # `time` is not the mapped field
        {"level": 30, "req": {"ts": hour_ms[3]}, "ts": hour_ms[1], "msg": "c"},  # a nested `ts` comes first
        {"level": 30, "ts": str(hour_ms[3]), "msg": "d"},  # a numeric string, as the parser reads it
        {"level": 30, "msg": "untimed: follows the previous line"},
    ]))
    chunk = follower(log, store, mapping=mapping_with_time("ts")).poll()
    assert chunk.hours == {0, 1, 2, 3}
    assert [json.loads(line)["msg"] for line in raw_hour_path(store, 2).read_text().splitlines()] == ["b"]
    assert [json.loads(line)["msg"] for line in raw_hour_path(store, 1).read_text().splitlines()] == ["c"]
    assert [json.loads(line)["msg"] for line in raw_hour_path(store, 3).read_text().splitlines()] == [
        "d", "untimed: follows the previous line"]


@pytest.mark.parametrize("time_path", ["time", "meta.at"])
def test_iso_times_at_a_key_or_a_nested_path_file_lines_by_their_hour(log, store, time_path):
    def line(msg: str, value: str) -> str:
        if time_path == "time":
            return json.dumps({"level": 30, "time": value, "msg": msg}) + "\n"
        return json.dumps({"level": 30, "meta": {"at": value}, "msg": msg}) + "\n"

    log.append_text("".join([
        line("utc", iso(START_MS + 2 * HOUR_MS + 1).replace("+00:00", "Z")),
        line("offset", iso(START_MS + 1 * HOUR_MS + 1, timezone(timedelta(hours=5, minutes=30)))),
        line("naive is utc", iso(START_MS + 3 * HOUR_MS + 1).removesuffix("+00:00")),
        line("not a time: follows the previous line", "yesterday"),
    ]))
    chunk = follower(log, store, mapping=mapping_with_time(time_path)).poll()
    assert chunk.hours == {1, 2, 3}
    by_hour = {hour: [json.loads(line)["msg"] for line in raw_hour_path(store, hour).read_text().splitlines()]
               for hour in chunk.hours}
    assert by_hour == {2: ["utc"], 1: ["offset"], 3: ["naive is utc", "not a time: follows the previous line"]}


def test_the_campaigns_follower_reads_the_time_field_its_target_profile_maps(tmp_path, log):
    profile = tmp_path / "ts-profile.yaml"
    profile.write_text(DOCUMENTED_PROFILE.read_text() + "telemetry:\n  fields:\n    time: ts\n")
    state = CampaignState(campaign="renamed", created_at_ms=START_MS, timing=TIMING,
                          settings={"target_profile": str(profile), "telemetry": {"path": str(log.path)}})
    log.append_text(json.dumps({"level": 30, "ts": START_MS + 2 * HOUR_MS, "msg": "late"}) + "\n")
    assert log_follower(tmp_path / "data", state).poll().hours == {2}
    assert raw_hour_path(telemetry_store(tmp_path / "data", state), 2).exists()


def past_hour_state(hour_seconds: float = 3600) -> CampaignState:
    """A campaign whose hour 0 is long over, so capturing it has no time to wait for."""
    start_ms = int(time.time() * 1000) - int(10 * hour_seconds * 1000)
    return CampaignState(campaign="past", created_at_ms=start_ms,
                         timing=CampaignTiming(start_ms=start_ms, hour_seconds=hour_seconds))


def test_capturing_an_hour_that_is_over_reads_the_whole_backlog_before_returning(log, store):
    log.append(60)
    small = follower(log, store, max_poll_bytes=1000)  # the backlog takes several polls
    assert capture_until_hour_end(small, past_hour_state(), 0, should_stop=lambda: False) == []
    assert captured_lines(store) == log.written


def test_capturing_an_hour_returns_the_lines_the_capture_reports_lost(log, store):
    log.append(5)
    follower(log, store).poll()
    os.truncate(log.path, 0)  # truncated without a copy: what came after the last poll is gone
    log.append(2)
    problems = capture_until_hour_end(follower(log, store), past_hour_state(), 0, should_stop=lambda: False)
    assert len(problems) == 1 and "lost" in problems[0] and str(log.path) in problems[0]
