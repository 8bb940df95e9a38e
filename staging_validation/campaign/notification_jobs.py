"""Sensors decide, runs act: alerts are stored by a sensor and sent by a run of `campaign_alert_notifications`.

`campaign_run_failures` alerts when a campaign's probe, hour or verdict run failed and no run retry follows
(`monitor.validator_run_failed`: the validator's fault, never evidence against the target).
"""


import dataclasses
import time

import dagster as dg

from staging_validation.acceptance.alert_rules import Alert
from staging_validation.campaign.jobs import campaign_hour_job, campaign_probes_job, campaign_verdict_job
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.run_tags import (
    ALERTS_PHASE,
    TAG_CAMPAIGN,
    TAG_HOUR,
    TAG_NOTIFICATION_LANE,
    TAG_PHASE,
)
from staging_validation.campaign.sensors import SENSOR_INTERVAL_S
from staging_validation.config_files import ConfigError
from staging_validation.watch.alert_batches import deliver_alert_batch, store_alert_batch

VALIDATOR_RUN_FAILED = "monitor.validator_run_failed"
WILL_RETRY_TAG = "dagster/will_retry"  # set by the instance on a failed run when run retries are enabled


class AlertBatchConfig(dg.Config):
    campaign: str
    batch: str


@dg.op(description="Send the alerts of one stored batch that were not delivered yet; record each delivery.")
def send_alert_batch(context: dg.OpExecutionContext, config: AlertBatchConfig, store: CampaignStore) -> None:
    state = store.load(config.campaign)
    deliveries = deliver_alert_batch(store.layout(state.campaign), state.settings.notification, config.batch)
    for delivery in deliveries:
        context.log.info(f"{state.campaign}: alert {delivery.eml}: {delivery.status}")


@dg.job(description="Sends one batch of a campaign's alerts (requested by campaign_watch and campaign_run_failures).")
def campaign_alert_notifications():
    send_alert_batch()


def alert_batch_request(campaign: str, batch: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{campaign}:alerts:{batch}",
        job_name=campaign_alert_notifications.name,
        run_config={"ops": {send_alert_batch.name: {"config": {"campaign": campaign, "batch": batch}}}},
        tags={TAG_CAMPAIGN: campaign, TAG_PHASE: ALERTS_PHASE, TAG_NOTIFICATION_LANE: campaign},
    )


def alerts_observation(campaign: str, raised: list[dict]) -> dg.AssetObservation:
    """The alerts as an observation of `monitor_alerts`, so the UI shows them beside the campaign."""
    return dg.AssetObservation(
        asset_key="monitor_alerts",
        partition=campaign,
        metadata={
            "alerts": dg.MetadataValue.int(len(raised)),
            "critical": dg.MetadataValue.int(sum(a["severity"] == "critical" for a in raised)),
            "list": dg.MetadataValue.md("\n".join(
                f"- **{a['severity']}** `{a['rule']}`: {a['message']}" for a in raised)),
        },
    )


def store_alerts(store: CampaignStore, campaign: str, alerts: list[Alert]) -> tuple[list[dict], str]:
    """Append the alerts to the campaign's list and store them as a batch to send: (as dicts, batch id)."""
    raised = [dataclasses.asdict(alert) for alert in alerts]
    store.append_alerts(campaign, raised)
    return raised, store_alert_batch(store.layout(campaign), alerts)


def validator_run_failed_alert(run: dg.DagsterRun, failure_message: str, now_ms: int) -> Alert:
    phase, hour = run.tags.get(TAG_PHASE, "?"), run.tags.get(TAG_HOUR, "?")
    what = f"round {hour}" if phase == "verdict" else f"hour {hour} ({phase})"
    retried = run.tags.get("dagster/retry_number")
    after = f" after {retried} retr{'y' if retried == '1' else 'ies'}" if retried else ""
    return Alert(
        time_ms=now_ms, severity="warning", rule=VALIDATOR_RUN_FAILED,
        message=(f"The validator's {run.job_name} run for {what} failed{after}: {failure_message} "
                 "This is the validator's fault, not evidence about the target."),
        count=1, evidence=[{"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ms / 1000)),
                            "line": f"run {run.run_id} ({run.job_name})"}],
    )


@dg.run_failure_sensor(
    name="campaign_run_failures",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitored_jobs=[campaign_probes_job, campaign_hour_job, campaign_verdict_job],
    request_job=campaign_alert_notifications,
    description="Alerts (monitor.validator_run_failed) when a campaign run failed and no run retry follows.",
)
def campaign_run_failures(context: dg.RunFailureSensorContext, store: CampaignStore):
    run = context.dagster_run
    campaign = run.tags.get(TAG_CAMPAIGN)
    if campaign is None:
        return dg.SkipReason(f"run {run.run_id} belongs to no campaign")
    if run.tags.get(WILL_RETRY_TAG) == "true":
        return dg.SkipReason(f"run {run.run_id} failed and will be retried")
    # The failed steps' own errors say why; the run's failure event only lists the steps.
    causes = [f"{event.step_key}: {event.step_failure_data.error.message.strip()}"
              for event in context.get_step_failure_events()
              if event.step_failure_data is not None and event.step_failure_data.error is not None]
    alert = validator_run_failed_alert(run, "; ".join(causes) or context.failure_event.message or "",
                                       int(time.time() * 1000))
    try:
        store.load(campaign)  # registered and readable: never create a folder for a tag's value
        raised, batch = store_alerts(store, campaign, [alert])
    except (ConfigError, OSError) as exc:  # a campaign id in a tag that is not (or no longer) a campaign
        context.log.error(f"{campaign}: run {run.run_id} failed, and its alert cannot be stored: {exc}")
        return dg.SkipReason(f"campaign {campaign!r}: alert not stored")
    context.log.warning(f"{campaign}: {alert.rule}: {alert.message}")
    return dg.SensorResult(run_requests=[alert_batch_request(campaign, batch)],
                           asset_events=[alerts_observation(campaign, raised)])
