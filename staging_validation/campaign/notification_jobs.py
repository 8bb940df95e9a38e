"""Sensors decide, runs act: alerts are stored by a sensor and sent by a run of `campaign_alert_notifications`.

`campaign_run_failures` alerts when a campaign's probe, hour or verdict run failed and no run retry follows
(`monitor.validator_run_failed`: the validator's fault, never evidence against the target); when three of
its runs in a row failed so, it stops the campaign as validator_failed (`monitor.validator_failed`).
"""


import time

import dagster as dg

from staging_validation.acceptance.alert_rules import Alert, validator_failed_alert
from staging_validation.campaign.jobs import campaign_collector, campaign_hour_job, campaign_verdict_job
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.run_tags import (
    ALERTS_PHASE,
    TAG_CAMPAIGN,
    TAG_HOUR,
    TAG_NOTIFICATION_LANE,
    TAG_PHASE,
)
from staging_validation.campaign.sensors import SENSOR_INTERVAL_S
from staging_validation.collection.validator_gaps import (
    CONSECUTIVE_FAILURES_TO_STOP,
    consecutive_failures,
)
from staging_validation.config_files import ConfigError
from staging_validation.lifecycle import IllegalTransition, fail_validator
from staging_validation.watch.alert_batches import deliver_alert_batch, record_alerts

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


# A string: the union's second name exists for type checkers only (and this module's config classes need
# their annotations evaluated, so no `from __future__ import annotations`).
MONITORED_JOBS: "list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition]" = [
    campaign_collector, campaign_hour_job, campaign_verdict_job]


def failed_in_a_row(instance: dg.DagsterInstance, campaign: str) -> list[str]:
    """The campaign's runs (each with its retries, by root run id) that failed one after the other, last."""
    names = {job.name for job in MONITORED_JOBS}
    records = [r for r in instance.get_run_records(dg.RunsFilter(
        tags={TAG_CAMPAIGN: campaign}, statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]))
        if r.dagster_run.job_name in names]
    records.sort(key=lambda r: r.end_time or r.update_timestamp.timestamp())
    return consecutive_failures((r.dagster_run.tags.get("dagster/root_run_id", r.dagster_run.run_id),
                                 r.dagster_run.status is dg.DagsterRunStatus.FAILURE) for r in records)


def stop_if_failing(store: CampaignStore, instance: dg.DagsterInstance, campaign: str, now_ms: int) -> Alert | None:
    """Stop a campaign whose own runs keep failing: → validator_failed (nothing more is run for it; a
    re-judgement says `inconclusive.validator_failed`). The alert that says so, or None."""
    failed = failed_in_a_row(instance, campaign)
    if len(failed) < CONSECUTIVE_FAILURES_TO_STOP or not store.load(campaign).status.collecting:
        return None
    reason = (f"{len(failed)} of the campaign's runs failed in a row, each after its retries "
              f"(runs {', '.join(run_id[:8] for run_id in failed[-CONSECUTIVE_FAILURES_TO_STOP:])})")
    try:
        fail_validator(store.data_root, campaign, reason, now_ms=now_ms)
    except IllegalTransition:  # decided meanwhile
        return None
    return validator_failed_alert(reason, now_ms)


@dg.run_failure_sensor(
    name="campaign_run_failures",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitored_jobs=MONITORED_JOBS,
    request_job=campaign_alert_notifications,
    description="Alerts (monitor.validator_run_failed) when a campaign run failed and no run retry follows; "
                "stops the campaign as validator_failed after three such failures in a row.",
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
    now_ms = int(time.time() * 1000)
    alert = validator_run_failed_alert(run, "; ".join(causes) or context.failure_event.message or "", now_ms)
    try:
        store.load(campaign)  # registered and readable: never create a folder for a tag's value
        stopped = stop_if_failing(store, context.instance, campaign, now_ms)
        raised, batch = record_alerts(store.layout(campaign), [alert, *([stopped] if stopped else [])])
    except (ConfigError, OSError) as exc:  # a campaign id in a tag that is not (or no longer) a campaign
        context.log.error(f"{campaign}: run {run.run_id} failed, and its alert cannot be stored: {exc}")
        return dg.SkipReason(f"campaign {campaign!r}: alert not stored")
    context.log.warning(f"{campaign}: {alert.rule}: {alert.message}")
    return dg.SensorResult(run_requests=[alert_batch_request(campaign, batch)],
                           asset_events=[alerts_observation(campaign, raised)])
