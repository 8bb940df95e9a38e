"""The runbook's plan and the campaign clock's scheduling, without a daemon."""

from __future__ import annotations


import dagster as dg
import pytest

from staging_validation.campaign.sensors import due_run_requests
from staging_validation.campaigns import CampaignState, CampaignTiming
from staging_validation.plan import Phase, phase_for_hour

START_MS = 1_700_000_000_000


def state(status: str = "active", planned: int = 24, extension_hours: int = 0, **extra) -> CampaignState:
    return CampaignState(campaign="c1", created_at_ms=START_MS, timing=CampaignTiming(start_ms=START_MS, hour_seconds=10),
                         planned_hours=planned, status=status, extension_hours=extension_hours, **extra)


def at_hour(hours: float) -> float:
    return START_MS / 1000 + hours * 10


@pytest.mark.parametrize(
    ("hour", "phase"),
    [(0, Phase.DEPLOY), (1, Phase.SMOKE_LOOP), (2, Phase.PROMPT_SET), (6, Phase.PROMPT_SET), (7, Phase.STRESS),
     (8, Phase.OBSERVATION), (23, Phase.OBSERVATION), (24, Phase.EXTENSION), (71, Phase.EXTENSION)],
)
def test_each_hour_follows_the_runbook_plan(hour, phase):
    assert phase_for_hour(hour) is phase


def test_clock_requests_each_due_hour_once_with_tags():
    cursor: dict = {}
    first = due_run_requests([state()], cursor, now_s=at_hour(0.1))
    assert [r.run_key for r in first] == ["c1:hour:00"]
    assert first[0].tags["staging-validation/phase"] == "deploy"
    assert first[0].tags["staging-validation/hour-lane"] == "c1"
    assert first[0].partition_key == dg.MultiPartitionKey({"campaign": "c1", "hour": "00"})
    assert due_run_requests([state()], cursor, now_s=at_hour(0.9)) == []
    second = due_run_requests([state()], cursor, now_s=at_hour(1.0))
    assert [r.run_key for r in second] == ["c1:hour:01"]


def test_after_a_daemon_outage_the_clock_catches_up_in_order_without_duplicates():
    cursor: dict = {}
    due_run_requests([state()], cursor, now_s=at_hour(2.5))
    caught_up = due_run_requests([state()], cursor, now_s=at_hour(6.2))
    assert [r.run_key for r in caught_up] == [f"c1:hour:{h:02d}" for h in (3, 4, 5, 6)]
    # A lost cursor re-requests, but the run keys are the same, so the daemon launches nothing twice.
    replay = due_run_requests([state()], {}, now_s=at_hour(6.2))
    assert {r.run_key for r in replay} >= {r.run_key for r in caught_up}


def test_verdict_follows_the_last_hour_and_an_extension_adds_hours_then_a_second_verdict():
    cursor: dict = {}
    requests = due_run_requests([state()], cursor, now_s=at_hour(24.01))
    assert requests[-1].run_key == "c1:verdict:24" and requests[-1].job_name == "campaign_verdict"
    assert requests[-2].run_key == "c1:hour:23"
    assert due_run_requests([state()], cursor, now_s=at_hour(24.5)) == []
    extended = state(extension_hours=48, extension_count=1)
    during = due_run_requests([extended], cursor, now_s=at_hour(25.5))
    assert [r.run_key for r in during] == ["c1:hour:24", "c1:hour:25"]
    assert due_run_requests([extended], cursor, now_s=at_hour(72.0))[-1].run_key == "c1:verdict:72"


def test_an_early_stop_ends_hour_requests_and_requests_the_verdict_once():
    cursor: dict = {}
    due_run_requests([state()], cursor, now_s=at_hour(3.5))
    stopped = state(status="stopped", early_stop={"hour": 3, "gate": 1, "rule": "early_stop.missing_pack"})
    requests = due_run_requests([stopped], cursor, now_s=at_hour(5.0))
    assert [r.run_key for r in requests] == ["c1:verdict:early"]
    assert due_run_requests([stopped], cursor, now_s=at_hour(6.0)) == []
    assert due_run_requests([state(status="decided")], cursor, now_s=at_hour(30)) == []
