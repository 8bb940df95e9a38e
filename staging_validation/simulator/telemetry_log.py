"""The simulator's pino log writer, which also keeps the ground truth of every line it wrote.

Counting happens at the single place lines are written, under the same lock as the write and the
rotation, so `GET /_sim/stats` states exactly what is in the log (and its rotated copies), classified by
the rules of docs/ARCHITECTURE.md that a parser is checked against.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from staging_validation.schemas.event_columns import EventKind
from staging_validation.schemas.timing import CampaignTiming

PROBE_REQUEST_ID_PREFIX = "sv-"

MSG_PACK_BUILT = "[Staging] ContinuityPack built"
MSG_PACK_MISSING = "[Staging] ContinuityPack missing: no continuity pack for request"
MSG_PACK_FALLBACK = "[Staging] ContinuityPack fallback: using default pack"
MSG_AMBIGUITY = "[Staging] Ambiguity check completed"
MSG_RELATIONSHIP = "[Staging] Relationship resolved"
MSG_IDENTITY = "[Staging] Identity operation"
MSG_REQUEST_COMPLETED = "request completed"
MSG_CHAT_ERROR = "Unhandled error in chat handler"

LEVEL_INFO, LEVEL_WARN, LEVEL_ERROR = 30, 40, 50

_EXACT_KINDS = {
    MSG_PACK_BUILT: EventKind.PACK_BUILT,
    MSG_PACK_MISSING: EventKind.PACK_MISSING,
    MSG_PACK_FALLBACK: EventKind.PACK_FALLBACK,
    MSG_AMBIGUITY: EventKind.AMBIGUITY_CHECK,
    MSG_RELATIONSHIP: EventKind.RELATIONSHIP_RESOLVED,
    MSG_IDENTITY: EventKind.IDENTITY_OP,
    MSG_REQUEST_COMPLETED: EventKind.REQUEST_COMPLETED,
}
_GOVERNOR_MSG = re.compile(r"^\[Staging\] Governor pass \d+/\d+$")
_KINDS = list(EventKind)
_UNPARSED = -1
_KIND_SLOTS = 64  # more than the kind codes, so (hour, kind) packs into one integer


def governor_msg(attempt: int, max_attempts: int) -> str:
    return f"[Staging] Governor pass {attempt}/{max_attempts}"


def classify(record: dict) -> EventKind:
    msg = record.get("msg")
    kind = _EXACT_KINDS.get(msg) if isinstance(msg, str) else None
    if kind is not None:
        return kind
    if isinstance(msg, str) and _GOVERNOR_MSG.match(msg):
        return EventKind.GOVERNOR_PASS
    if record.get("level", 0) >= LEVEL_ERROR:
        return EventKind.ERROR
    return EventKind.OTHER


def origin_of(request_id: str | None) -> str:
    return "probe" if request_id and request_id.startswith(PROBE_REQUEST_ID_PREFIX) else "organic"


def pino_json(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))


class TelemetryLog:
    """Appends lines to one file; rotates it; counts what it wrote.

    A line is counted by its pino record (the documented msg and numeric level), whatever `render` turns
    it into, so a dialect that logs the same event in another shape keeps the same ground truth.
    """

    def __init__(self, path: str | Path, render: Callable[[dict], str] = pino_json):
        self.path = Path(path)
        self._render = render
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: copytruncate leaves no gap; the writer keeps the file open for its whole life.
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._hostname = socket.gethostname()
        # One entry per physical line: its time (unparsed lines take the previous line's) and kind.
        self._line_times = array("q")
        self._line_kinds = array("b")
        self._by_origin: dict[str, Counter[str]] = {"probe": Counter(), "organic": Counter()}
        self._requests_by_origin: Counter = Counter()
        self._requests_by_status: Counter = Counter()
        self._error_lines = 0
        self._organic_ambiguous = 0
        self._organic_ambiguity_checks = 0
        self._last_time_ms = int(time.time() * 1000)
        self.rotations: list[dict] = []

    def pino_line(self, msg: str, level: int, request_id: str | None, fields: dict) -> tuple[dict, str]:
        record: dict = {
            "level": level,
            "time": int(time.time() * 1000),
            "pid": self._pid,
            "hostname": self._hostname,
        }
        if request_id is not None:
            record["reqId"] = request_id
        record.update(fields)
        record["msg"] = msg
        return record, self._render(record)

    def write(self, msg: str, *, level: int = LEVEL_INFO, request_id: str | None = None, **fields) -> dict:
        with self._lock:
            record, line = self.pino_line(msg, level, request_id, fields)
            self._append(line)
            self._count(record, request_id)
            return record

    def write_unparsed(self, text: str) -> None:
        """Lines that are not JSON objects (console output, stack traces, truncated JSON)."""
        with self._lock:
            for physical_line in text.splitlines():
                self._append(physical_line)
                self._line_times.append(self._last_time_ms)
                self._line_kinds.append(_UNPARSED)

    def _append(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()

    def _count(self, record: dict, request_id: str | None) -> None:
        kind = classify(record)
        origin = origin_of(request_id)
        self._last_time_ms = record["time"]
        self._line_times.append(record["time"])
        self._line_kinds.append(_KINDS.index(kind))
        self._by_origin[origin][kind.value] += 1
        if record["level"] >= LEVEL_ERROR:
            self._error_lines += 1
        if kind is EventKind.REQUEST_COMPLETED:
            self._requests_by_origin[origin] += 1
            self._requests_by_status[str(record["res"]["statusCode"])] += 1
        if kind is EventKind.AMBIGUITY_CHECK and origin == "organic":
            self._organic_ambiguity_checks += 1
            self._organic_ambiguous += record.get("status") == "AMBIGUOUS"

    def rotate(self, mode: str) -> dict:
        """`rename`: move the file to `<log>.1`, reopen; `copytruncate`: copy it there, truncate in place."""
        rotated = self.path.with_name(self.path.name + ".1")
        with self._lock:
            if mode == "rename":
                self._file.close()
                os.replace(self.path, rotated)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open, as above)
            elif mode == "copytruncate":
                shutil.copyfile(self.path, rotated)
                self._file.truncate(0)
            else:
                raise ValueError(f"unknown rotation mode {mode!r}")
            entry = {"time_ms": int(time.time() * 1000), "mode": mode, "lines_total": len(self._line_kinds)}
            self.rotations.append(entry)
            return entry

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def summary(self, timing: CampaignTiming) -> dict:
        """Counts per kind, per campaign hour (by line time), per origin, as GET /_sim/stats reports them."""
        with self._lock:
            # Copies: a live view would stop the arrays from growing.
            times = np.frombuffer(self._line_times, dtype=np.int64).copy()
            kinds = np.frombuffer(self._line_kinds, dtype=np.int8).astype(np.int64)
            by_origin = {origin: dict(counts) for origin, counts in self._by_origin.items()}
            requests_by_origin = dict(self._requests_by_origin)
            requests_by_status = dict(self._requests_by_status)
            error_lines = self._error_lines
            organic = (self._organic_ambiguous, self._organic_ambiguity_checks)
        hours = timing.hour_of_ms(times)  # vectorised: a day-long run holds millions of lines
        events: Counter = Counter()
        events_by_hour: dict[str, Counter] = {}
        unparsed_by_hour: Counter = Counter()
        # One sortable key per line: hour and kind code (shifted to be >= 0) packed together.
        keys, counts = np.unique(hours * _KIND_SLOTS + (kinds - _UNPARSED), return_counts=True)
        for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
            hour, code = str(key // _KIND_SLOTS), key % _KIND_SLOTS + _UNPARSED
            if code == _UNPARSED:
                unparsed_by_hour[hour] += count
                continue
            kind = _KINDS[code].value
            events[kind] += count
            events_by_hour.setdefault(hour, Counter())[kind] += count
        return {
            "events": dict(events),
            "events_by_hour": {hour: dict(counts) for hour, counts in events_by_hour.items()},
            "events_by_origin": by_origin,
            "error_lines": error_lines,
            "unparsed_lines": sum(unparsed_by_hour.values()),
            "unparsed_by_hour": dict(unparsed_by_hour),
            "lines_total": int(len(times)),
            "requests": {
                "total": sum(requests_by_origin.values()),
                "organic": requests_by_origin.get("organic", 0),
                "probe": requests_by_origin.get("probe", 0),
                "by_status": requests_by_status,
            },
            "organic_ambiguous": organic[0],
            "organic_ambiguity_checks": organic[1],
        }
