
import math
import time
from pathlib import Path

import dagster as dg
import pydantic

from staging_validation.acceptance.alert_rules import validator_failed_alert
from staging_validation.acceptance.policy import campaign_policy, load_policy
from staging_validation.campaign.assets import (
    HOURLY_ASSETS,
    VERDICT_ASSETS,
    acceptance_report,
    campaign_decision,
    decision_notification,
    gate_results,
)
from staging_validation.campaign.partitions import campaign_partitions
from staging_validation.campaign.resources import CampaignStore
from staging_validation.collection.collector import run_collector
from staging_validation.collection.validator_gaps import VALIDATOR_FAILED_RULE
from staging_validation.config_files import ConfigError, validate_model
from staging_validation.lifecycle import (
    MAX_CAMPAIGN_HOURS,
    CampaignSettings,
    CampaignState,
    CampaignStatus,
    load_campaign_state,
    register_campaign_state,
)
from staging_validation.plan import MIN_HOUR_SECONDS, RUNBOOK_HOUR_SECONDS, hour_seconds_problem
from staging_validation.probes.deploy_steps import DEFAULT_TIMEOUT_S, argv_problem, timeout_problem
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.storage import validate_campaign_id
from staging_validation.target.client import bearer_token, resolve_base_url
from staging_validation.target.profile import load_target_profile
from staging_validation.telemetry.sources import source_mappings
from staging_validation.watch.alert_batches import record_alerts

# When runs wait for a free slot of the run queue (dagster.yaml), the higher `dagster/priority` starts
# first: a campaign's collector (its probes run on the campaign clock only once it has started), then the
# hour lane, verdicts included, ahead of runs launched by hand. Ingestion and verdict share one priority:
# the lane runs them in request order, so a verdict never starts before the ingestion of its last hour.
COLLECTOR_RUN_PRIORITY = "10"
HOUR_LANE_PRIORITY = "5"


class CollectorConfig(dg.Config):
    campaign: str = pydantic.Field(description="The campaign whose planned probe steps this run collects.")


@dg.op(description="Runs the campaign's probe steps on its clock for the current verdict round, recording "
                   "each step as it ends under campaigns/<id>/probes/.")
def collect_probe_steps(context: dg.OpExecutionContext, config: CollectorConfig, store: CampaignStore) -> None:
    try:
        validate_campaign_id(config.campaign)
        # The policy's switch is read here: the collector sits below the acceptance layer.
        stop_on_failed_deploy_step = campaign_policy(
            load_campaign_state(store.data_root, config.campaign)).early_stop.deploy_step_failed
        summary = run_collector(store.data_root, config.campaign, log=context.log.info,
                                stop_on_failed_deploy_step=stop_on_failed_deploy_step)
        alert_a_validator_failure(store, config.campaign)
    except ConfigError as exc:
        raise dg.Failure(description=str(exc)) from None
    context.log.info(f"{config.campaign}: {summary.ran} steps ran, {summary.not_run} recorded as not run, "
                     f"{summary.already_recorded} recorded before")


def alert_a_validator_failure(store: CampaignStore, campaign: str) -> None:
    """A collector that left its campaign validator_failed (a deploy step it found interrupted) stores the
    critical alert that says so, once (also after a crash between the two); the watch sends it."""
    state = store.load(campaign)
    if state.status is not CampaignStatus.VALIDATOR_FAILED or state.validator_failure is None:
        return
    if any(alert["rule"] == VALIDATOR_FAILED_RULE for alert in store.read_alerts(campaign)):
        return
    record_alerts(store.layout(campaign), [validator_failed_alert(state.validator_failure.reason,
                                                                  state.validator_failure.at_ms)])


@dg.job(description="Sensor-driven (campaign_clock requests it when a verdict round is registered; no need to "
                    "launch it by hand): the campaign's probe collector for one verdict round. It starts the "
                    "campaign clock, so the probes' timing never depends on how fast a run is launched.",
        executor_def=dg.in_process_executor,
        tags={"dagster/priority": COLLECTOR_RUN_PRIORITY})
def campaign_collector():
    collect_probe_steps()



campaign_hour_job = dg.define_asset_job(
    "campaign_hour",
    selection=dg.AssetSelection.assets(*HOURLY_ASSETS),
    executor_def=dg.in_process_executor,  # small steps: a process per step would cost more than the work
    tags={"dagster/priority": HOUR_LANE_PRIORITY},
    description="Sensor-driven (campaign_clock requests it when an hour has ended; no need to launch it by hand): "
                "one campaign hour's recorded probe steps, telemetry, 30-minute snapshots and hourly report.",
)

campaign_verdict_job = dg.define_asset_job(
    "campaign_verdict",
    selection=dg.AssetSelection.assets(*VERDICT_ASSETS),
    executor_def=dg.in_process_executor,
    tags={"dagster/priority": HOUR_LANE_PRIORITY},
    description="Sensor-driven (campaign_clock requests it at the end of a round or after an early stop; to "
                "re-judge, launch campaign_reverdict instead): final checks, gates, decision, report and "
                "notification over every stored hour.",
)

campaign_reverdict_job = dg.define_asset_job(
    "campaign_reverdict",
    selection=dg.AssetSelection.assets(gate_results, campaign_decision, acceptance_report, decision_notification),
    executor_def=dg.in_process_executor,
    tags={"dagster/priority": HOUR_LANE_PRIORITY},
    description="Re-judge one campaign (pick it as the partition, then Launch): gates, decision, report and "
                "notification recomputed from what is stored, under its current policy file; nothing is re-run "
                "against the target.",
)


class NotificationConfig(dg.Config):
    smtp_host: str = pydantic.Field(default="", description="SMTP server; empty: messages go to the campaign "
                                    "outbox only.")
    smtp_port: int = pydantic.Field(default=587, description="SMTP server port.")
    smtp_starttls: bool = pydantic.Field(default=True, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_username: str = pydantic.Field(default="", description="SMTP login; empty: no login.")
    smtp_password_env: str = pydantic.Field(
        default="STAGING_VALIDATION_SMTP_PASSWORD",
        description="Name of the environment variable holding the SMTP password (never the password).",
    )
    sender: str = pydantic.Field(default="staging-validation@localhost", description="The From address.")
    recipients: list[str] = pydantic.Field(default=[], description="Addresses the decision and alerts go to.")
    webhook_url_env: str = pydantic.Field(
        default="",
        description="Name of the environment variable holding the webhook URL (never the URL, which may "
        "embed a token); empty: no webhook.",
    )


class TelemetrySourceConfig(dg.Config):
    """A further log of the target, beside the main one (telemetry_path / telemetry_command)."""

    name: str = pydantic.Field(description="Its capture folder: lowercase letters, digits, '-' and '_'.")
    path: str = pydantic.Field(default="", description="The log file.")
    command: str = pydantic.Field(
        default="", description="Instead of a path: a command printing the log from byte {offset}."
    )
    mapping: str = pydantic.Field(
        default="",
        description="The mapping under the target profile's telemetry.sources; empty: its telemetry section.",
    )

    def source(self) -> dict:
        return {"name": self.name, **({"command": self.command} if self.command else {"path": self.path}),
                **({"mapping": self.mapping} if self.mapping else {})}


class DeployConfig(dg.Config):
    """The runbook's hour-0 steps 1-2, run before the smoke tests, each once per campaign."""

    # argv lists, run without a shell; None: no such step. (No pydantic bounds: `launch_problems` names them.)
    migrate_command: list[str] | None = pydantic.Field(
        default=None, description="Hour 0, first: the database migration as an argv list (no shell), e.g. "
        "[\"alembic\", \"upgrade\", \"head\"]; leave it out for none.")
    deploy_command: list[str] | None = pydantic.Field(
        default=None, description="Hour 0, after the migration: deploys the code, as an argv list (no shell); "
        "leave it out for none.")
    timeout_s: float = pydantic.Field(
        default=DEFAULT_TIMEOUT_S, description="Each step is killed, with its process group, after this many "
        "seconds (> 0).")

    def settings(self) -> dict:
        return {"migrate_command": self.migrate_command, "deploy_command": self.deploy_command,
                "timeout_s": self.timeout_s}


MAX_PLANNED_HOURS = 24  # the runbook's day; extensions add up to MAX_CAMPAIGN_HOURS


class CampaignLaunchConfig(dg.Config):
    """The launchpad form of a campaign; the defaults validate the built-in simulator (`make simulator`)."""

    campaign: str = pydantic.Field(description="Campaign id: letters, digits, '-' and '_' (a folder name).")
    target_profile: str = pydantic.Field(default="", description="Target profile YAML; empty: the documented contract.")
    base_url: str = pydantic.Field(default="http://127.0.0.1:8765", description="Overrides the profile's base URL.")
    telemetry_path: str = pydantic.Field(default="data/simulator/staging.log", description="The target's log file.")
    telemetry_command: str = pydantic.Field(
        default="", description="Instead of a path: a command printing the log from byte {offset}."
    )
    extra_telemetry_sources: list[TelemetrySourceConfig] = pydantic.Field(
        default=[], description="Further logs of the target, each read with its own mapping, merged by time."
    )
    policy: str = pydantic.Field(default="", description="Acceptance policy YAML; empty: the shipped policy.")
    # No pydantic bounds on these: Dagster would surface them as the chained cause of a step error; the launch
    # checks them itself (`launch_problems`) and fails with the problem, naming the field, as its message.
    hours: int = pydantic.Field(default=24, description=f"Planned campaign hours before the verdict, 1 to "
                                f"{MAX_PLANNED_HOURS}.")
    hour_seconds: float = pydantic.Field(
        default=3600.0, description=f"Length of a campaign hour in seconds, {MIN_HOUR_SECONDS:g} (the measured floor) "
        f"to {RUNBOOK_HOUR_SECONDS:g}.")
    stress_baseline_rps: float = pydantic.Field(default=5.0, description="Hour 7 sends twice this rate (> 0).")
    notification: NotificationConfig = pydantic.Field(
        default=NotificationConfig(), description="Where the decision and the monitor's alerts are sent.")
    first_verdict_only: bool = pydantic.Field(
        default=False, description="End the campaign at its first verdict: an EXTEND is decided and notified, "
        "its extension hours are not run (rehearsals).")
    deploy: DeployConfig = pydantic.Field(
        default=DeployConfig(), description="Hour 0's migrate and deploy commands, before the smoke tests; a "
        "failing one stops the campaign (REJECT early_stop.deploy_step_failed).")

    def settings(self) -> CampaignSettings:
        """The campaign's typed settings; ConfigError naming the field that does not validate."""
        main = {"command": self.telemetry_command} if self.telemetry_command else {"path": self.telemetry_path}
        telemetry = [main, *(extra.source() for extra in self.extra_telemetry_sources)]
        notification = {k: v for k, v in self.notification.model_dump().items() if v not in ("", None)}
        return validate_model({
            "target_profile": self.target_profile or None,
            "base_url": self.base_url or None,
            "telemetry": telemetry,
            "policy": self.policy or None,
            "stress_baseline_rps": self.stress_baseline_rps,
            "notification": notification,
            "first_verdict_only": self.first_verdict_only,
            "deploy": self.deploy.settings(),
        }, CampaignSettings, "launch config")


def launch_problems(config: CampaignLaunchConfig) -> list[str]:
    """Every field of the launch form that cannot work, each naming the field."""
    problems = []
    if not 1 <= config.hours <= MAX_PLANNED_HOURS:
        problems.append(f"hours: {config.hours} is out of range: a campaign plans 1 to {MAX_PLANNED_HOURS} hours "
                        "(extensions add more)")
    hour_problem = hour_seconds_problem(config.hour_seconds)
    if hour_problem:
        problems.append(f"hour_seconds: {hour_problem}")
    if not (math.isfinite(config.stress_baseline_rps) and config.stress_baseline_rps > 0):
        problems.append(f"stress_baseline_rps: {config.stress_baseline_rps:g} must be a positive number of requests "
                        "per second")
    for field in ("migrate_command", "deploy_command"):
        problem = argv_problem(getattr(config.deploy, field))
        if problem:
            problems.append(f"deploy.{field}: {problem}")
    timeout = timeout_problem(config.deploy.timeout_s)
    if timeout:
        problems.append(f"deploy.timeout_s: {timeout}")
    if not config.telemetry_command and Path(config.telemetry_path).is_dir():
        problems.append(f"telemetry_path: {config.telemetry_path} is a directory; give the target's log file")
    return problems


def register_campaign(store: CampaignStore, config: CampaignLaunchConfig, now_ms: int | None = None) -> CampaignState:
    """Validate every input a campaign will use, then write its registration; raises ConfigError."""
    campaign = validate_campaign_id(config.campaign)
    problems = launch_problems(config)
    if problems:
        raise ConfigError(f"campaign {campaign!r} not launched: " + "; ".join(problems))
    if store.layout(campaign).state_file.exists():
        raise ConfigError(f"campaign {campaign!r}: already registered; choose a new id")
    settings = config.settings()
    profile = load_target_profile(settings.target_profile)
    # The hourly probe runs build their client from these; a bad URL or a missing token would fail
    # every one of them, so the launch refuses instead.
    resolve_base_url(profile, settings.base_url)
    bearer_token(profile)
    load_policy(settings.policy)
    source_mappings(settings.telemetry, profile.telemetry)
    notification = settings.notification
    if notification.webhook_url_env and notification.webhook_url() is None:
        raise ConfigError(f"notification.webhook_url_env: environment variable {notification.webhook_url_env} "
                          "is not set or empty")
    started = now_ms if now_ms is not None else int(time.time() * 1000)
    state = CampaignState(
        campaign=campaign,
        created_at_ms=started,
        # Provisional: hour 0 begins when the campaign's collector starts (it sets the start), so the first
        # hour never depends on how long the run launch took.
        timing=CampaignTiming(start_ms=started, hour_seconds=config.hour_seconds),
        planned_hours=config.hours,
        settings=settings,
    )
    return register_campaign_state(store.data_root, state)


@dg.op(description="Validate the launch config, register the campaign; campaign_clock then requests its collector.")
def register_campaign_op(context: dg.OpExecutionContext, config: CampaignLaunchConfig, store: CampaignStore) -> str:
    try:
        state = register_campaign(store, config)
    except ConfigError as exc:
        raise dg.Failure(description=str(exc)) from None
    assert campaign_partitions.name is not None  # Optional only for the nameless, partition_fn form; ours is named
    context.instance.add_dynamic_partitions(campaign_partitions.name, [state.campaign])
    context.log.info(
        f"campaign {state.campaign} registered: {state.planned_hours} hours of {state.timing.hour_seconds:g} s, "
        f"up to {MAX_CAMPAIGN_HOURS} with extensions"
    )
    return state.campaign


# Not retried: a launch that failed is a config error to fix, or a registration already made.
@dg.job(description="Launch a validation campaign: fill in the config (the defaults validate the built-in simulator) "
                    "and Launch. The launch validates every input; the campaign_clock sensor then runs its hours "
                    "and its verdict.", tags={"dagster/max_retries": "0"})
def start_campaign():
    register_campaign_op()
