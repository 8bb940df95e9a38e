"""The runbook's plan and the campaign clock's scheduling, without a daemon."""

from __future__ import annotations

import dagster as dg
import pytest

from staging_validation.campaign.sensors import RunProgress, due_run_requests
from staging_validation.lifecycle import CampaignState, EarlyStop
from staging_validation.plan import Phase, ProbeStep, phase_for_hour, plan_for_hour
from staging_validation.schemas.timing import CampaignTiming

START_MS = 1_700_000_000_000


def state(status: str = "running", planned: int = 24, extension_hours: int = 0, **extra) -> CampaignState:
    timing = CampaignTiming(start_ms=START_MS, hour_seconds=10)
    return CampaignState(campaign="c1", created_at_ms=START_MS, timing=timing, planned_hours=planned, status=status,
                         extension_hours=extension_hours, **extra)


def at_hour(hours: float) -> float:
    return START_MS / 1000 + hours * 10


@pytest.mark.parametrize(
    ("hour", "phase"),
    [(0, Phase.DEPLOY), (1, Phase.SMOKE_LOOP), (2, Phase.PROMPT_SET), (6, Phase.PROMPT_SET), (7, Phase.STRESS),
     (8, Phase.OBSERVATION), (23, Phase.OBSERVATION), (24, Phase.EXTENSION), (71, Phase.EXTENSION)],
)
def test_each_hour_follows_the_runbook_plan(hour, phase):
    assert phase_for_hour(hour) is phase


def test_every_hour_starts_with_the_identity_watch_then_its_phase_probe():
    assert plan_for_hour(0).steps == (ProbeStep.IDENTITY_WATCH, ProbeStep.DEPLOY_VERIFICATION)
    assert plan_for_hour(1).steps == (ProbeStep.IDENTITY_WATCH, ProbeStep.SMOKE_LOOP)
    assert plan_for_hour(4).steps == (ProbeStep.IDENTITY_WATCH, ProbeStep.PROMPT_SET)
    assert plan_for_hour(7).steps == (ProbeStep.IDENTITY_WATCH, ProbeStep.STRESS)
    assert plan_for_hour(12).steps == plan_for_hour(30).steps == (ProbeStep.IDENTITY_WATCH,)


class Runs:
    """What the clock asks the instance and the data root: the progress of a run key, and whether an hour's
    probe steps are all recorded."""

    def __init__(self, progress: dict[str, RunProgress] | None = None, uncollected: set[int] = frozenset()):
        self.progress = progress or {}
        self.uncollected = uncollected

    def due(self, states, cursor, now_hours) -> list[str]:
        return [r.run_key for r in self.requests(states, cursor, now_hours)]

    def requests(self, states, cursor, now_hours) -> list[dg.RunRequest]:
        return due_run_requests(states, cursor, lambda key: self.progress.get(key, RunProgress.NOT_REQUESTED),
                                lambda state, hour: hour not in self.uncollected, now_s=at_hour(now_hours))


COLLECTING = {"c1:collector:24": RunProgress.IN_PROGRESS}


def test_a_registered_campaign_gets_its_collector_and_nothing_else_until_the_collector_starts_the_clock():
    (collector,) = Runs().requests([state(status="registered")], {}, 3.0)
    assert collector.run_key == "c1:collector:24" and collector.job_name == "campaign_collector"
    assert collector.run_config == {"ops": {"collect_probe_steps": {"config": {"campaign": "c1"}}}}
    assert collector.tags["staging-validation/collector-lane"] == "c1"
    # However late the launch: no hour is due while the campaign clock has not started.
    assert Runs(COLLECTING).due([state(status="registered")], {}, 5.0) == []


def test_ingestion_follows_the_end_of_each_hour_once_its_steps_are_recorded():
    cursor: dict = {}
    runs = Runs(COLLECTING)
    assert runs.due([state()], cursor, 0.5) == []
    (ingest,) = runs.requests([state()], cursor, 1.0)
    assert ingest.run_key == "c1:hour:00" and ingest.job_name == "campaign_hour"
    assert ingest.partition_key == dg.MultiPartitionKey({"campaign": "c1", "hour": "00"})
    assert ingest.tags["staging-validation/hour-lane"] == "c1"
    # A step still running past its hour's end (a stress test finishing) holds the hour back.
    assert Runs(COLLECTING, uncollected={1}).due([state()], cursor, 2.1) == []
    assert runs.due([state()], cursor, 2.2) == ["c1:hour:01"]


def test_a_dead_collector_is_requested_again_while_its_round_lasts_and_its_hours_are_then_ingested():
    cursor: dict = {}
    died = Runs({"c1:collector:24": RunProgress.ENDED_OTHERWISE}, uncollected={0, 1, 2})
    # Not waiting for steps no collector will record: the hours are ingested as they are (gaps).
    assert died.due([state()], cursor, 3.5) == ["c1:collector:24:attempt-2", "c1:hour:00", "c1:hour:01", "c1:hour:02"]
    done = Runs({"c1:collector:24": RunProgress.SUCCEEDED})
    assert done.due([state()], {}, 5.0)[0] == "c1:hour:00"
    assert "c1:collector:24:attempt-2" not in done.due([state()], {}, 5.0)


def test_after_a_daemon_outage_ended_hours_are_ingested_in_order_with_the_same_run_keys():
    cursor: dict = {}
    runs = Runs(COLLECTING)
    runs.due([state()], cursor, 2.5)
    caught_up = runs.due([state()], cursor, 6.2)
    assert caught_up == ["c1:hour:02", "c1:hour:03", "c1:hour:04", "c1:hour:05"]
    # A lost cursor re-requests, but with the same run keys, so the daemon launches nothing twice.
    assert set(runs.due([state()], {}, 6.2)) >= set(caught_up)


def test_verdict_follows_the_last_hour_and_an_extension_gets_a_collector_then_a_second_verdict():
    cursor: dict = {}
    runs = Runs(COLLECTING)
    runs.due([state()], cursor, 23.5)
    assert runs.due([state()], cursor, 24.01) == ["c1:hour:23", "c1:verdict:24"]
    assert runs.due([state()], cursor, 24.5) == []
    extended = state(extension_hours=48, extension_count=1)
    assert runs.due([extended], cursor, 25.5) == ["c1:collector:72", "c1:hour:24"]
    round_collected = Runs({**COLLECTING, "c1:collector:72": RunProgress.SUCCEEDED})
    assert round_collected.due([extended], cursor, 72.0)[-1] == "c1:verdict:72"


def test_an_early_stop_ingests_up_to_the_stop_then_requests_the_verdict_once():
    cursor: dict = {}
    runs = Runs(COLLECTING)
    runs.due([state()], cursor, 3.5)
    stopped = state(status="stopped", early_stop=EarlyStop(
        hour=3, gate=1, rule="early_stop.missing_pack", first_seen="2023-11-14T22:13:50+00:00", reason="missing"))
    # The collector is finishing the stopped hour's step: its rows belong to the hour.
    assert Runs(COLLECTING, uncollected={3}).due([stopped], cursor, 3.6) == []
    assert runs.due([stopped], cursor, 3.7) == ["c1:hour:03", "c1:verdict:early"]
    assert runs.due([stopped], cursor, 6.0) == []
    assert runs.due([state(status="decided")], cursor, 30) == []


def test_an_early_stop_after_the_round_verdict_was_requested_leaves_that_run_to_judge_it():
    cursor: dict = {}
    runs = Runs(COLLECTING)
    runs.due([state(planned=6)], cursor, 5.5)
    assert runs.due([state(planned=6)], cursor, 6.01) == ["c1:hour:05", "c1:verdict:6"]
    # The watch, lagging, stops the campaign at hour 3 while that verdict run waits in the queue.
    stopped = state(status="stopped", planned=6, early_stop=EarlyStop(
        hour=3, gate=1, rule="early_stop.missing_pack", first_seen="2023-11-14T22:13:50+00:00", reason="missing"))
    queued = Runs({**COLLECTING, "c1:verdict:6": RunProgress.IN_PROGRESS})
    assert queued.due([stopped], cursor, 6.2) == []
    # Should that run end without deciding, the early round gets its own verdict run, once.
    failed = Runs({**COLLECTING, "c1:verdict:6": RunProgress.ENDED_OTHERWISE})
    assert failed.due([stopped], cursor, 6.5) == ["c1:verdict:early"]
    assert failed.due([stopped], cursor, 6.6) == []
