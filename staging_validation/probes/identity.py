"""Identity correctness (gate 5) and relationship determinism (gate 3), as the runbook checks them.

Identity: a new discord identity and a new sovereign identity must get different ids (the same id is an
accidental merge, the catastrophic failure), reverse lookups must return the right provider identities,
and linking a second provider to one user must work. Determinism: consecutive requests by one user (as
many as gate 3's policy asks, 5 by default) must get the same relationship context (checked for several users).
The determinism message is the profile's `prompts.determinism`. A determinism run in which no request
returned a context has no verdict (`consistent` None), never "consistent"; an identity check whose route or
value the profile declares not exposed cannot be verified (unjudged, in the result's notes).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.schemas.probe_records import ProbeRecord
from staging_validation.probes.result import ProbeResult, failure_line, judge, unverified_lines
from staging_validation.target.client import TargetClient

DETERMINISM_USERS = tuple(f"sv-determinism-{n:02d}" for n in range(1, 11))


def _lookup_problem(links: list[tuple[str, str]] | None, expected: set[tuple[str, str]]) -> str | None:
    """Why a reverse lookup is wrong: a fresh user must list exactly its own provider identities.

    An extra entry means another identity was merged into this user, however it got there.
    """
    if links is None:
        return None  # the record already says why the list is unreadable
    found = set(links)
    problems = []
    if missing := sorted(expected - found):
        problems.append("missing " + ", ".join(f"{p}:{u}" for p, u in missing))
    if extra := sorted(found - expected):
        problems.append("also lists " + ", ".join(f"{p}:{u}" for p, u in extra) + " (merged identities)")
    return "reverse lookup " + "; ".join(problems) if problems else None


async def identity_check(client: TargetClient, timing: CampaignTiming) -> ProbeResult:
    run = uuid.uuid4().hex[:10]  # fresh provider identities every run, so "new" really is new
    discord = ("discord", f"sv-discord-{run}")
    sovereign = ("sovereign", f"sv-sovereign-{run}")
    astralis = ("astralis", f"sv-astralis-{run}")
    records: list[ProbeRecord] = []
    identity_id_unexposed = client.profile.not_exposed("extract.identity_id")

    async def create(case: str, identity: tuple[str, str]) -> ProbeRecord:
        record = await client.identity_for_provider(
            "identity_create", "identity", timing, case=case, provider=identity[0], provider_user_id=identity[1]
        )
        judge(record, None if record.vi_user_id else "no identity id in the response", identity_id_unexposed)
        records.append(record)
        return record

    discord_record = await create("create_discord", discord)
    sovereign_record = await create("create_sovereign", sovereign)
    discord_id, sovereign_id = discord_record.vi_user_id, sovereign_record.vi_user_id
    merged = bool(discord_id) and discord_id == sovereign_id
    if merged:
        judge(
            sovereign_record,
            f"accidental merge: discord {discord[1]} and sovereign {sovereign[1]} both got id {discord_id}",
        )

    if discord_id:
        resolved = await client.identity_for_provider(
            "identity_resolve", "identity", timing, case="resolve_discord", provider=discord[0],
            provider_user_id=discord[1],
        )
        judge(
            resolved,
            None
            if resolved.vi_user_id == discord_id
            else f"resolving discord {discord[1]} gave {resolved.vi_user_id}, created as {discord_id}",
        )
        records.append(resolved)

    lookups_ok = True
    for case, user_id, own in (
        ("lookup_discord", discord_id, discord),
        ("lookup_sovereign", sovereign_id, sovereign),
    ):
        if not user_id or merged:
            continue
        record, links = await client.identity_lookup("identity", timing, case=case, vi_user_id=user_id)
        lookups_ok &= judge(record, _lookup_problem(links, {own}), client.profile.not_exposed("extract.links"))
        records.append(record)

    link_ok = False
    if discord_id:
        link = await client.identity_link(
            "identity",
            timing,
            case="link_astralis",
            vi_user_id=discord_id,
            provider=astralis[0],
            provider_user_id=astralis[1],
        )
        records.append(link)
        if judge(link, None):
            after, links = await client.identity_lookup(
                "identity", timing, case="lookup_after_link", vi_user_id=discord_id
            )
            link_ok = judge(after, _lookup_problem(links, {discord, astralis}),
                            client.profile.not_exposed("extract.links"))
            records.append(after)

    failures = [failure_line(r) for r in records if r.passed is False]
    return ProbeResult(
        probe="identity",
        notes=unverified_lines(records),
        passed=not failures,
        records=records,
        failures=failures,
        summary={
            "ids_distinct": bool(discord_id and sovereign_id) and not merged,
            "merged": merged,
            "reverse_lookup_ok": lookups_ok and not merged and bool(discord_id and sovereign_id),
            "link_ok": link_ok,
        },
    )


def _context(record: ProbeRecord) -> tuple[str | None, str | None, str | None]:
    return (record.relationship_type, record.voice_profile, record.trust_level)


def _judge_consistency(records: list[ProbeRecord], not_exposed: str | None) -> set[tuple]:
    """Judge one user's requests against the first context seen; the distinct contexts seen."""
    first_context = next((_context(r) for r in records if r.relationship_type), None)
    for record in records:
        if not record.relationship_type:
            judge(record, "no relationship context in the response", not_exposed)
        elif _context(record) != first_context:
            judge(record, f"relationship context {_context(record)} differs from the first {first_context}")
        else:
            judge(record, None)
    return {_context(r) for r in records if r.relationship_type}


# Gate 3's default sample per user (the policy's `consecutive_requests` defaults to it): the runbook's
# "pick one user, run 5 requests".
DEFAULT_CONSECUTIVE_REQUESTS = 5


async def determinism_check(
    client: TargetClient,
    timing: CampaignTiming,
    users: Sequence[str] = DETERMINISM_USERS,
    requests_per_user: int = DEFAULT_CONSECUTIVE_REQUESTS,
) -> ProbeResult:
    """Each user sends `requests_per_user` consecutive requests (users in parallel); each must always get
    one context. Gate 3 counts a user only with the policy's `consecutive_requests`, so pass that.

    The runbook picks one user; several stable users make a fault that affects only some users far
    more likely to be seen, and stable names let a campaign compare a user's context across hours.
    """

    message = client.profile.prompts.determinism
    not_exposed = client.profile.not_exposed("extract.relationship.relationship_type")

    async def consecutive(user: str) -> list[ProbeRecord]:
        return [
            await client.chat("determinism", timing, case=f"request_{n}", user=user, message=message)
            for n in range(1, requests_per_user + 1)
        ]

    per_user = await asyncio.gather(*(consecutive(user) for user in users))
    contexts = {user: _judge_consistency(records, not_exposed) for user, records in zip(users, per_user, strict=True)}
    records = [record for user_records in per_user for record in user_records]
    failures = [f"{r.user} {failure_line(r)}" for r in records if r.passed is False]
    with_context = sum(r.relationship_type is not None for r in records)
    # No context at all is no evidence (e.g. the message was answered by a path that skips relationship
    # resolution): "0 users inconsistent" would read as a pass.
    measured = with_context > 0
    return ProbeResult(
        probe="determinism",
        passed=not failures,
        records=records,
        failures=failures,
        summary={
            "users": len(users),
            "requests": len(records),
            "requests_with_context": with_context,
            "consistent": (not any(len(seen) > 1 for seen in contexts.values())) if measured else None,
            "users_inconsistent": sum(len(seen) > 1 for seen in contexts.values()) if measured else None,
            "no_data_reason": None if measured else (
                not_exposed or f"none of the {len(records)} requests ({message!r}) returned a relationship "
                "context"),
            "contexts": {user: sorted("/".join(map(str, c)) for c in seen) for user, seen in contexts.items()},
        },
        notes=unverified_lines(records),
    )
