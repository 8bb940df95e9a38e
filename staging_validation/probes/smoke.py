"""Deploy verification and the four documented smoke tests, once or on the runbook's 5-minute loop.

The smoke tests (target contract): (1) a normal prompt returns an answer with a record id; (2) an
ambiguous prompt is detected; (3) the relationship context is resolved for the user; (4) the stream
endpoint returns several events.
"""

from __future__ import annotations

import asyncio

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.schemas.probe_records import ProbeRecord
from staging_validation.probes.result import ProbeResult, failure_line, judge
from staging_validation.target.client import TargetClient

SMOKE_LOOP_INTERVAL_S = 300  # runbook: every 5 minutes during the first hour
RUNBOOK_HOUR_S = 3600
NORMAL_PROMPT = "What is the capital of France?"
AMBIGUOUS_PROMPT = "so what not"
RELATIONSHIP_PROMPT = "Can you remind me what we talked about last time?"
STREAM_PROMPT = "Tell me a short story about a lighthouse keeper."
SMOKE_USER = "sv-smoke-user"


async def _smoke_round(
    client: TargetClient, timing: CampaignTiming, probe: str, at: float | None = None
) -> list[ProbeRecord]:
    """The four smoke tests, all scheduled at the same moment."""
    at = client.now() if at is None else at
    common = {"user": SMOKE_USER, "at": at}
    normal, ambiguous, relationship, stream = await asyncio.gather(
        client.chat(probe, timing, case="normal", message=NORMAL_PROMPT, **common),
        client.chat(probe, timing, case="ambiguous", message=AMBIGUOUS_PROMPT, **common),
        client.chat(probe, timing, case="relationship", message=RELATIONSHIP_PROMPT, **common),
        client.stream(probe, timing, case="stream", message=STREAM_PROMPT, **common),
    )
    judge(normal, _normal_answer_problem(normal))
    ambiguous.expected_ambiguous = True
    judge(
        ambiguous,
        None
        if ambiguous.ambiguous
        else f"ambiguous prompt {AMBIGUOUS_PROMPT!r} not detected (verdict {ambiguous.ambiguous})",
    )
    judge(
        relationship,
        None
        if relationship.relationship_type
        else "no relationship context resolved for the user (relationship_type absent)",
    )
    minimum = client.profile.extract.sse.min_events
    judge(
        stream,
        None
        if (stream.sse_events or 0) >= minimum
        else f"stream returned {stream.sse_events or 0} events, expected at least {minimum}",
    )
    return [normal, ambiguous, relationship, stream]


def _normal_answer_problem(record: ProbeRecord) -> str | None:
    missing = [name for name in ("record_id", "answer") if not getattr(record, name)]
    if missing:
        return f"normal prompt: no {' and no '.join(missing)} in the response"
    if record.ambiguous:
        return "normal prompt was flagged ambiguous (got a clarification, not an answer)"
    return None


async def smoke_tests(client: TargetClient, timing: CampaignTiming) -> ProbeResult:
    """The four documented smoke tests, once, now."""
    records = await _smoke_round(client, timing, "smoke")
    failures = [failure_line(r) for r in records if not r.passed]
    passed_count = sum(bool(r.passed) for r in records)
    return ProbeResult(
        probe="smoke",
        passed=not failures,
        records=records,
        failures=failures,
        summary={"tests_passed": passed_count, "tests_total": len(records)},
    )


async def smoke_loop(client: TargetClient, timing: CampaignTiming, hour: int) -> ProbeResult:
    """The smoke tests every (scaled) 5 minutes from the hour's start until its end.

    Rounds whose time has already passed when the loop starts are reported as missed, not run late;
    if every round's time has passed, one round runs now so the hour still has evidence.
    """
    interval = timing.scale(SMOKE_LOOP_INTERVAL_S)
    rounds_per_hour = int(RUNBOOK_HOUR_S // SMOKE_LOOP_INTERVAL_S)
    slots = [timing.hour_start_s(hour) + k * interval for k in range(rounds_per_hour)]
    started = client.now()
    # A slot counts as on time if we start within a tenth of an interval of it.
    due = [s for s in slots if s >= started - interval / 10]
    missed = len(slots) - len(due)
    if not due:
        due = [started]

    # Rounds run on their own schedule (like cron), so a slow round never delays the next one.
    rounds = await asyncio.gather(*(_smoke_round(client, timing, "smoke", at=at) for at in due))
    records: list[ProbeRecord] = []
    failures: list[str] = []
    rounds_passed = 0
    for number, round_records in enumerate(rounds, start=1):
        records.extend(round_records)
        round_failures = [failure_line(r) for r in round_records if not r.passed]
        rounds_passed += not round_failures
        failures.extend(f"round {number}: {line}" for line in round_failures)
    return ProbeResult(
        probe="smoke",
        passed=not failures,
        records=records,
        failures=failures,
        summary={
            "hour": hour,
            "rounds_planned": len(slots),
            "rounds_run": len(due),
            "rounds_missed": missed,
            "rounds_passed": rounds_passed,
            "tests_passed": sum(bool(r.passed) for r in records),
            "tests_total": len(records),
        },
    )


async def deploy_verification(client: TargetClient, timing: CampaignTiming) -> ProbeResult:
    """Health answers 200 with the four features enabled, then the four smoke tests."""
    health, features = await client.health("deploy", timing)
    disabled = [name for name, enabled in features.items() if enabled is not True]
    judge(
        health,
        None
        if not disabled
        else "features not enabled: "
        + ", ".join(f"{name} ({'absent' if features[name] is None else 'false'})" for name in disabled),
    )
    smoke = await _smoke_round(client, timing, "deploy")
    records = [health, *smoke]
    failures = [failure_line(r) for r in records if not r.passed]
    return ProbeResult(
        probe="deploy",
        passed=not failures,
        records=records,
        failures=failures,
        summary={
            "health_ok": bool(health.passed),
            "features": features,
            "smoke_tests_passed": sum(bool(r.passed) for r in smoke),
            "smoke_tests_total": len(smoke),
        },
    )
