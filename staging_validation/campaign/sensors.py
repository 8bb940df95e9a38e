"""The campaign clock (requests hour runs and verdicts when due) and the background monitor."""


import dataclasses
import json
import math
import os

import dagster as dg

from staging_validation.acceptance.notify import Notifier, NotificationSettings, compose_alert_message
from staging_validation.acceptance.policy import load_policy
from staging_validation.campaign.jobs import campaign_hour_job, campaign_verdict_job
from staging_validation.campaign.partitions import campaign_hour_key
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaigns import CampaignState, hour_key
from staging_validation.hour_runner import log_follower, target_profile
from staging_validation.plan import plan_for_hour
from staging_validation.watch import CampaignMonitor

# Ticks are cheap when nothing is due, so both sensors tick often; a compressed rehearsal needs it.
SENSOR_INTERVAL_S = int(os.environ.get("STAGING_VALIDATION_SENSOR_INTERVAL_S", "5"))

TAG_CAMPAIGN = "staging-validation/campaign"
TAG_HOUR = "staging-validation/hour"
TAG_PHASE = "staging-validation/phase"
# dagster.yaml limits this tag to one run per value: one hour (or verdict) run per campaign at a time.
TAG_LANE = "staging-validation/hour-lane"


def _run_tags(state: CampaignState, phase: str, hour: str) -> dict[str, str]:
    return {
        TAG_CAMPAIGN: state.campaign,
        TAG_HOUR: hour,
        TAG_PHASE: phase,
        TAG_LANE: state.campaign,
        # Run monitoring ends a run stuck well past its hour.
        "dagster/max_runtime": str(int(state.timing.hour_seconds * 2 + 600)),
    }


def due_run_requests(states: list[CampaignState], cursor: dict, now_s: float | None = None) -> list[dg.RunRequest]:
    """Every hour run and verdict that is due and not yet requested; updates `cursor` in place.

    Run keys make each request happen once even if the cursor is lost; after a daemon outage the
    first tick requests every hour that became due meanwhile, in order, then the verdict.
    """
    requests = []
    for state in states:
        if state.status == "decided":
            continue
        progress = cursor.setdefault(state.campaign, {"next_hour": 0, "verdicts": []})
        verdict_round = None
        if state.status == "active":
            now_hour = math.floor(state.timing.campaign_seconds(now_s) / 3600)
            last_due = min(now_hour, state.total_hours - 1)
            for hour in range(progress["next_hour"], last_due + 1):
                phase = plan_for_hour(hour, state.planned_hours).phase.value
                requests.append(dg.RunRequest(
                    run_key=f"{state.campaign}:hour:{hour_key(hour)}",
                    job_name=campaign_hour_job.name,
                    partition_key=campaign_hour_key(state.campaign, hour),
                    tags=_run_tags(state, phase, hour_key(hour)),
                ))
            progress["next_hour"] = max(progress["next_hour"], last_due + 1)
            if now_hour >= state.total_hours:
                verdict_round = str(state.total_hours)
        elif state.status == "stopped":
            verdict_round = "early"
        if verdict_round is not None and verdict_round not in progress["verdicts"]:
            progress["verdicts"].append(verdict_round)
            requests.append(dg.RunRequest(
                run_key=f"{state.campaign}:verdict:{verdict_round}",
                job_name=campaign_verdict_job.name,
                partition_key=state.campaign,
                tags=_run_tags(state, "verdict", verdict_round),
            ))
    return requests


@dg.sensor(
    name="campaign_clock",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=[campaign_hour_job, campaign_verdict_job],
    description="Requests each campaign's hour runs as they come due, then its verdict.",
)
def campaign_clock(context: dg.SensorEvaluationContext, store: CampaignStore):
    cursor = json.loads(context.cursor) if context.cursor else {}
    requests = due_run_requests(store.campaigns(), cursor)
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))


def monitor_campaign(store: CampaignStore, state: CampaignState) -> list[dict]:
    """One monitor step for one campaign: store, send and act on the alerts it raises."""
    policy = load_policy(state.settings.get("policy") or None)
    monitor = CampaignMonitor(store.data_root, state, log_follower(store.data_root, state),
                              target_profile(state).telemetry, policy)
    alerts, stop = monitor.step()
    if not alerts:
        return []
    raised = [dataclasses.asdict(alert) for alert in alerts]
    store.append_alerts(state.campaign, raised)
    notifier = Notifier(NotificationSettings.model_validate(state.settings.get("notification") or {}),
                        store.campaign_dir(state.campaign) / "outbox")
    for alert in alerts:
        notifier.send(compose_alert_message(alert, state.campaign))
    if stop is not None:
        # A critical failure ends the campaign now: no further hour runs, the clock requests the verdict.
        latest = store.load(state.campaign)
        if latest.status == "active":
            store.save(latest.model_copy(update={"status": "stopped", "early_stop": stop}))
    return raised


@dg.sensor(
    name="campaign_monitor",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="monitor.sh: errors, missing packs, slow requests and identity merges over new telemetry only.",
)
def campaign_monitor(context: dg.SensorEvaluationContext, store: CampaignStore):
    observations = []
    for state in store.campaigns():
        if state.status != "active":
            continue
        raised = monitor_campaign(store, state)
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
