
import math
import time
from pathlib import Path

import dagster as dg
import pydantic

from staging_validation.acceptance.policy import load_policy
from staging_validation.campaign.assets import INGESTION_ASSETS, PROBE_ASSETS, VERDICT_ASSETS
from staging_validation.campaign.partitions import campaign_partitions
from staging_validation.campaign.resources import CampaignStore
from staging_validation.config_files import ConfigError, validate_model
from staging_validation.lifecycle import MAX_CAMPAIGN_HOURS, CampaignSettings, CampaignState, register_campaign_state
from staging_validation.plan import MIN_HOUR_SECONDS, RUNBOOK_HOUR_SECONDS, hour_seconds_problem
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.storage import validate_campaign_id
from staging_validation.target.client import bearer_token, resolve_base_url
from staging_validation.target.profile import load_target_profile

MAX_PLANNED_HOURS = 24  # the runbook's day; extensions add up to MAX_CAMPAIGN_HOURS

campaign_probes_job = dg.define_asset_job(
    "campaign_probes",
    selection=dg.AssetSelection.assets(*PROBE_ASSETS),
    description="The probes of one campaign hour, run while the hour is current (requested by campaign_clock).",
)

campaign_hour_job = dg.define_asset_job(
    "campaign_hour",
    selection=dg.AssetSelection.assets(*INGESTION_ASSETS),
    description="One ended campaign hour: its telemetry, 30-minute snapshots and hourly report.",
)

campaign_verdict_job = dg.define_asset_job(
    "campaign_verdict",
    selection=dg.AssetSelection.assets(*VERDICT_ASSETS),
    description="Final checks, gates, decision, report and notification over every stored hour.",
)


class NotificationConfig(dg.Config):
    smtp_host: str = pydantic.Field(default="", description="Empty: messages go to the campaign outbox only.")
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str = ""
    smtp_password_env: str = pydantic.Field(
        default="STAGING_VALIDATION_SMTP_PASSWORD",
        description="Name of the environment variable holding the SMTP password (never the password).",
    )
    sender: str = "staging-validation@localhost"
    recipients: list[str] = []
    webhook_url_env: str = pydantic.Field(
        default="",
        description="Name of the environment variable holding the webhook URL (never the URL, which may "
        "embed a token); empty: no webhook.",
    )


class CampaignLaunchConfig(dg.Config):
    """The launchpad form of a campaign; the defaults validate the built-in simulator (`make simulator`)."""

    campaign: str = pydantic.Field(description="Campaign id: letters, digits, '-' and '_' (a folder name).")
    target_profile: str = pydantic.Field(default="", description="Target profile YAML; empty: the documented contract.")
    base_url: str = pydantic.Field(default="http://127.0.0.1:8765", description="Overrides the profile's base URL.")
    telemetry_path: str = pydantic.Field(default="data/simulator/staging.log", description="The target's log file.")
    telemetry_command: str = pydantic.Field(
        default="", description="Instead of a path: a command printing the log from byte {offset}."
    )
    policy: str = pydantic.Field(default="", description="Acceptance policy YAML; empty: the shipped policy.")
    # No pydantic bounds here: Dagster would raise them as the chained cause of a step error; the launch
    # checks them itself (`launch_problems`) and fails with the problem as the message.
    hours: int = pydantic.Field(default=24,
                                description=f"Planned campaign hours before the verdict, 1 to {MAX_PLANNED_HOURS}.")
    hour_seconds: float = pydantic.Field(
        default=3600.0,
        description=f"Length of a campaign hour in seconds, {MIN_HOUR_SECONDS:g} (the measured floor) to "
        f"{RUNBOOK_HOUR_SECONDS:g}.")
    stress_baseline_rps: float = pydantic.Field(default=5.0, description="Hour 7 sends twice this rate (> 0).")
    notification: NotificationConfig = NotificationConfig()

    def settings(self) -> CampaignSettings:
        """The campaign's typed settings; ConfigError naming the field that does not validate."""
        telemetry = {"command": self.telemetry_command} if self.telemetry_command else {"path": self.telemetry_path}
        notification = {k: v for k, v in self.notification.model_dump().items() if v not in ("", None)}
        return validate_model({
            "target_profile": self.target_profile or None,
            "base_url": self.base_url or None,
            "telemetry": telemetry,
            "policy": self.policy or None,
            "stress_baseline_rps": self.stress_baseline_rps,
            "notification": notification,
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
    notification = settings.notification
    if notification.webhook_url_env and notification.webhook_url() is None:
        raise ConfigError(f"notification.webhook_url_env: environment variable {notification.webhook_url_env} "
                          "is not set or empty")
    started = now_ms if now_ms is not None else int(time.time() * 1000)
    state = CampaignState(
        campaign=campaign,
        created_at_ms=started,
        timing=CampaignTiming(start_ms=started, hour_seconds=config.hour_seconds),
        planned_hours=config.hours,
        settings=settings,
    )
    return register_campaign_state(store.data_root, state)


@dg.op(description="Validate the launch config, register the campaign; campaign_clock then runs hour 0 at once.")
def register_campaign_op(context: dg.OpExecutionContext, config: CampaignLaunchConfig, store: CampaignStore) -> str:
    try:
        state = register_campaign(store, config)
    except ConfigError as exc:
        raise dg.Failure(description=str(exc)) from None
    context.instance.add_dynamic_partitions(campaign_partitions.name, [state.campaign])
    context.log.info(
        f"campaign {state.campaign} registered: {state.planned_hours} hours of {state.timing.hour_seconds:g} s, "
        f"up to {MAX_CAMPAIGN_HOURS} with extensions"
    )
    return state.campaign


# Not retried: a launch that failed is a config error to fix, or a registration already made.
@dg.job(description="Launch a validation campaign from the launchpad.", tags={"dagster/max_retries": "0"})
def start_campaign():
    register_campaign_op()
