"""The stress probe: an open-model load generator at a constant arrival rate (runbook hour 7).

Request i is due at `start + i / rate` whatever happened to the earlier ones, and its latency runs from
that due time, so a slow server shows up as latency instead of as a quietly lower rate (no coordinated
omission). A request that cannot be sent within `send_tolerance_s` of its slot, or that would exceed the
cap on requests in flight, is recorded as dropped (outcome `dropped`): every slot yields exactly one
record. Drops are the validator's shortfall: they are reported in `notes` and the summary, never as the
target's failure, and the shares of what the target answered are over the requests actually sent.
Messages are the profile's `prompts.stress`.
"""

from __future__ import annotations

import asyncio

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.schemas.outcome import Outcome
from staging_validation.schemas.probe_records import ProbeRecord
from staging_validation.probes.result import ProbeResult, judge, latency_by_route, latency_percentiles, outcome_counts
from staging_validation.target.client import TargetClient

STRESS_USERS = 50


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

    messages = client.profile.prompts.stress
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
        message = messages[index % len(messages)]
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

    def share(count: int) -> float | None:
        return round(count / len(sent), 4) if sent else None

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
        "error_rate": share(not_ok),
        "rate_limited_share": share(outcomes.get(Outcome.RATE_LIMITED, 0)),
        "server_error_share": share(outcomes.get(Outcome.SERVER_ERROR, 0)),
        "max_send_lag_ms": round(max((r.send_lag_ms or 0.0) for r in sent), 1) if sent else None,
        **latency_percentiles(sent),
        "latency_by_route": latency_by_route(sent),
    }
    failures, notes = [], []
    if planned == 0:
        notes.append(f"no request planned (duration {duration_s:.3f}s at {rate_per_s}/s)")
    if dropped:
        notes.append(
            f"the validator dropped {dropped} of {planned} requests ({dropped_late} late, {dropped_cap} over "
            "the in-flight cap): not sent, not counted against the target"
        )
    if not_ok:
        failures.append(
            f"{not_ok} of {len(sent)} requests failed: "
            + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()) if o != Outcome.OK)
        )
    return ProbeResult(probe="stress", passed=not failures and bool(sent), records=completed, failures=failures,
                       summary=summary, notes=notes)
