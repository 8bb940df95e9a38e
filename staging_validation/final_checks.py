"""The runbook's hour-24 identity and relationship tests, run at decision time (no Dagster import)."""

from __future__ import annotations

import asyncio

from staging_validation.acceptance.policy import campaign_policy
from staging_validation.campaign_target import target_client
from staging_validation.lifecycle import CampaignState
from staging_validation.probes.identity import determinism_check, identity_check
from staging_validation.probes.result import ProbeResult


async def _final_checks(state: CampaignState) -> list[ProbeResult]:
    # As many requests per user as gate 3 judges, so a stricter policy still gets its samples.
    requests_per_user = campaign_policy(state).gates.relationship_determinism.consecutive_requests
    async with target_client(state) as client:
        return [
            await identity_check(client, state.timing),
            await determinism_check(client, state.timing, requests_per_user=requests_per_user),
        ]


def run_final_checks(state: CampaignState) -> list[ProbeResult]:
    return asyncio.run(_final_checks(state))
