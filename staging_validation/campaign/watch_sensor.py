"""campaign_watch: monitor.sh over each collecting campaign's new telemetry and probe rows.

A tick stores what it finds and returns run requests: the sending is done by `campaign_alert_notifications`
runs, so a slow mail server never holds a tick (nor the watch of any other campaign).
"""


import contextlib

import dagster as dg

from staging_validation.acceptance.policy import campaign_policy
from staging_validation.campaign.notification_jobs import (
    alert_batch_request,
    alerts_observation,
    campaign_alert_notifications,
)
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.sensors import SENSOR_INTERVAL_S, readable_campaigns
from staging_validation.campaign_target import log_follower
from staging_validation.config_files import ConfigError
from staging_validation.lifecycle import CampaignState, CampaignStatus, IllegalTransition, stop_early
from staging_validation.watch.alert_batches import record_alerts, undelivered_batches
from staging_validation.watch.telemetry_watch import TelemetryWatch


def watch_campaign(store: CampaignStore, state: CampaignState) -> tuple[list[dict], str | None]:
    """One watch step for one campaign: store the alerts it raises (and the batch that sends them), apply
    the early stop they call for, then commit the step. Returns (the alerts raised, their batch id).

    What must not be lost goes first: the alerts, then the early stop (a stopped campaign is not watched
    again, so its alert must already be stored); the step is committed last, so a step cut short is
    judged again: an alert may repeat, not be lost. A step still under way elsewhere makes this one a no-op.
    """
    # Every setting is read before the step: a bad one must stop it before it stores anything.
    policy = campaign_policy(state)
    watch = TelemetryWatch(store.data_root, state, log_follower(store.data_root, state), policy)
    with watch.exclusive() as alone:
        if not alone:
            return [], None
        step = watch.step()
        raised, batch = record_alerts(store.layout(state.campaign), step.alerts) if step.alerts else ([], None)
        if step.early_stop is not None:
            # A critical failure ends the campaign now: no further hour runs, the clock requests the verdict.
            with contextlib.suppress(IllegalTransition):  # a verdict ended it meanwhile
                stop_early(store.data_root, state.campaign, step.early_stop)
        watch.commit(step)
    return raised, batch


@dg.sensor(
    name="campaign_watch",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=[campaign_alert_notifications],
    description="monitor.sh: errors, missing packs, slow requests and identity merges over new telemetry only; "
                "stores the alerts and requests their notification run.",
)
def campaign_watch(context: dg.SensorEvaluationContext, store: CampaignStore):
    observations, requests = [], []
    for state in readable_campaigns(context, store):
        # A registered campaign's clock has not started (its collector starts it); an ended one is not
        # watched, but a validator_failed one may still have its last alert to send: the one that says so.
        watched = state.status.collecting and state.status is not CampaignStatus.REGISTERED
        if not watched and state.status is not CampaignStatus.VALIDATOR_FAILED:
            continue
        try:
            raised, _ = watch_campaign(store, state) if watched else ([], None)
            # Every batch still to send, this tick's and any whose request a cut-short tick never returned:
            # the run key makes each batch one run.
            batches = undelivered_batches(store.layout(state.campaign))
        except (ConfigError, OSError, IllegalTransition) as exc:
            # One campaign's broken settings or files must not blind the others; the error names both.
            context.log.error(f"{state.campaign}: not watched this tick: {exc}")
            continue
        for alert in raised:
            context.log.warning(f"{state.campaign}: {alert['severity']} {alert['rule']}: {alert['message']}")
        if raised:
            observations.append(alerts_observation(state.campaign, raised))
        requests += [alert_batch_request(state.campaign, batch) for batch in batches]
    if not observations and not requests:
        return dg.SkipReason("no new alerts")
    return dg.SensorResult(asset_events=observations, run_requests=requests)
