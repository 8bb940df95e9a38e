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
  drained from `<log>.1` first, then the new file is read from its start;
- copytruncate / truncation (same file, smaller than the offset or different first bytes): the rest is
  drained from `<log>.1` when its first bytes are the ones recorded, then the file is read from its start;
- a crash between appending raw lines and writing the cursor: raw files longer than the cursor says are
  cut back on the next poll, and the same bytes are captured again — once;
- concurrent pollers (a sensor and a run) serialize on an fcntl lock and each re-reads the cursor.

A command source cannot be stat'ed, so it is asked for the log from a little before the offset and the
overlap must equal the last bytes captured; if it does not, the log was replaced and is read from its
start.
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

import pydantic

from staging_validation.schemas.timing import CampaignTiming, hour_key
from staging_validation.config_files import StrictModel
from staging_validation.storage import atomic_write_text

HEAD_BYTES = 256  # identifies a log file: its first bytes include the first line's millisecond time
OVERLAP_BYTES = 64  # command sources: bytes re-read before the offset to recognise the same log
MAX_POLL_BYTES = 64 << 20  # one poll captures at most this much; the caller polls again to catch up
COMMAND_TIMEOUT_S = 120.0
ROTATED_SUFFIX = ".1"


class CaptureError(RuntimeError):
    """The log could not be read; the message says why. The cursor is left as it was."""


class TelemetrySource(StrictModel):
    """Where the target's log is: a `path` the validator can read, or a `command` that prints it.

    The command is a template (split like a shell command line, run without a shell) that prints the log
    from a byte position: `{offset}` is the 0-based offset, `{tail_offset}` the 1-based position that
    `tail -c +N` expects, e.g. `ssh stg-host tail -c +{tail_offset} /var/log/vi/staging.log`.
    """

    path: str | None = None
    command: str | None = None

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


@dataclasses.dataclass
class CapturedChunk:
    data: bytes  # the complete new lines, in log order
    lines: int
    hours: set[int]  # campaign hours whose raw file received lines
    warnings: list[str] = dataclasses.field(default_factory=list)  # e.g. a rotation whose rest was lost
    caught_up: bool = True  # False when MAX_POLL_BYTES stopped the poll before the end of the log


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


def _epoch_ms(value: object) -> int | None:
    """A time field's value in epoch ms as the parser reads it: a number (or a numeric string) of epoch ms,
    or an ISO-8601 string (UTC unless it says otherwise); None for anything else."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return None
            value = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return math.floor(value)


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
        time_path: str = "time",
        max_poll_bytes: int = MAX_POLL_BYTES,
    ):
        """`time_path` is the profile's `telemetry.fields.time`: a key, or a dotted path into nested objects."""
        self.source = source
        self.store_dir = Path(store_dir)
        self.timing = timing
        self.max_poll_bytes = max_poll_bytes
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
                data, cursor, warnings, caught_up = self._read_path(committed)
            else:
                data, cursor, warnings, caught_up = self._read_command(committed)
            by_hour, last_hour, lines = self._split_by_hour(data, cursor.last_hour)
            sizes = self._append(by_hour, cursor.store_sizes)
            cursor = cursor.model_copy(
                update={"last_hour": last_hour, "store_sizes": sizes, "lines_captured": cursor.lines_captured + lines}
            )
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

    def _split_by_hour(self, data: bytes, last_hour: int | None) -> tuple[dict[int, list[bytes]], int | None, int]:
        by_hour: dict[int, list[bytes]] = {}
        if not data:
            return by_hour, last_hour, 0
        hour = last_hour if last_hour is not None else max(0, self.timing.hour_of_ms(int(time.time() * 1000)))
        lines = data.split(b"\n")
        lines.pop()  # data ends with a newline
        for line in lines:
            # Only a line that looks like a whole JSON object has a time of its own; a truncated one
            # (no closing brace) is unparsed and follows the previous line, as the parser counts it.
            record = line.rstrip(b"\r")
            time_ms = self._line_time_ms(record) if record[:1] == b"{" and record[-1:] == b"}" else None
            if time_ms is not None:
                hour = max(0, self.timing.hour_of_ms(time_ms))
            by_hour.setdefault(hour, []).append(line + b"\n")
        return by_hour, hour, len(lines)

    def _line_time_ms(self, record: bytes) -> int | None:
        if self._time_key is not None and record.count(self._time_key) == 1:
            found = self._time_pattern.search(record)
            return _epoch_ms(found.group(1).strip(b'"').decode("utf-8", "replace")) if found else None
        try:
            value = json.loads(record)
        except (ValueError, RecursionError):  # not JSON after all (or absurdly nested): untimed
            return None
        for segment in self._time_segments:
            if not isinstance(value, dict):
                return None
            value = value.get(segment)
        return _epoch_ms(value)

    # -- a path source --------------------------------------------------------------------------------

    def _head_matches(self, handle, cursor: CaptureCursor) -> bool:
        return _sha256(_read_from(handle, 0, cursor.head_len)) == cursor.head_sha256

    def _drain_rotated(self, cursor: CaptureCursor, *, same_inode: bool) -> tuple[bytes, bool, list[str]]:
        """The rest of the log after `cursor.offset` from its rotated copy `<log>.1`: (lines, finished,
        warnings). Not finished when the poll's byte budget ran out: the cursor stays on the old log."""
        rotated = Path(self.source.path + ROTATED_SUFFIX)
        try:
            with open(rotated, "rb") as handle:
                stat = os.fstat(handle.fileno())
                if same_inode:
                    ours = (stat.st_dev, stat.st_ino) == (cursor.dev, cursor.inode)
                else:
                    ours = cursor.head_len > 0 and self._head_matches(handle, cursor)
                if ours and stat.st_size >= cursor.offset:
                    rest = _read_from(handle, cursor.offset, self.max_poll_bytes)
                    if cursor.offset + len(rest) < stat.st_size:
                        return _complete_lines(rest, final=False), False, []
                    return _complete_lines(rest, final=True), True, []
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CaptureError(f"{rotated}: cannot read the rotated log: {exc.strerror or exc}") from None
        return b"", True, [
            f"{self.source.path} was rotated or truncated and {rotated} does not hold its rest: lines written "
            "after the previous poll and before the rotation are lost"
        ]

    def _read_path(self, cursor: CaptureCursor) -> tuple[bytes, CaptureCursor, list[str], bool]:
        path = Path(self.source.path)
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            handle = None  # between a rename and the writer reopening, only the rotated file exists
        except OSError as exc:
            raise CaptureError(f"{path}: cannot read the log: {exc.strerror or exc}") from None
        if handle is None and cursor.inode is None:
            raise CaptureError(f"{path}: cannot read the log: no such file")
        with handle or contextlib.nullcontext():
            stat = os.fstat(handle.fileno()) if handle else None
            drained, warnings = b"", []
            if cursor.inode is not None:
                renamed = stat is None or (stat.st_dev, stat.st_ino) != (cursor.dev, cursor.inode)
                truncated = not renamed and (stat.st_size < cursor.offset or not self._head_matches(handle, cursor))
                if renamed or truncated:
                    drained, finished, warnings = self._drain_rotated(cursor, same_inode=renamed)
                    if not finished:
                        return drained, cursor.model_copy(update={"offset": cursor.offset + len(drained)}), [], False
                    restart = {"offset": 0, "head_len": 0}
                    if renamed:
                        restart.update(dev=None, inode=None)
                    cursor = cursor.model_copy(update=restart)
            if handle is None:
                return drained, cursor, warnings, True
            budget = self.max_poll_bytes - len(drained)
            chunk = _read_from(handle, cursor.offset, budget) if budget > 0 else b""
            complete = _complete_lines(chunk, final=False)
            if not complete and budget > 0 and len(chunk) >= budget:
                complete = chunk  # a single line longer than a whole poll: take it as it is
            head_len, head_sha = cursor.head_len, cursor.head_sha256
            if head_len < HEAD_BYTES:
                head = _read_from(handle, 0, HEAD_BYTES)
                head_len, head_sha = len(head), _sha256(head)
            cursor = cursor.model_copy(
                update={
                    "offset": cursor.offset + len(complete),
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
        complete = _complete_lines(chunk, final=False)
        if not complete and len(chunk) >= self.max_poll_bytes:
            complete = chunk
        tail = (overlap + complete)[-OVERLAP_BYTES:]
        cursor = cursor.model_copy(
            update={"offset": offset + len(complete), "tail_b64": base64.b64encode(tail).decode("ascii")}
        )
        return complete, cursor, warnings, len(chunk) < self.max_poll_bytes
