"""What every probe returns, and the small checks the probes share."""

from __future__ import annotations

import dataclasses

import numpy as np

from staging_validation.schemas.outcome import Outcome
from staging_validation.schemas.probe_records import ProbeRecord


@dataclasses.dataclass
class ProbeResult:
    probe: str
    passed: bool
    records: list[ProbeRecord]
    failures: list[str]  # one readable reason per failed case
    summary: dict  # the figures a gate or a person needs (rates, counts, percentiles)


def judge(record: ProbeRecord, problem: str | None) -> bool:
    """Set the record's verdict: passed when there is no problem, else failed with the problem as error.

    A transport or HTTP failure already recorded on the record always wins, as it is the first cause.
    """
    if record.outcome != Outcome.OK or record.error:
        problem = record.error or f"outcome {record.outcome}"
    record.passed = problem is None
    if problem is not None:
        record.error = problem
    return record.passed


def failure_line(record: ProbeRecord) -> str:
    return f"{record.case}: {record.error}"


def latency_percentiles(records: list[ProbeRecord]) -> dict[str, float | None]:
    """p50/p95/p99 latency in ms over the requests that were sent (dropped ones have no latency)."""
    latencies = [r.latency_ms for r in records if r.latency_ms is not None]
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1)}


def outcome_counts(records: list[ProbeRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        outcome = str(record.outcome)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts
