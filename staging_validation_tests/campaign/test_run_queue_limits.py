"""The run queue of dagster.yaml with Dagster's own dequeue logic: which queued runs start next.

The runs carry the tags the daemon gives them (the clock's run requests merged with their job's tags);
the choice is the QueuedRunCoordinatorDaemon's, over an instance with the repository's run_coordinator.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from staging_validation.campaign.sensors import RunProgress, due_run_requests
from staging_validation.definitions import defs
from staging_validation.lifecycle import CampaignState, CampaignStatus
from staging_validation.schemas.timing import CampaignTiming

REPO = Path(__file__).resolve().parents[2]
START_MS = 1_700_000_000_000
HOUR_S = 10
RUN_COORDINATOR = yaml.safe_load((REPO / "dagster.yaml").read_text())["run_coordinator"]
MAX_CONCURRENT_RUNS = RUN_COORDINATOR["config"]["max_concurrent_runs"]


def requested_tags(campaign: str, now_hours: float, done_hours: int = 0,
                   status: CampaignStatus = CampaignStatus.RUNNING) -> dict[str, dict[str, str]]:
    """Run key → tags of every run the clock requests for this campaign by `now_hours` (its collector not
    yet requested, every hour collected)."""
    state = CampaignState(campaign=campaign, created_at_ms=START_MS, planned_hours=2, status=status,
                          timing=CampaignTiming(start_ms=START_MS, hour_seconds=HOUR_S))
    cursor = {campaign: {"next_ingest_hour": done_hours, "verdicts": []}}
    requests = due_run_requests([state], cursor, lambda key: RunProgress.NOT_REQUESTED, lambda state, hour: True,
                                now_s=START_MS / 1000 + now_hours * HOUR_S)
    return {str(request.run_key): {**defs.resolve_job_def(str(request.job_name)).tags, **request.tags}
            for request in requests}


def next_to_start(instance: dg.DagsterInstance) -> list[str]:
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    chosen = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), fixed_iteration_time=None)
    return [run.tags["key"] for run in chosen]


def add_run(instance: dg.DagsterInstance, key: str, tags: dict[str, str], status: dg.DagsterRunStatus) -> None:
    job_name = key.split(":")[1]
    repository = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("staging_validation"), "__repository__")
    origin = RemoteJobOrigin(repository, job_name)
    create_run_for_test(instance, job_name=job_name, status=status, tags={**tags, "key": key}, remote_job_origin=origin)


def test_a_wedged_campaign_with_a_pile_of_queued_runs_holds_up_no_other_campaign():
    with dg.instance_for_test(overrides={"run_coordinator": RUN_COORDINATOR}) as instance:
        wedged = requested_tags("wedged", now_hours=1.0)
        collector_tags = wedged["wedged:collector:2"]
        # Its collector and hour runs hang, and 48 more of its runs wait behind them.
        add_run(instance, "wedged:collector:2", collector_tags, dg.DagsterRunStatus.STARTED)
        add_run(instance, "wedged:hour:00", wedged["wedged:hour:00"], dg.DagsterRunStatus.STARTED)
        for index in range(48):
            add_run(instance, f"wedged:retry-{index}", collector_tags, dg.DagsterRunStatus.QUEUED)
        healthy = [f"healthy-{index}" for index in range(3)]
        for campaign in healthy:
            key = f"{campaign}:collector:2"
            add_run(instance, key, requested_tags(campaign, 0.0, status=CampaignStatus.REGISTERED)[key],
                    dg.DagsterRunStatus.QUEUED)
        assert next_to_start(instance) == [f"{campaign}:collector:2" for campaign in healthy]


def test_a_campaign_holds_at_most_three_slots_whatever_launched_its_runs():
    with dg.instance_for_test(overrides={"run_coordinator": RUN_COORDINATOR}) as instance:
        tags = requested_tags("busy", now_hours=1.0)
        add_run(instance, "busy:collector:2", tags["busy:collector:2"], dg.DagsterRunStatus.STARTED)
        add_run(instance, "busy:hour:00", tags["busy:hour:00"], dg.DagsterRunStatus.STARTED)
        add_run(instance, "busy:notify:00", {"staging-validation/campaign": "busy"}, dg.DagsterRunStatus.STARTED)
        # A hand-launched re-execution keeps the campaign tag but belongs to no lane.
        add_run(instance, "busy:manual:00", {"staging-validation/campaign": "busy"}, dg.DagsterRunStatus.QUEUED)
        key = "other:collector:2"
        add_run(instance, key, requested_tags("other", 0.0, status=CampaignStatus.REGISTERED)[key],
                dg.DagsterRunStatus.QUEUED)
        assert next_to_start(instance) == [key]


def test_when_slots_are_short_collectors_start_first_then_the_hour_lane_then_runs_launched_by_hand():
    with dg.instance_for_test(overrides={"run_coordinator": RUN_COORDINATOR}) as instance:
        # Every slot but two is taken by runs of other campaigns.
        for index in range(MAX_CONCURRENT_RUNS - 2):
            add_run(instance, f"filler-{index}:collector:2", {}, dg.DagsterRunStatus.STARTED)
        # Queued in the worst order: a run launched by hand, a verdict, and the collector last.
        add_run(instance, "a:manual:00", {}, dg.DagsterRunStatus.QUEUED)
        verdict = requested_tags("b", now_hours=2.0, done_hours=2)["b:verdict:2"]
        add_run(instance, "b:verdict:2", verdict, dg.DagsterRunStatus.QUEUED)
        key = "c:collector:2"
        add_run(instance, key, requested_tags("c", 0.0, status=CampaignStatus.REGISTERED)[key],
                dg.DagsterRunStatus.QUEUED)
        assert next_to_start(instance) == [key, "b:verdict:2"]


def test_a_verdict_never_overtakes_the_ingestion_of_its_last_hour():
    with dg.instance_for_test(overrides={"run_coordinator": RUN_COORDINATOR}) as instance:
        tags = requested_tags("a", now_hours=2.0, done_hours=1)
        assert [key for key in tags if ":collector:" not in key] == ["a:hour:01", "a:verdict:2"]
        for key in ("a:hour:01", "a:verdict:2"):
            add_run(instance, key, tags[key], dg.DagsterRunStatus.QUEUED)
        assert next_to_start(instance) == ["a:hour:01"]
