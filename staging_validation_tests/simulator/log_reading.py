"""Reading a simulator log back in tests, independently of the simulator's own classification code."""

from __future__ import annotations

import json
from collections import defaultdict

PINO_BASE_FIELDS = ("level", "time", "pid", "hostname", "msg")


def json_records(lines: list[str]) -> list[dict]:
    """Every line that is a JSON object, in order."""
    records = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def assert_all_pino(lines: list[str]) -> list[dict]:
    assert lines, "the log is empty"
    records = []
    for number, line in enumerate(lines, 1):
        record = json.loads(line)  # raises on a non-JSON line, naming it
        assert isinstance(record, dict), f"line {number} is not a JSON object: {line[:120]}"
        missing = [field for field in PINO_BASE_FIELDS if field not in record]
        assert not missing, f"line {number} lacks pino fields {missing}: {line[:120]}"
        records.append(record)
    return records


def by_msg(records: list[dict], msg: str) -> list[dict]:
    return [r for r in records if r["msg"] == msg]


def governor_lines(records: list[dict]) -> list[dict]:
    return [r for r in records if r["msg"].startswith("[Staging] Governor pass ")]


def lines_by_request(records: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if "reqId" in record:
            grouped[record["reqId"]].append(record)
    return dict(grouped)


def completed_requests(records: list[dict]) -> dict[str, list[dict]]:
    """Lines of each request that has its `request completed` line."""
    return {
        request_id: lines
        for request_id, lines in lines_by_request(records).items()
        if lines[-1]["msg"] == "request completed"
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
