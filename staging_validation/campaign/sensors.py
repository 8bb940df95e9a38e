"""The campaign clock (requests hour runs and verdicts when due) and the background monitor."""


import dataclasses
import json
import math
import os
from collections.abc import Callable

import dagster as dg

from staging_validation.acceptance.notify import Notifier, campaign_notification_settings, compose_alert_message
from staging_validation.acceptance.policy import campaign_policy
from staging_validation.campaign.jobs import campaign_hour_job, campaign_probes_job, campaign_verdict_job
from staging_validation.campaign.partitions import campaign_hour_key
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaigns import CampaignState
from staging_validation.schemas.timing import hour_key
from staging_validation.config_files import ConfigError
from staging_validation.hour_runner import log_follower
from staging_validation.plan import plan_for_hour
from staging_validation.watch import CampaignMonitor

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

TAG_CAMPAIGN = "staging-validation/campaign"
TAG_HOUR = "staging-validation/hour"
TAG_PHASE = "staging-validation/phase"
# dagster.yaml allows one run per value of each lane tag: per campaign, one probe run at a time and one
# hour (ingestion or verdict) run at a time. Probes get their own lane so they start when their hour
# starts, never queued behind the previous hour's ingestion.
TAG_PROBE_LANE = "staging-validation/probe-lane"
TAG_HOUR_LANE = "staging-validation/hour-lane"
FINISHED_STATUSES = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def probe_run_key(campaign: str, hour: int) -> str:
    return f"{campaign}:probes:{hour_key(hour)}"


def _run_tags(state: CampaignState, lane: str, phase: str, hour: str) -> dict[str, str]:
    return {
        TAG_CAMPAIGN: state.campaign,
        TAG_HOUR: hour,
        TAG_PHASE: phase,
        lane: state.campaign,
        # Run monitoring ends a run stuck well past its hour.
        "dagster/max_runtime": str(int(state.timing.hour_seconds * 2 + 600)),
    }


def _hour_request(state: CampaignState, job_name: str, run_key: str, lane: str, hour: int) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        job_name=job_name,
        partition_key=campaign_hour_key(state.campaign, hour),
        tags=_run_tags(state, lane, plan_for_hour(hour, state.planned_hours).phase.value, hour_key(hour)),
    )


def due_run_requests(states: list[CampaignState], cursor: dict, probe_run_done: Callable[[str], bool],
                     now_s: float | None = None) -> list[dg.RunRequest]:
    """Every run that is due and not yet requested; updates `cursor` in place.

    - the probes of an hour when the hour starts (an hour already over gets none: it is a gap);
    - the ingestion of an hour once it has ended and its probe run is done (so its records are stored);
    - the verdict once every hour of the round is requested (same lane: it runs after them), or at
      once after an early stop, over the hours up to the stop.
    Run keys make each request happen once even if the cursor is lost; after a daemon outage the first
    tick requests every ingestion that became due meanwhile, in order.
    """
    requests = []
    for state in states:
        if state.status == "decided":
            continue
        progress = cursor.setdefault(state.campaign, {"next_probe_hour": 0, "next_ingest_hour": 0, "verdicts": []})
        now_hour = math.floor(state.timing.campaign_seconds(now_s) / 3600)
        if state.status == "active":
            last_hour = state.total_hours - 1
            if progress["next_probe_hour"] <= now_hour <= last_hour:
                requests.append(_hour_request(state, campaign_probes_job.name, probe_run_key(state.campaign, now_hour),
                                              TAG_PROBE_LANE, now_hour))
            progress["next_probe_hour"] = max(progress["next_probe_hour"], now_hour + 1)
            last_ingest = min(now_hour - 1, last_hour)
            round_name = str(state.total_hours)
        else:
            last_ingest = state.stopped_at_hour if state.stopped_at_hour is not None else -1
            round_name = "early"
        while progress["next_ingest_hour"] <= last_ingest:
            hour = progress["next_ingest_hour"]
            if not probe_run_done(probe_run_key(state.campaign, hour)):
                break
            requests.append(_hour_request(state, campaign_hour_job.name, f"{state.campaign}:hour:{hour_key(hour)}",
                                          TAG_HOUR_LANE, hour))
            progress["next_ingest_hour"] = hour + 1
        round_complete = progress["next_ingest_hour"] > last_ingest and (
            state.status != "active" or progress["next_ingest_hour"] >= state.total_hours
        )
        if round_complete and round_name not in progress["verdicts"]:
            progress["verdicts"].append(round_name)
            requests.append(dg.RunRequest(
                run_key=f"{state.campaign}:verdict:{round_name}",
                job_name=campaign_verdict_job.name,
                partition_key=state.campaign,
                tags=_run_tags(state, TAG_HOUR_LANE, "verdict", round_name),
            ))
    return requests


def run_is_done(instance: dg.DagsterInstance, run_key: str) -> bool:
    """True when the run with this key finished, or was never launched (nothing to wait for)."""
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    return not records or records[0].dagster_run.status in FINISHED_STATUSES


@dg.sensor(
    name="campaign_clock",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=[campaign_probes_job, campaign_hour_job, campaign_verdict_job],
    description="Requests each campaign's probe and hour runs as they come due, then its verdict.",
)
def campaign_clock(context: dg.SensorEvaluationContext, store: CampaignStore):
    cursor = json.loads(context.cursor) if context.cursor else {}
    requests = due_run_requests(readable_campaigns(context, store), cursor,
                                lambda key: run_is_done(context.instance, key))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))


def readable_campaigns(context: dg.SensorEvaluationContext, store: CampaignStore) -> list[CampaignState]:
    """The campaigns a sensor serves; each one that cannot be read is logged and left out."""
    states, skipped = store.campaigns()
    for problem in skipped:
        context.log.warning(problem)
    return states


def monitor_campaign(store: CampaignStore, state: CampaignState) -> list[dict]:
    """One monitor step for one campaign: act on, store and send the alerts it raises.

    What must not be lost goes first: the alerts, then the early stop (a stopped campaign is not watched
    again, so its alert must already be stored). The notifications follow (SMTP retries can outlast the
    sensor's timeout), and the step is committed last, so a step cut short is judged again: an alert may
    repeat, not be lost. A step still under way elsewhere makes this one a no-op.
    """
    # Every setting is read before the step: a bad one must stop it before it stores anything.
    policy = campaign_policy(state)
    monitor = CampaignMonitor(store.data_root, state, log_follower(store.data_root, state), policy)
    notifier = Notifier(campaign_notification_settings(state), store.campaign_dir(state.campaign) / "outbox")
    with monitor.exclusive() as alone:
        if not alone:
            return []
        step = monitor.step()
        raised = [dataclasses.asdict(alert) for alert in step.alerts]
        if raised:
            store.append_alerts(state.campaign, raised)
        if step.early_stop is not None:
            # A critical failure ends the campaign now: no further hour runs, the clock requests the verdict.
            latest = store.load(state.campaign)
            if latest.status == "active":
                store.save(latest.model_copy(update={"status": "stopped", "early_stop": step.early_stop}))
        for alert in step.alerts:
            notifier.send(compose_alert_message(alert, state.campaign))
        monitor.commit(step)
    return raised


@dg.sensor(
    name="campaign_monitor",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="monitor.sh: errors, missing packs, slow requests and identity merges over new telemetry only.",
)
def campaign_monitor(context: dg.SensorEvaluationContext, store: CampaignStore):
    observations = []
    for state in readable_campaigns(context, store):
        if state.status != "active":
            continue
        try:
            raised = monitor_campaign(store, state)
        except (ConfigError, OSError) as exc:  # one campaign's broken settings must not blind the others
            context.log.error(f"{state.campaign}: not monitored this tick: {exc}")
            continue
        for alert in raised:
            context.log.warning(f"{state.campaign}: {alert['severity']} {alert['rule']}: {alert['message']}")
        if raised:
            observations.append(dg.AssetObservation(
                asset_key="monitor_alerts",
                partition=state.campaign,
                metadata={
                    "alerts": dg.MetadataValue.int(len(raised)),
                    "critical": dg.MetadataValue.int(sum(a["severity"] == "critical" for a in raised)),
                    "list": dg.MetadataValue.md("\n".join(
                        f"- **{a['severity']}** `{a['rule']}`: {a['message']}" for a in raised)),
                },
            ))
    if not observations:
        return dg.SkipReason("no new alerts")
    return dg.SensorResult(asset_events=observations)
