"""Durable, exactly-once capture of the target's log into the campaign's own storage.

`LogFollower.poll()` reads what the log gained since the last poll — from a path, or from a command the
user configures — and appends the complete new lines to `store_dir/raw/<HH>.log` by each line's own
time, read from the target profile's time field as the parser reads it (epoch ms, or an ISO-8601
string); untimed lines, and lines that are not whole JSON objects, follow the previous line. The cursor
`store_dir/cursor.json` records how far the log was read (byte offset of the end of the last complete
line), which file that was (device, inode and a hash of its first bytes) and how large every raw file
was when that was committed:

- a partial last line is not consumed: the next poll reads it again, completed;
- rename rotation (the log moved to `<log>.1`, a new file in its place): the rest of the old file is
  drained from `<log>.1` first, then the new file is read from its start; until the new file exists the
  cursor stays on the rotated one, so a second rotation before the next poll is still recognised;
- copytruncate / truncation (same file, smaller than the offset or different first bytes): the rest is
  drained from `<log>.1` when its first bytes are the ones recorded, then the file is read from its start;
- a crash between appending raw lines and writing the cursor: raw files longer than the cursor says are
  cut back on the next poll, and the same bytes are captured again — once;
- concurrent pollers (a sensor and a run) serialize on an fcntl lock and each re-reads the cursor;
- lines that cannot be read any more (the rotated copy replaced before a poll drained it) are a warning of
  the poll that found them and a record in `store_dir/losses.jsonl`, written before the cursor moves on.

A command source cannot be stat'ed, so it is asked for the log from a little before the offset and the
overlap must equal the last bytes captured; if it does not, the log was replaced and is read from its
start.

Hostile lines never wedge the capture nor create stray files: a line whose time is no real moment
(non-numeric, infinite, NaN, negative, 1e308) or lies outside the campaign's window (`campaign_window`:
from the mapping's `before_start_allowance_s` before the start to the end of the last possible hour) is
filed as an untimed line, under the hour of the previous line; the parser counts it unparsed with its
reason. A line longer than the mapping's `max_line_bytes` is stored as its first `max_line_bytes` bytes
and a truncation mark (the rest is skipped, across polls, up to its newline), and counted in the cursor.
"""


from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import re
import select
import shlex
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pydantic

from staging_validation.config_files import StrictModel
from staging_validation.schemas.telemetry_mapping import (
    SOURCE_NAME,
    TelemetryMapping,
    TimeFormat,
)
from staging_validation.schemas.timing import MAX_CAMPAIGN_HOURS, CampaignTiming, hour_key
from staging_validation.storage import atomic_write_text
from staging_validation.telemetry.classify import TimeWindow

HEAD_BYTES = 256  # identifies a log file: its first bytes include the first line's millisecond time
OVERLAP_BYTES = 64  # command sources: bytes re-read before the offset to recognise the same log
MAX_POLL_BYTES = 64 << 20  # one poll captures at most this much; the caller polls again to catch up
COMMAND_TIMEOUT_S = 120.0
ROTATED_SUFFIX = ".1"


class CaptureError(RuntimeError):
    """The log could not be read; the message says why. The cursor is left as it was."""


# Appended to a line cut at max_line_bytes: not JSON, so the parser counts the line oversize, never an event.
TRUNCATION_MARK = b" [staging-validation: line truncated at max_line_bytes]"
MAIN_SOURCE = "main"


class TelemetrySource(StrictModel):
    """One log of the target: a `path` the validator can read, or a `command` that prints it, and the
    mapping it is read with (`mapping`: a name under the target profile's `telemetry.sources`; none: the
    profile's `telemetry` itself).

    The command is a template (split like a shell command line, run without a shell) that prints the log
    from a byte position: `{offset}` is the 0-based offset, `{tail_offset}` the 1-based position that
    `tail -c +N` expects, e.g. `ssh stg-host tail -c +{tail_offset} /var/log/vi/staging.log`.
    """

    name: str = pydantic.Field(default=MAIN_SOURCE, pattern=SOURCE_NAME.pattern)
    path: str | None = None
    command: str | None = None
    mapping: str | None = None

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> TelemetrySource:
        if (self.path is None) == (self.command is None):
            raise ValueError("give exactly one of path, command")
        if self.command is not None:
            if "{offset}" not in self.command and "{tail_offset}" not in self.command:
                raise ValueError("command must contain {offset} or {tail_offset}")
            try:
                shlex.split(self.command)
            except ValueError as exc:
                raise ValueError(f"command cannot be split into arguments: {exc}") from None
        return self


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, dict | TelemetrySource) else value


def _distinct_names(sources: tuple[TelemetrySource, ...]) -> tuple[TelemetrySource, ...]:
    if not sources:
        raise ValueError("give at least one telemetry source")
    names = [source.name for source in sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"telemetry source names must differ (each has its own capture folder): {repeated}")
    return sources


# A campaign's telemetry: one source (the form every existing campaign stores) or a list of them; the
# first is the main one, captured where a single source always was (`<store>/raw`, `<store>/cursor.json`).
TelemetrySources = Annotated[
    tuple[TelemetrySource, ...], pydantic.BeforeValidator(_one_or_many), pydantic.AfterValidator(_distinct_names)
]
TELEMETRY_SOURCES: pydantic.TypeAdapter[tuple[TelemetrySource, ...]] = pydantic.TypeAdapter(TelemetrySources)


def source_store_dir(store_dir: str | Path, sources: tuple[TelemetrySource, ...], source: TelemetrySource) -> Path:
    """Where a source is captured: the main (first) one in the store itself, each other under `sources/<name>`."""
    return Path(store_dir) if source is sources[0] else Path(store_dir) / "sources" / source.name


def campaign_window(
    timing: CampaignTiming, mapping: TelemetryMapping, last_hour: int = MAX_CAMPAIGN_HOURS - 1
) -> TimeWindow:
    """The times a campaign's line may carry: from the mapping's allowance before the start (clock skew,
    the launch itself) to the end of the campaign's last possible hour."""
    earliest = timing.start_ms - round(mapping.before_start_allowance_s * 1000)
    end = timing.start_ms + round((last_hour + 1) * timing.hour_seconds * 1000)
    return TimeWindow(max(0, earliest), end)


class CaptureCursor(StrictModel):
    offset: int = 0  # end of the last complete line consumed from the current log
    dev: int | None = None
    inode: int | None = None
    head_sha256: str | None = None  # of the first head_len bytes of the current log
    head_len: int = 0
    tail_b64: str = ""  # command sources: the last bytes consumed (up to OVERLAP_BYTES)
    last_hour: int | None = None  # hour of the last captured line, for a following untimed line
    store_sizes: dict[str, int] = pydantic.Field(default_factory=dict)  # raw file name → committed size
    lines_captured: int = 0
    in_oversize_line: bool = False  # the log's next bytes are the skipped rest of a truncated line
    oversize_lines: int = 0  # lines stored truncated at max_line_bytes


@dataclasses.dataclass
class CapturedChunk:
    data: bytes  # the complete new lines, in log order
    lines: int
    hours: set[int]  # campaign hours whose raw file received lines
    warnings: list[str] = dataclasses.field(default_factory=list)  # e.g. a rotation whose rest was lost
    caught_up: bool = True  # False when MAX_POLL_BYTES stopped the poll before the end of the log


class CaptureLoss(StrictModel):
    """Lines the capture could not read (a rotation whose rest was gone), recorded by the poll that found
    it, whichever caller polled: a monitor tick or an hour run."""

    key: str  # where the capture stood when it found the loss: found again after a crash, it is one loss
    time_ms: int
    after_hour: int | None  # the hour of the last line captured before the loss
    message: str


def raw_dir(store_dir: str | Path) -> Path:
    return Path(store_dir) / "raw"


def raw_hour_path(store_dir: str | Path, hour: int) -> Path:
    return raw_dir(store_dir) / f"{hour_key(hour)}.log"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _complete_lines(data: bytes, *, final: bool) -> bytes:
    """The complete lines of `data`; with `final` (nothing more will be appended) a tail becomes a line."""
    if final:
        return data if not data or data.endswith(b"\n") else data + b"\n"
    end = data.rfind(b"\n")
    return data[: end + 1]


def _iso_ms(value: str) -> float | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000


def _epoch_ms(value: object, time_format: TimeFormat = "auto") -> int | None:
    """A time field's value in epoch ms as the parser reads it (`telemetry.classify`): by the mapping's
    `time_format` — auto: a number (or a numeric string) of epoch ms, or an ISO-8601 string (UTC unless it
    says otherwise); None for anything else, and for an infinite or NaN time."""
    if isinstance(value, str):
        try:
            number: object = float(value)
        except ValueError:
            number = None
        if time_format == "iso8601" or (number is None and time_format == "auto"):
            number = _iso_ms(value)
        value = number
    elif time_format == "iso8601":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return math.floor(value * 1000 if time_format == "epoch_s" else value)


def _read_from(handle, offset: int, limit: int) -> bytes:
    handle.seek(offset)
    return handle.read(limit)


class LogFollower:
    def __init__(
        self,
        source: TelemetrySource,
        store_dir: str | Path,
        timing: CampaignTiming,
        *,
        mapping: TelemetryMapping | None = None,
        window: TimeWindow | None = None,
        max_poll_bytes: int = MAX_POLL_BYTES,
    ):
        """`mapping` (the source's, default the documented one) gives the time field (`fields.time`: a key,
        or a dotted path into nested objects), its format and the line cap; `window` the times a line may
        carry (default `campaign_window`)."""
        mapping = mapping or TelemetryMapping()
        self.source = source
        self.store_dir = Path(store_dir)
        self.timing = timing
        self.window = window or campaign_window(timing, mapping)
        self.max_poll_bytes = max_poll_bytes
        # Below the poll budget, so a line without its end yet is recognised as too long within one poll.
        self.max_line_bytes = min(mapping.max_line_bytes, max_poll_bytes - 1)
        self._time_format = mapping.time_format
        time_path = mapping.fields.time
        self._time_segments = time_path.split(".")
        # A top-level key found once in a line's bytes is read from them without parsing (the common case,
        # and cheap); a dotted path, or a line naming the key twice (a nested field of the same name may
        # come first) or not at all as written (an escaped key), is read from the parsed line.
        quoted_key = b'"' + time_path.encode() + b'"'
        self._time_key = quoted_key if len(self._time_segments) == 1 else None
        self._time_pattern = re.compile(re.escape(quoted_key) + rb'\s*:\s*("[^"\\]*"|[^\s,}]+)')

    @property
    def cursor_path(self) -> Path:
        return self.store_dir / "cursor.json"

    @property
    def losses_path(self) -> Path:
        return self.store_dir / "losses.jsonl"

    def losses(self) -> list[CaptureLoss]:
        """Every loss recorded so far, each once, oldest first."""
        try:
            text = self.losses_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CaptureError(f"{self.losses_path}: cannot read the recorded losses: {exc.strerror or exc}") from None
        found: dict[str, CaptureLoss] = {}
        # A crash while appending leaves a last line without its newline: the next record starts afresh.
        for number, line in enumerate(text.splitlines(keepends=True), start=1):
            if not line.endswith("\n"):
                break
            try:
                loss = CaptureLoss.model_validate_json(line)
            except ValueError as exc:
                raise CaptureError(f"{self.losses_path}: line {number} is not a recorded loss: {exc}") from None
            found.setdefault(loss.key, loss)
        return list(found.values())

    def _record_losses(self, committed: CaptureCursor, warnings: list[str]) -> None:
        """Stored before the cursor moves on, so a loss is never known only to the caller that found it."""
        position = f"{committed.dev}:{committed.inode}:{committed.offset}:{committed.lines_captured}"
        now_ms = int(time.time() * 1000)
        records = [CaptureLoss(key=f"{position}:{_sha256(w.encode())[:12]}", time_ms=now_ms,
                               after_hour=committed.last_hour, message=w).model_dump_json() + "\n"
                   for w in warnings]
        with open(self.losses_path, "a", encoding="utf-8") as handle:
            handle.write("".join(records))
            handle.flush()
            os.fsync(handle.fileno())

    def load_cursor(self) -> CaptureCursor:
        if not self.cursor_path.exists():
            return CaptureCursor()
        try:
            return CaptureCursor.model_validate_json(self.cursor_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CaptureError(f"{self.cursor_path}: unreadable capture cursor: {exc}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with open(self.store_dir / "capture.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def poll(self) -> CapturedChunk:
        with self._locked():
            committed = self.load_cursor()
            self._discard_uncommitted(committed)
            if self.source.path is not None:
                data, cursor, warnings, caught_up = self._read_path(self.source.path, committed)
            else:
                data, cursor, warnings, caught_up = self._read_command(committed)
            if warnings:
                self._record_losses(committed, warnings)
            by_hour, last_hour, lines, oversize = self._split_by_hour(data, cursor.last_hour)
            sizes = self._append(by_hour, cursor.store_sizes)
            cursor = cursor.model_copy(update={
                "last_hour": last_hour, "store_sizes": sizes, "lines_captured": cursor.lines_captured + lines,
                "oversize_lines": cursor.oversize_lines + oversize,
            })
            if cursor != committed or not self.cursor_path.exists():
                atomic_write_text(self.cursor_path, cursor.model_dump_json(indent=2))
        return CapturedChunk(data, lines, set(by_hour), warnings, caught_up)

    # -- the store ------------------------------------------------------------------------------------

    def _discard_uncommitted(self, cursor: CaptureCursor) -> None:
        """Cut raw files back to the sizes the cursor committed (a crash may have appended more)."""
        folder = raw_dir(self.store_dir)
        if not folder.is_dir():
            return
        for path in folder.glob("*.log"):
            committed = cursor.store_sizes.get(path.name, 0)
            if path.stat().st_size > committed:
                os.truncate(path, committed)

    def _append(self, by_hour: dict[int, list[bytes]], sizes: dict[str, int]) -> dict[str, int]:
        sizes = dict(sizes)
        if not by_hour:
            return sizes
        raw_dir(self.store_dir).mkdir(parents=True, exist_ok=True)
        for hour, parts in by_hour.items():
            path = raw_hour_path(self.store_dir, hour)
            with open(path, "ab") as handle:
                handle.write(b"".join(parts))
                handle.flush()
                os.fsync(handle.fileno())
                sizes[path.name] = handle.tell()
        return sizes

    def _split_by_hour(
        self, data: bytes, last_hour: int | None
    ) -> tuple[dict[int, list[bytes]], int | None, int, int]:
        """(lines by hour, hour of the last line, lines, lines truncated)."""
        by_hour: dict[int, list[bytes]] = {}
        if not data:
            return by_hour, last_hour, 0, 0
        if last_hour is None:  # the first line ever, untimed: the hour it arrives in (within the campaign)
            now_ms = min(max(int(time.time() * 1000), self.window.earliest_ms), self.window.end_ms - 1)
            last_hour = max(0, self.timing.hour_of_ms(now_ms))
        hour = last_hour
        lines = data.split(b"\n")
        lines.pop()  # data ends with a newline
        oversize = 0
        for line in lines:
            if len(line) > self.max_line_bytes:
                if not line.endswith(TRUNCATION_MARK):  # not already cut at the read (see _take_lines)
                    line = line[: self.max_line_bytes] + TRUNCATION_MARK
                oversize += 1
                by_hour.setdefault(hour, []).append(line + b"\n")
                continue
            # Only a line that looks like a whole JSON object has a time of its own; a truncated one
            # (no closing brace) is unparsed and follows the previous line, as the parser counts it.
            # So does a line whose time is no moment of the campaign (the parser counts why).
            record = line.rstrip(b"\r")
            time_ms = self._line_time_ms(record) if record[:1] == b"{" and record[-1:] == b"}" else None
            if time_ms is not None and self.window.admits(time_ms):
                hour = max(0, self.timing.hour_of_ms(time_ms))
            by_hour.setdefault(hour, []).append(line + b"\n")
        return by_hour, hour, len(lines), oversize

    def _take_lines(self, chunk: bytes, cursor: CaptureCursor, *, final: bool) -> tuple[bytes, int, bool]:
        """What of `chunk` (the log's bytes from the cursor's offset) to capture: (complete lines, bytes of
        the log consumed, whether the log's next bytes are the rest of a line too long to keep).

        The rest of a truncated line is consumed without being captured; a line that reaches
        `max_line_bytes` with no newline yet is captured truncated at once, so no poll waits for it and
        memory stays bounded by the poll budget. With `final` (nothing more will be appended) a tail
        becomes a line."""
        consumed, skipping = 0, cursor.in_oversize_line
        if skipping:
            end = chunk.find(b"\n")
            if end < 0:
                return b"", len(chunk), not final
            consumed, skipping = end + 1, False
        rest = chunk[consumed:]
        complete = _complete_lines(rest, final=final)
        tail = rest[len(complete):]
        if len(tail) > self.max_line_bytes:
            return complete + tail[: self.max_line_bytes] + TRUNCATION_MARK + b"\n", len(chunk), True
        return complete, consumed + len(complete), skipping

    def _line_time_ms(self, record: bytes) -> int | None:
        if self._time_key is not None and record.count(self._time_key) == 1:
            found = self._time_pattern.search(record)
            if found is None:
                return None
            text = found.group(1)
            if text[:1] == b'"':
                return _epoch_ms(text[1:-1].decode("utf-8", "replace"), self._time_format)
            try:  # an unquoted value: a JSON number, or a literal that is no time
                return _epoch_ms(float(text), self._time_format)
            except ValueError:
                return None
        try:
            value = json.loads(record)
        except (ValueError, RecursionError):  # not JSON after all (or absurdly nested): untimed
            return None
        for segment in self._time_segments:
            if not isinstance(value, dict):
                return None
            value = value.get(segment)
        return _epoch_ms(value, self._time_format)

    # -- a path source --------------------------------------------------------------------------------

    def _head_matches(self, handle, cursor: CaptureCursor) -> bool:
        return _sha256(_read_from(handle, 0, cursor.head_len)) == cursor.head_sha256

    def _drain_rotated(
        self, log_path: str, cursor: CaptureCursor, *, same_inode: bool
    ) -> tuple[bytes, CaptureCursor | None, bool, list[str]]:
        """The rest of the followed log from its rotated copy `<log>.1`: (lines, the cursor on that copy or
        None when it does not hold the rest, finished, warnings). Not finished when the poll's byte budget
        ran out: the cursor stays on the copy.

        After a rename `<log>.1` is the followed file itself (same inode). If its first bytes changed, it
        was truncated and rewritten before the rename (copytruncate, then rename, between two polls): the
        rest of what was read is lost, and the rewritten content, never read, is captured from its start."""
        rotated = Path(log_path + ROTATED_SUFFIX)
        lost = [f"{log_path} was rotated or truncated and {rotated} does not hold its rest: lines written "
                "after the previous poll and before the rotation are lost"]
        try:
            with open(rotated, "rb") as handle:
                stat = os.fstat(handle.fileno())
                if same_inode:
                    ours = (stat.st_dev, stat.st_ino) == (cursor.dev, cursor.inode)
                    unchanged = cursor.head_len == 0 or self._head_matches(handle, cursor)
                    rewritten = ours and not (unchanged and stat.st_size >= cursor.offset)
                else:
                    ours = cursor.head_len > 0 and self._head_matches(handle, cursor)
                    rewritten = False
                if ours and (rewritten or stat.st_size >= cursor.offset):
                    if rewritten:
                        head = _read_from(handle, 0, HEAD_BYTES)
                        cursor = cursor.model_copy(update={
                            "offset": 0, "in_oversize_line": False, "head_len": len(head),
                            "head_sha256": _sha256(head),
                        })
                    rest = _read_from(handle, cursor.offset, self.max_poll_bytes)
                    finished = cursor.offset + len(rest) >= stat.st_size
                    lines, consumed, skipping = self._take_lines(rest, cursor, final=finished)
                    moved = {"offset": cursor.offset + consumed, "in_oversize_line": skipping}
                    return lines, cursor.model_copy(update=moved), finished, lost if rewritten else []
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CaptureError(f"{rotated}: cannot read the rotated log: {exc.strerror or exc}") from None
        return b"", None, True, lost

    def _read_path(self, log_path: str, cursor: CaptureCursor) -> tuple[bytes, CaptureCursor, list[str], bool]:
        path = Path(log_path)
        try:
            handle = open(path, "rb")  # noqa: SIM115 (the follower keeps it open across polls)
        except FileNotFoundError:
            handle = None  # between a rename and the writer reopening, only the rotated file exists
        except OSError as exc:
            raise CaptureError(f"{path}: cannot read the log: {exc.strerror or exc}") from None
        if handle is None and cursor.inode is None:
            raise CaptureError(f"{path}: cannot read the log: no such file")
        with handle or contextlib.nullcontext():
            stat = os.fstat(handle.fileno()) if handle else None
            drained = b""
            warnings: list[str] = []
            if cursor.inode is not None:
                if stat is None:  # no file at the path: it was renamed and not recreated yet
                    renamed, truncated = True, False
                else:
                    renamed = (stat.st_dev, stat.st_ino) != (cursor.dev, cursor.inode)
                    truncated = not renamed and (
                        stat.st_size < cursor.offset or not self._head_matches(handle, cursor)
                    )
                if renamed or truncated:
                    drained, on_rotated, finished, warnings = self._drain_rotated(
                        log_path, cursor, same_inode=renamed
                    )
                    if on_rotated is not None and (not finished or stat is None):
                        # Not finished, or the writer has not reopened the log yet: stay on the rotated
                        # file, so that the next poll still tells whether another rotation replaced it.
                        return drained, on_rotated, warnings, finished
                    restart: dict[str, object] = {"offset": 0, "head_len": 0, "in_oversize_line": False}
                    if renamed:
                        restart.update(dev=None, inode=None)
                    cursor = (on_rotated or cursor).model_copy(update=restart)
            if stat is None:  # no file at the path (no handle): only the rotated one was there to read
                return drained, cursor, warnings, True
            budget = self.max_poll_bytes - len(drained)
            chunk = _read_from(handle, cursor.offset, budget) if budget > 0 else b""
            complete, consumed, skipping = self._take_lines(chunk, cursor, final=False)
            head_len, head_sha = cursor.head_len, cursor.head_sha256
            if head_len < HEAD_BYTES:
                head = _read_from(handle, 0, HEAD_BYTES)
                head_len, head_sha = len(head), _sha256(head)
            cursor = cursor.model_copy(
                update={
                    "offset": cursor.offset + consumed,
                    "in_oversize_line": skipping,
                    "dev": stat.st_dev,
                    "inode": stat.st_ino,
                    "head_len": head_len,
                    "head_sha256": head_sha,
                }
            )
        return drained + complete, cursor, warnings, len(chunk) < budget

    # -- a command source -----------------------------------------------------------------------------

    def _run(self, offset: int, limit: int) -> bytes:
        """At most `limit` bytes of the command's output; more is not read (the command is stopped)."""
        argv = [
            part.replace("{offset}", str(offset)).replace("{tail_offset}", str(offset + 1))
            for part in shlex.split(self.source.command)
        ]
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        with tempfile.TemporaryFile() as errors:  # a file, so a chatty stderr cannot block the command
            try:
                process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors)
            except OSError as exc:
                raise CaptureError(f"telemetry command {argv[0]!r} cannot run: {exc.strerror or exc}") from None
            with process:
                pieces, size = [], 0
                assert process.stdout is not None  # stdout=PIPE above
                descriptor = process.stdout.fileno()
                while size < limit:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        process.kill()
                        raise CaptureError(f"telemetry command timed out after {COMMAND_TIMEOUT_S:.0f} s: {argv[0]}")
                    if not select.select([descriptor], [], [], remaining)[0]:
                        continue
                    piece = os.read(descriptor, min(1 << 20, limit - size))
                    if not piece:
                        break
                    pieces.append(piece)
                    size += len(piece)
                if size >= limit:
                    process.kill()
                    process.wait()
                    return b"".join(pieces)
                try:
                    status = process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    raise CaptureError(
                        f"telemetry command timed out after {COMMAND_TIMEOUT_S:.0f} s: {argv[0]}"
                    ) from None
            if status != 0:
                errors.seek(0)
                detail = errors.read(4096).decode("utf-8", errors="replace").strip().splitlines()
                raise CaptureError(
                    f"telemetry command exited with status {status}: {detail[0] if detail else argv[0]}"
                )
        return b"".join(pieces)

    def _read_command(self, cursor: CaptureCursor) -> tuple[bytes, CaptureCursor, list[str], bool]:
        overlap = base64.b64decode(cursor.tail_b64)
        warnings = []
        output = self._run(cursor.offset - len(overlap), self.max_poll_bytes + len(overlap))
        if output.startswith(overlap):
            chunk, offset = output[len(overlap) :], cursor.offset
        else:
            warnings.append(
                "the telemetry command's log no longer continues the captured bytes (rotated or truncated): "
                "reading it from its start; lines written to the old log after the previous poll are lost"
            )
            output = self._run(0, self.max_poll_bytes)
            chunk, offset, overlap = output, 0, b""
            cursor = cursor.model_copy(update={"in_oversize_line": False})
        complete, consumed, skipping = self._take_lines(chunk, cursor, final=False)
        tail = (overlap + chunk[:consumed])[-OVERLAP_BYTES:]
        cursor = cursor.model_copy(update={
            "offset": offset + consumed, "in_oversize_line": skipping,
            "tail_b64": base64.b64encode(tail).decode("ascii"),
        })
        return complete, cursor, warnings, len(chunk) < self.max_poll_bytes
