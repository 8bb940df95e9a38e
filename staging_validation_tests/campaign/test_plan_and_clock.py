"""The runbook's plan and the campaign clock's scheduling, without a daemon."""

from __future__ import annotations


import dagster as dg
import pytest

from staging_validation.campaign.sensors import due_run_requests
from staging_validation.lifecycle import CampaignState, EarlyStop
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.plan import Phase, phase_for_hour

START_MS = 1_700_000_000_000


def state(status: str = "running", planned: int = 24, extension_hours: int = 0, **extra) -> CampaignState:
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


def due(states, cursor, now_hours, unfinished_probe_runs=()):
    return [r.run_key for r in due_run_requests(states, cursor, lambda key: key not in unfinished_probe_runs,
                                                 now_s=at_hour(now_hours))]


def test_probes_start_with_their_hour_and_ingestion_follows_its_end():
    cursor: dict = {}
    (first,) = due_run_requests([state()], cursor, lambda key: True, now_s=at_hour(0.1))
    assert first.run_key == "c1:probes:00" and first.job_name == "campaign_probes"
    assert first.tags["staging-validation/phase"] == "deploy"
    assert first.tags["staging-validation/probe-lane"] == "c1"
    assert first.partition_key == dg.MultiPartitionKey({"campaign": "c1", "hour": "00"})
    assert due([state()], cursor, 0.9) == []
    probes, ingest = due_run_requests([state()], cursor, lambda key: True, now_s=at_hour(1.0))
    assert (probes.run_key, ingest.run_key) == ("c1:probes:01", "c1:hour:00")
    assert ingest.job_name == "campaign_hour" and ingest.tags["staging-validation/hour-lane"] == "c1"


def test_ingestion_waits_for_the_hours_probe_run_to_finish():
    cursor: dict = {}
    due([state()], cursor, 1.5)
    assert due([state()], cursor, 2.1, unfinished_probe_runs={"c1:probes:01"}) == ["c1:probes:02"]
    assert due([state()], cursor, 2.2) == ["c1:hour:01"]


def test_after_a_daemon_outage_past_hours_are_ingested_in_order_but_not_probed_late():
    cursor: dict = {}
    due([state()], cursor, 2.5)
    caught_up = due([state()], cursor, 6.2)
    # Probing an hour that is over would misattribute its traffic: those hours are gaps.
    assert caught_up == ["c1:probes:06", "c1:hour:02", "c1:hour:03", "c1:hour:04", "c1:hour:05"]
    # A lost cursor re-requests, but with the same run keys, so the daemon launches nothing twice.
    assert set(due([state()], {}, 6.2)) >= {key for key in caught_up if ":hour:" in key}


def test_verdict_follows_the_last_hour_and_an_extension_adds_hours_then_a_second_verdict():
    cursor: dict = {}
    due([state()], cursor, 23.5)
    assert due([state()], cursor, 24.01) == ["c1:hour:23", "c1:verdict:24"]
    assert due([state()], cursor, 24.5) == []
    extended = state(extension_hours=48, extension_count=1)
    assert due([extended], cursor, 25.5) == ["c1:probes:25", "c1:hour:24"]
    assert due([extended], cursor, 72.0)[-1] == "c1:verdict:72"


def test_an_early_stop_ingests_up_to_the_stop_then_requests_the_verdict_once():
    cursor: dict = {}
    due([state()], cursor, 3.5)
    stopped = state(status="stopped", early_stop=EarlyStop(
        hour=3, gate=1, rule="early_stop.missing_pack", first_seen="2023-11-14T22:13:50+00:00", reason="missing"))
    assert due([stopped], cursor, 3.6, unfinished_probe_runs={"c1:probes:03"}) == []
    assert due([stopped], cursor, 3.7) == ["c1:hour:03", "c1:verdict:early"]
    assert due([stopped], cursor, 6.0) == []
    assert due([state(status="decided")], cursor, 30) == []
