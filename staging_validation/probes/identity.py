"""Identity correctness (gate 5) and relationship determinism (gate 3), as the runbook checks them.

Identity: a new discord identity and a new sovereign identity must get different ids (the same id is an
accidental merge, the catastrophic failure), reverse lookups must return the right provider identities,
and linking a second provider to one user must work. Determinism: five consecutive requests by one user
must get the same relationship context.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from staging_validation.campaigns import CampaignTiming
from staging_validation.probes.records import ProbeRecord
from staging_validation.probes.result import ProbeResult, failure_line, judge

if TYPE_CHECKING:
    from staging_validation.target.client import TargetClient

DETERMINISM_REQUESTS = 5
DETERMINISM_PROMPT = "Good morning! What should I focus on today?"


def _lookup_problem(links: list[tuple[str, str]] | None, expected: set, unexpected: set) -> str | None:
    if links is None:
        return None  # the record already says why the list is unreadable
    found = set(links)
    missing = sorted(expected - found)
    wrong = sorted(unexpected & found)
    problems = []
    if missing:
        problems.append("missing " + ", ".join(f"{p}:{u}" for p, u in missing))
    if wrong:
        problems.append("wrongly lists " + ", ".join(f"{p}:{u}" for p, u in wrong))
    return "reverse lookup " + "; ".join(problems) if problems else None


async def identity_check(client: TargetClient, timing: CampaignTiming) -> ProbeResult:
    run = uuid.uuid4().hex[:10]  # fresh provider identities every run, so "new" really is new
    discord = ("discord", f"sv-discord-{run}")
    sovereign = ("sovereign", f"sv-sovereign-{run}")
    astralis = ("astralis", f"sv-astralis-{run}")
    records: list[ProbeRecord] = []

    async def create(case: str, identity: tuple[str, str]) -> ProbeRecord:
        record = await client.identity_create(
            "identity", timing, case=case, provider=identity[0], provider_user_id=identity[1]
        )
        judge(record, None if record.vi_user_id else "no identity id in the response")
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
        resolved = await client.identity_resolve(
            "identity", timing, case="resolve_discord", provider=discord[0], provider_user_id=discord[1]
        )
        judge(
            resolved,
            None
            if resolved.vi_user_id == discord_id
            else f"resolving discord {discord[1]} gave {resolved.vi_user_id}, created as {discord_id}",
        )
        records.append(resolved)

    lookups_ok = True
    for case, user_id, own, other in (
        ("lookup_discord", discord_id, discord, sovereign),
        ("lookup_sovereign", sovereign_id, sovereign, discord),
    ):
        if not user_id or merged:
            continue
        record, links = await client.identity_lookup("identity", timing, case=case, vi_user_id=user_id)
        lookups_ok &= judge(record, _lookup_problem(links, {own}, {other}))
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
            link_ok = judge(after, _lookup_problem(links, {discord, astralis}, {sovereign}))
            records.append(after)

    failures = [failure_line(r) for r in records if not r.passed]
    return ProbeResult(
        probe="identity",
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


async def determinism_check(client: TargetClient, timing: CampaignTiming) -> ProbeResult:
    user = f"sv-determinism-{uuid.uuid4().hex[:10]}"
    records = []
    for number in range(1, DETERMINISM_REQUESTS + 1):
        record = await client.chat(
            "determinism", timing, case=f"request_{number}", user=user, message=DETERMINISM_PROMPT
        )
        records.append(record)
    first_context = next((_context(r) for r in records if r.relationship_type), None)
    for record in records:
        if not record.relationship_type:
            judge(record, "no relationship context in the response")
        elif _context(record) != first_context:
            judge(record, f"relationship context {_context(record)} differs from the first {first_context}")
        else:
            judge(record, None)
    contexts = sorted({"/".join(str(v) for v in _context(r)) for r in records if r.relationship_type})
    failures = [failure_line(r) for r in records if not r.passed]
    return ProbeResult(
        probe="determinism",
        passed=not failures,
        records=records,
        failures=failures,
        summary={"user": user, "requests": len(records), "distinct_contexts": len(contexts), "contexts": contexts},
    )
