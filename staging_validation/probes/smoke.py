"""Deploy verification and the four documented smoke tests, once or on the runbook's 5-minute loop.

The smoke tests (target contract): (1) a normal prompt returns an answer with a record id; (2) an
ambiguous prompt is detected; (3) the relationship context is resolved for the user; (4) the stream
endpoint returns several events. The messages are the profile's `prompts.smoke`. A test whose value the
profile declares not exposed is "cannot verify" (unjudged, in the result's notes), never a failure.
"""

from __future__ import annotations

import asyncio

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.schemas.probe_records import ProbeRecord
from staging_validation.probes.result import ProbeResult, failure_line, judge, unverified_lines
from staging_validation.target.client import HEALTH_FEATURES, TargetClient

SMOKE_LOOP_INTERVAL_S = 300  # runbook: every 5 minutes during the first hour
RUNBOOK_HOUR_S = 3600
SMOKE_USER = "sv-smoke-user"


async def _smoke_round(
    client: TargetClient, timing: CampaignTiming, probe: str, at: float | None = None
) -> list[ProbeRecord]:
    """The four smoke tests, all scheduled at the same moment."""
    at = client.now() if at is None else at
    common = {"user": SMOKE_USER, "at": at}
    prompts, profile = client.profile.prompts.smoke, client.profile
    normal, ambiguous, relationship, stream = await asyncio.gather(
        client.chat(probe, timing, case="normal", message=prompts.normal, **common),
        client.chat(probe, timing, case="ambiguous", message=prompts.ambiguous, **common),
        client.chat(probe, timing, case="relationship", message=prompts.relationship, **common),
        client.stream(probe, timing, case="stream", message=prompts.stream, **common),
    )
    answer_paths = [p for p in ("record_id", "answer") if profile.not_exposed(f"extract.{p}") is None]
    judge(normal, _normal_answer_problem(normal, answer_paths),
          None if answer_paths else "; ".join(profile.not_exposed_anywhere("extract.answer")
                                              + profile.not_exposed_anywhere("extract.record_id")))
    ambiguous.expected_ambiguous = True
    judge(
        ambiguous,
        None
        if ambiguous.ambiguous
        else f"ambiguous prompt {prompts.ambiguous!r} not detected (verdict {ambiguous.ambiguous})",
        profile.not_exposed("extract.ambiguity"),
    )
    judge(
        relationship,
        None
        if relationship.relationship_type
        else "no relationship context resolved for the user (relationship_type absent)",
        profile.not_exposed("extract.relationship.relationship_type"),
    )
    minimum = client.profile.extract.sse.min_events
    judge(
        stream,
        None
        if (stream.sse_events or 0) >= minimum
        else f"stream returned {stream.sse_events or 0} events, expected at least {minimum}",
    )
    return [normal, ambiguous, relationship, stream]


def _normal_answer_problem(record: ProbeRecord, exposed: list[str]) -> str | None:
    missing = [name for name in exposed if not getattr(record, name)]
    if missing:
        return f"normal prompt: no {' and no '.join(missing)} in the response"
    if record.ambiguous:
        return "normal prompt was flagged ambiguous (got a clarification, not an answer)"
    return None


async def smoke_tests(client: TargetClient, timing: CampaignTiming) -> ProbeResult:
    """The four documented smoke tests, once, now."""
    records = await _smoke_round(client, timing, "smoke")
    failures = [failure_line(r) for r in records if r.passed is False]
    passed_count = sum(bool(r.passed) for r in records)
    return ProbeResult(
        probe="smoke",
        passed=not failures,
        records=records,
        failures=failures,
        summary={"tests_passed": passed_count, "tests_total": len(records),
                 "tests_unverified": sum(r.passed is None for r in records)},
        notes=unverified_lines(records),
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
        round_failures = [failure_line(r) for r in round_records if r.passed is False]
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
            "tests_unverified": sum(r.passed is None for r in records),
        },
        notes=unverified_lines(records),
    )


async def deploy_verification(client: TargetClient, timing: CampaignTiming) -> ProbeResult:
    """Health answers 200 with the four features enabled, then the four smoke tests.

    `passed` is False only for what failed; what the profile declares not exposed (a feature flag, the
    relationship context, a route) cannot be verified: it is in `notes` and does not fail the deploy.
    """
    health, features = await client.health("deploy", timing)
    profile = client.profile
    unexposed = [name for name in HEALTH_FEATURES
                 if profile.not_exposed(f"extract.health_features.{name}") is not None]
    disabled = [name for name, enabled in features.items() if enabled is not True and name not in unexposed]
    judge(
        health,
        None
        if not disabled
        else "features not enabled: "
        + ", ".join(f"{name} ({'absent' if features[name] is None else 'false'})" for name in disabled),
        # A feature that is exposed and off fails the deploy, whatever else could not be verified.
        None if disabled else "; ".join(profile.not_exposed_anywhere("extract.health_features")) or None,
    )
    smoke = await _smoke_round(client, timing, "deploy")
    records = [health, *smoke]
    failures = [failure_line(r) for r in records if r.passed is False]
    return ProbeResult(
        probe="deploy",
        passed=not failures,
        records=records,
        failures=failures,
        summary={
            "health_ok": health.outcome == "ok",
            "features": features,
            "features_not_exposed": unexposed,
            "smoke_tests_passed": sum(bool(r.passed) for r in smoke),
            "smoke_tests_total": len(smoke),
            "smoke_tests_unverified": sum(r.passed is None for r in smoke),
        },
        notes=unverified_lines(records),
    )
