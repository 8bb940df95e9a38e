"""The stress probe: an open-model load generator at a constant arrival rate (runbook hour 7).

Request i is due at `start + i / rate` whatever happened to the earlier ones, and its latency runs from
that due time, so a slow server shows up as latency instead of as a quietly lower rate (no coordinated
omission). A request that cannot be sent within `send_tolerance_s` of its slot, or that would exceed the
cap on requests in flight, is recorded as dropped: every slot yields exactly one record.
"""

from __future__ import annotations

import asyncio

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.schemas.outcome import Outcome
from staging_validation.schemas.probe_records import ProbeRecord
from staging_validation.probes.result import ProbeResult, judge, latency_percentiles, outcome_counts
from staging_validation.target.client import TargetClient

STRESS_USERS = 50
STRESS_PROMPTS = (
    "What is the capital of Australia?",
    "Give me a simple recipe for tomato soup.",
    "Summarize the plot of Romeo and Juliet.",
    "How do I keep basil plants healthy indoors?",
)


async def stress(
    client: TargetClient,
    timing: CampaignTiming,
    hour: int,
    rate_per_s: float,
    duration_s: float | None = None,
    *,
    max_in_flight: int | None = None,
    send_tolerance_s: float = 1.0,
) -> ProbeResult:
    """Chat requests at `rate_per_s` for `duration_s` wall seconds (default: until the hour ends).

    `max_in_flight` defaults to the profile's `http.max_connections`, so no request waits for a
    connection inside the HTTP client where its lateness would be invisible.
    """
    if rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
    cap = max_in_flight or client.profile.http.max_connections
    start = max(client.now(), timing.hour_start_s(hour))
    if duration_s is None:
        duration_s = timing.hour_start_s(hour + 1) - start
    planned = max(0, int(duration_s * rate_per_s + 1e-9))
    interval = 1.0 / rate_per_s

    records: list[ProbeRecord | None] = [None] * planned
    in_flight: set[asyncio.Task] = set()
    dropped_late = dropped_cap = 0

    async def send(index: int, at: float, user: str, message: str) -> None:
        # An open-model load generator never retries: a 429 is what the target did under this load.
        records[index] = await client.chat(
            "stress", timing, case="load", user=user, message=message, at=at, retry_rate_limited=False
        )

    for index in range(planned):
        at = start + index * interval
        await client.sleep_until(at)  # always yields, so finished requests release their slot
        user = f"sv-stress-{index % STRESS_USERS:03d}"
        message = STRESS_PROMPTS[index % len(STRESS_PROMPTS)]
        lateness = client.now() - at
        if lateness > send_tolerance_s:
            dropped_late += 1
            reason = f"not sent within {send_tolerance_s}s of its slot ({lateness:.3f}s late)"
        elif len(in_flight) >= cap:
            dropped_cap += 1
            reason = f"{len(in_flight)} requests already in flight (cap {cap})"
        else:
            task = asyncio.create_task(send(index, at, user, message))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            continue
        records[index] = client.dropped(
            "stress", timing, case="load", operation="chat", user=user, at=at, reason=reason
        )
    if in_flight:
        await asyncio.gather(*in_flight)

    completed: list[ProbeRecord] = [r for r in records if r is not None]
    for record in completed:
        judge(record, None)  # a load request passes when it was sent and answered OK
    sent = [r for r in completed if not r.dropped]
    outcomes = outcome_counts(sent)
    not_ok = len(sent) - outcomes.get(Outcome.OK, 0)
    dropped = dropped_late + dropped_cap
    summary = {
        "hour": hour,
        "target_rate": rate_per_s,
        "duration_s": round(duration_s, 3),
        "planned": planned,
        "sent": len(sent),
        "dropped": dropped,
        "dropped_late": dropped_late,
        "dropped_in_flight_cap": dropped_cap,
        "achieved_rate": round(len(sent) / duration_s, 3) if duration_s > 0 else None,
        "outcomes": outcomes,
        "error_rate": round(not_ok / len(sent), 4) if sent else None,
        "max_send_lag_ms": round(max((r.send_lag_ms or 0.0) for r in sent), 1) if sent else None,
        **latency_percentiles(sent),
    }
    failures = []
    if planned == 0:
        failures.append(f"no request planned (duration {duration_s:.3f}s at {rate_per_s}/s)")
    if dropped:
        failures.append(
            f"{dropped} of {planned} requests dropped ({dropped_late} late, {dropped_cap} over the in-flight cap)"
        )
    if not_ok:
        failures.append(
            f"{not_ok} of {len(sent)} requests failed: "
            + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()) if o != Outcome.OK)
        )
    return ProbeResult(probe="stress", passed=not failures, records=completed, failures=failures, summary=summary)
