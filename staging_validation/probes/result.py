"""What every probe returns, and the small checks the probes share."""

from __future__ import annotations

import dataclasses

import numpy as np

from staging_validation.schemas.outcome import NOT_SENT, Outcome
from staging_validation.schemas.probe_records import ProbeRecord
from staging_validation.target.client import note_not_exposed


@dataclasses.dataclass
class ProbeResult:
    probe: str
    passed: bool
    records: list[ProbeRecord]
    failures: list[str]  # one readable reason per failed case: what the target did wrong
    summary: dict  # the figures a gate or a person needs (rates, counts, percentiles)
    # What could not be verified (not exposed) or was not sent (dropped): never the target's failure.
    notes: list[str] = dataclasses.field(default_factory=list)


def judge(record: ProbeRecord, problem: str | None, not_exposed: str | None = None) -> bool:
    """Set the record's verdict: passed when there is no problem, else failed with the problem as error.

    A transport or HTTP failure already recorded on the record always wins, as it is the first cause.
    A case that could not be judged (its request was never sent, or `not_exposed` names what the check
    needs and the profile declares not exposed) is left unjudged (`passed` None): it returns False.
    """
    if record.outcome in NOT_SENT:
        record.passed = None
        return False
    if record.outcome != Outcome.OK or record.error:
        problem = record.error or f"outcome {record.outcome}"
    elif not_exposed is not None:
        note_not_exposed(record, not_exposed)
        record.passed = None
        return False
    record.passed = problem is None
    if problem is not None:
        record.error = problem
    return record.passed


def unverified_lines(records: list[ProbeRecord]) -> list[str]:
    """One note per case that could not be judged, naming what was not exposed or why it was not sent."""
    return [f"{r.case}: cannot verify ({r.not_exposed or r.error or r.outcome})"
            for r in records if r.passed is None and (r.not_exposed or r.outcome in NOT_SENT)]


def failure_line(record: ProbeRecord) -> str:
    return f"{record.case}: {record.error}"


def latency_percentiles(records: list[ProbeRecord]) -> dict[str, float | None]:
    """p50/p95/p99 latency in ms over the requests that were sent (requests not sent have no latency)."""
    latencies = [r.latency_ms for r in records if r.latency_ms is not None]
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1)}


def latency_by_route(records: list[ProbeRecord]) -> dict[str, dict[str, float | None]]:
    """p50/p95/p99 per probed route (`METHOD route`), so one route's figures are never mixed with another's."""
    routes: dict[str, list[ProbeRecord]] = {}
    for record in records:
        if record.latency_ms is not None:
            routes.setdefault(f"{record.method} {record.route}", []).append(record)
    return {route: latency_percentiles(rows) for route, rows in sorted(routes.items())}


def outcome_counts(records: list[ProbeRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        outcome = str(record.outcome)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts
