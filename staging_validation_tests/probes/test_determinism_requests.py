"""The determinism probe sends as many consecutive requests per user as gate 3's policy counts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pandas as pd

from staging_validation.acceptance.gates import evaluate_gates
from staging_validation.acceptance.policy import Policy
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.probes.identity import determinism_check
from staging_validation.schemas.probe_records import ProbeRecord, records_to_table
from staging_validation.target.profile import load_target_profile
from staging_validation_tests.acceptance.acceptance_tables import events

TIMING = CampaignTiming(start_ms=1_700_000_000_000, hour_seconds=3600)
USERS = ("sv-determinism-a", "sv-determinism-b")


class SameContextClient:
    """Answers every chat with one relationship context, as a deterministic target does."""

    profile = load_target_profile()

    async def chat(self, probe: str, timing: CampaignTiming, *, case: str, user: str, message: str) -> ProbeRecord:
        return ProbeRecord(time=datetime.now(UTC), campaign_s=0.0, probe=probe, case=case, user=user,
                           route="/v1/chat", method="POST", outcome="ok", latency_ms=5.0, http_status=200,
                           relationship_type="owner", voice_profile="warm", trust_level="high")


def determinism_rows(**options) -> pd.DataFrame:
    result = asyncio.run(determinism_check(SameContextClient(), TIMING, users=USERS, **options))
    return records_to_table(result.records).to_pandas().assign(hour=24)


def gate3(records: pd.DataFrame, policy: Policy):
    return evaluate_gates(records, events([]), policy)[2]


def test_a_tightened_policy_gets_the_consecutive_requests_it_counts():
    policy = Policy.model_validate({"gates": {"relationship_determinism": {"consecutive_requests": 7}}})
    count = policy.gates.relationship_determinism.consecutive_requests
    rows = determinism_rows(requests_per_user=count)
    assert rows.groupby("user").size().to_dict() == dict.fromkeys(USERS, 7)
    result = gate3(rows, policy)
    assert result.metrics["probe_users_checked"] == len(USERS)
    # Without relationship telemetry the gate still waits for data, but no longer for probe users.
    assert result.rule == "gate3.no_telemetry"


def test_without_a_count_the_probe_sends_what_the_default_policy_counts():
    rows = determinism_rows()
    default = Policy().gates.relationship_determinism.consecutive_requests
    assert rows.groupby("user").size().to_dict() == dict.fromkeys(USERS, default)
    assert gate3(rows, Policy()).metrics["probe_users_checked"] == len(USERS)
