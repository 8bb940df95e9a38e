"""The telemetry of the `sparse` dialect: a service that logs less, and elsewhere, than its docs say.

- stdout (`--log`): pino JSON request lines, identity operations (no `op` field: the operation is in the
  message) and errors, each followed by a multi-line `console.dir` dump of the same request (Node's
  `util.inspect` style: single quotes, bare keys, never JSON), so about 90 % of its lines are unreadable;
- the governor's own JSONL file (`--events-log`): one line per governor attempt, string levels
  (`"level": "info"`), an ISO-8601 `ts`, its own field names;
- ContinuityPack, ambiguity and relationship events are not logged at all.

Ground truth (`/_sim/stats`) is the sum of both files, counted by the documented record of each line;
`files` gives each file's own line counts.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from staging_validation.simulator.telemetry_log import (
    LEVEL_ERROR,
    LEVEL_INFO,
    LEVEL_WARN,
    MSG_AMBIGUITY,
    MSG_IDENTITY,
    MSG_PACK_BUILT,
    MSG_PACK_FALLBACK,
    MSG_PACK_MISSING,
    MSG_RELATIONSHIP,
    TelemetryLog,
    pino_json,
)

NOT_LOGGED = frozenset({MSG_PACK_BUILT, MSG_PACK_MISSING, MSG_PACK_FALLBACK, MSG_AMBIGUITY, MSG_RELATIONSHIP})
IDENTITY_MSGS = {
    "create": "identity: user created",
    "resolve": "identity: user resolved",
    "link": "identity: provider linked",
    "lookup": "identity: providers listed",
}
GOVERNOR_EVENT = "governor.attempt"
LEVEL_NAMES = {LEVEL_INFO: "info", LEVEL_WARN: "warn", LEVEL_ERROR: "error"}
_GOVERNOR_MSG = re.compile(r"^\[Staging\] Governor pass \d+/\d+$")
DUMP_LINES = 9  # per JSON line on stdout: 9 of every 10 lines are the dump


def events_log_path(log_path: Path) -> Path:
    """The governor file beside the stdout log when none is named: `staging.log` → `staging.events.jsonl`."""
    return log_path.with_name(f"{log_path.stem}.events.jsonl")


def render_stdout(record: dict) -> str:
    if record["msg"] == MSG_IDENTITY:
        shown = {key: value for key, value in record.items() if key != "op"}
        shown["msg"] = IDENTITY_MSGS[record["op"]]
        return pino_json(shown)
    return pino_json(record)


def render_governor(record: dict) -> str:
    ts = datetime.fromtimestamp(record["time"] / 1000, UTC).isoformat(timespec="milliseconds")
    return pino_json({
        "ts": ts.replace("+00:00", "Z"),
        "level": LEVEL_NAMES.get(record["level"], str(record["level"])),
        "event": GOVERNOR_EVENT,
        "request_id": record.get("reqId"),
        "attempt": record["attempt"],
        "max": record["max_attempts"],
        "result": record["status"],
        "violation": record["violation_type"],
        "regen_ms": record["regen_in_ms"],
    })


def _inspect(value: object) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f"{key}: {_inspect(item)}" for key, item in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'").replace("\n", "\\n") + "'"
    if value is None:
        return "undefined"
    return str(value).lower() if isinstance(value, bool) else str(value)


def console_dump(record: dict) -> str:
    """`console.dir(record)` as Node prints it: DUMP_LINES lines, none of them a JSON object."""
    body = [f"  {key}: {_inspect(value)}," for key, value in record.items() if key not in ("pid", "hostname")]
    body = body[: DUMP_LINES - 2]
    body += [f"  [Symbol(kMeta{n})]: [Object]," for n in range(DUMP_LINES - 2 - len(body))]
    return "\n".join(["{", *body, "}"])


class SparseTelemetry:
    """The `TelemetryLog` interface the engine writes to, spread over the sparse dialect's two files."""

    def __init__(self, stdout_path: Path, events_path: Path):
        self.stdout = TelemetryLog(stdout_path, render=render_stdout)
        self.events = TelemetryLog(events_path, render=render_governor)
        self.path = self.stdout.path

    @property
    def rotations(self) -> list[dict]:
        return self.stdout.rotations

    def write(self, msg: str, *, level: int = LEVEL_INFO, request_id: str | None = None, **fields) -> dict | None:
        if msg in NOT_LOGGED:
            return None
        if _GOVERNOR_MSG.match(msg):
            return self.events.write(msg, level=level, request_id=request_id, **fields)
        record = self.stdout.write(msg, level=level, request_id=request_id, **fields)
        self.stdout.write_unparsed(console_dump(record))
        return record

    def write_unparsed(self, text: str) -> None:
        self.stdout.write_unparsed(text)

    def pino_line(self, msg: str, level: int, request_id: str | None, fields: dict) -> tuple[dict, str]:
        return self.stdout.pino_line(msg, level, request_id, fields)

    def rotate(self, mode: str) -> dict:
        return self.stdout.rotate(mode)

    def close(self) -> None:
        self.stdout.close()
        self.events.close()

    def summary(self, timing) -> dict:
        stdout, events = self.stdout.summary(timing), self.events.summary(timing)
        files = {
            name: {"path": str(log.path), "lines_total": part["lines_total"], "unparsed_lines": part["unparsed_lines"]}
            for name, log, part in (("stdout", self.stdout, stdout), ("events", self.events, events))
        }
        return {**_sum(stdout, events), "files": files}


def _sum(left: dict, right: dict) -> dict:
    """Two summaries added key by key (nested counts included)."""
    total = dict(left)
    for key, value in right.items():
        if isinstance(value, dict):
            total[key] = _sum(left.get(key, {}), value)
        else:
            total[key] = left.get(key, 0) + value
    return total
