"""The campaign clock: requests each campaign's collector, its hour runs and verdicts when due."""


import json
import math
import os
from collections.abc import Callable
from enum import StrEnum

import dagster as dg

from staging_validation.campaign.jobs import campaign_collector, campaign_hour_job, campaign_verdict_job
from staging_validation.campaign.partitions import campaign_hour_key
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.run_tags import (
    COLLECTOR_PHASE,
    TAG_CAMPAIGN,
    TAG_COLLECTOR_LANE,
    TAG_HOUR,
    TAG_HOUR_LANE,
    TAG_PHASE,
    TAG_ROUND,
    VERDICT_PHASE,
)
from staging_validation.collection.recorded_steps import hour_outcomes
from staging_validation.collection.validator_gaps import makeup_for_hour
from staging_validation.config_files import ConfigError
from staging_validation.lifecycle import CampaignState, CampaignStatus
from staging_validation.plan import plan_for_hour
from staging_validation.schemas.timing import hour_key

SENSOR_INTERVAL_ENV = "STAGING_VALIDATION_SENSOR_INTERVAL_S"


def sensor_interval_s() -> int:
    """Seconds between ticks of both sensors, 5 unless the environment says otherwise. Ticks are cheap when
    nothing is due, so both sensors tick often; a compressed rehearsal needs it."""
    configured = os.environ.get(SENSOR_INTERVAL_ENV, "5")
    try:
        seconds = int(configured)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise ConfigError(f"{SENSOR_INTERVAL_ENV}={configured!r}: give a whole number of seconds, at least 1")
    return seconds


SENSOR_INTERVAL_S = sensor_interval_s()

# A collector that dies (killed, crashed) is requested again while its round lasts, this many times at most.
MAX_COLLECTOR_ATTEMPTS = 5
RUN_MONITORING_SLACK_S = 600


class RunProgress(StrEnum):
    NOT_REQUESTED = "not_requested"
    IN_PROGRESS = "in_progress"  # queued, launching or running
    SUCCEEDED = "succeeded"
    ENDED_OTHERWISE = "ended_otherwise"  # failed or canceled


def collector_run_key(campaign: str, round_name: str, attempt: int) -> str:
    base = f"{campaign}:collector:{round_name}"
    return base if attempt == 1 else f"{base}:attempt-{attempt}"


def _run_tags(state: CampaignState, lane: str, phase: str, max_runtime_s: float) -> dict[str, str]:
    return {
        TAG_CAMPAIGN: state.campaign,
        TAG_PHASE: phase,
        lane: state.campaign,
        # Run monitoring ends a run stuck well past its time.
        "dagster/max_runtime": str(int(max_runtime_s + RUN_MONITORING_SLACK_S)),
    }


def _hour_request(state: CampaignState, hour: int) -> dg.RunRequest:
    phase = plan_for_hour(hour, state.planned_hours).phase.value
    return dg.RunRequest(
        run_key=f"{state.campaign}:hour:{hour_key(hour)}",
        job_name=campaign_hour_job.name,
        partition_key=campaign_hour_key(state.campaign, hour),
        tags={**_run_tags(state, TAG_HOUR_LANE, phase, state.timing.hour_seconds * 2), TAG_HOUR: hour_key(hour)},
    )


def _collector_request(state: CampaignState, round_name: str, attempt: int, now_hour: int) -> dg.RunRequest:
    started = state.status is not CampaignStatus.REGISTERED
    hours_left = state.total_hours - (max(now_hour, 0) if started else 0)
    remaining_s = hours_left * state.timing.hour_seconds
    return dg.RunRequest(
        run_key=collector_run_key(state.campaign, round_name, attempt),
        job_name=campaign_collector.name,
        run_config={"ops": {"collect_probe_steps": {"config": {"campaign": state.campaign}}}},
        tags={**_run_tags(state, TAG_COLLECTOR_LANE, COLLECTOR_PHASE, remaining_s), TAG_ROUND: round_name},
    )


def _collector_due(state: CampaignState, round_name: str, now_hour: int,
                   run_progress: Callable[[str], RunProgress]) -> tuple[dg.RunRequest | None, bool]:
    """(the collector run to request, if any; whether a collector is in progress) for an active round."""
    for attempt in range(1, MAX_COLLECTOR_ATTEMPTS + 1):
        progress = run_progress(collector_run_key(state.campaign, round_name, attempt))
        if progress is RunProgress.IN_PROGRESS:
            return None, True
        if progress is RunProgress.SUCCEEDED:
            return None, False  # a collector only succeeds once its round is collected
        if progress is RunProgress.NOT_REQUESTED:
            return _collector_request(state, round_name, attempt, now_hour), False
    return None, False


def due_run_requests(states: list[CampaignState], cursor: dict, run_progress: Callable[[str], RunProgress],
                     hour_collected: Callable[[CampaignState, int], bool],
                     now_s: float | None = None) -> list[dg.RunRequest]:
    """Every run that is due and not yet requested; updates `cursor` in place.

    - the collector of a verdict round as soon as the round is registered (the first one starts the
      campaign clock; each waits for its hours' starts itself), again if it dies while the round lasts;
    - the ingestion of an hour once it has ended (or the campaign stopped) and its probe steps are
      recorded, or no collector is at work any more (what is missing is then a gap);
    - the verdict once every hour of the round is requested (same lane: it runs after them), or at
      once after an early stop, over the hours up to the stop.
    Run keys make each request happen once even if the cursor is lost; after a daemon outage the first
    tick requests every ingestion that became due meanwhile, in order.
    """
    requests = []
    for state in states:
        if state.status.final:
            continue
        progress = cursor.setdefault(state.campaign, {"next_ingest_hour": 0, "verdicts": []})
        now_hour = math.floor(state.timing.campaign_seconds(now_s) / 3600)
        round_name = str(state.total_hours)
        collector, collector_at_work = _collector_due(state, round_name, now_hour, run_progress)
        if state.status is CampaignStatus.REGISTERED:  # its collector starts the campaign clock: nothing else is due
            requests += [collector] if collector else []
            continue
        if state.status.collecting:
            if collector is not None and now_hour < state.total_hours:
                requests.append(collector)
            last_ingest = min(now_hour - 1, state.total_hours - 1)
        else:
            last_ingest = state.stopped_at_hour if state.stopped_at_hour is not None else -1
            round_name = "early"
        while progress["next_ingest_hour"] <= last_ingest:
            hour = progress["next_ingest_hour"]
            if collector_at_work and not hour_collected(state, hour):
                break
            requests.append(_hour_request(state, hour))
            progress["next_ingest_hour"] = hour + 1
        round_complete = progress["next_ingest_hour"] > last_ingest and (
            not state.status.collecting or progress["next_ingest_hour"] >= state.total_hours
        )
        if (round_complete and round_name not in progress["verdicts"]
                and not _round_verdict_will_judge_the_stop(state, progress, run_progress)):
            progress["verdicts"].append(round_name)
            requests.append(dg.RunRequest(
                run_key=f"{state.campaign}:verdict:{round_name}",
                job_name=campaign_verdict_job.name,
                partition_key=state.campaign,
                tags={**_run_tags(state, TAG_HOUR_LANE, VERDICT_PHASE, state.timing.hour_seconds * 2),
                      TAG_HOUR: round_name},
            ))
    return requests


def _round_verdict_will_judge_the_stop(state: CampaignState, progress: dict,
                                       run_progress: Callable[[str], RunProgress]) -> bool:
    """An early stop that came after the round's verdict was requested: while that run is queued or under
    way it decides the campaign (it judges the early round), so a second verdict run would only repeat it.
    Asked each tick: should that run end without deciding, the early round's verdict is requested."""
    round_verdict = str(state.total_hours)
    return (state.early_stop is not None and round_verdict in progress["verdicts"]
            and run_progress(f"{state.campaign}:verdict:{round_verdict}") is RunProgress.IN_PROGRESS)


def run_progress(instance: dg.DagsterInstance, run_key: str) -> RunProgress:
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    if not records:
        return RunProgress.NOT_REQUESTED
    status = records[0].dagster_run.status
    if status is dg.DagsterRunStatus.SUCCESS:
        return RunProgress.SUCCEEDED
    if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        return RunProgress.ENDED_OTHERWISE
    return RunProgress.IN_PROGRESS


def hour_is_collected(data_root: str, state: CampaignState, hour: int) -> bool:
    """Every planned probe step of the hour, and its make-up if it has one, is recorded, ran or not."""
    recorded = hour_outcomes(data_root, state.campaign, hour)
    makeup = makeup_for_hour(data_root, state, hour)
    steps = [*plan_for_hour(hour, state.planned_hours).steps, *([makeup.step] if makeup else [])]
    return all(step in recorded for step in steps)


@dg.sensor(
    name="campaign_clock",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=[campaign_collector, campaign_hour_job, campaign_verdict_job],
    description="Requests each campaign's collector, its hour runs as they come due, then its verdict.",
)
def campaign_clock(context: dg.SensorEvaluationContext, store: CampaignStore):
    cursor = json.loads(context.cursor) if context.cursor else {}
    requests = due_run_requests(readable_campaigns(context, store), cursor,
                                lambda key: run_progress(context.instance, key),
                                lambda state, hour: hour_is_collected(store.data_root, state, hour))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))


def readable_campaigns(context: dg.SensorEvaluationContext, store: CampaignStore) -> list[CampaignState]:
    """The campaigns a sensor serves; each one that cannot be read is logged and left out."""
    states, skipped = store.campaigns()
    for problem in skipped:
        context.log.warning(problem)
    return states
