
import time

import dagster as dg
import pydantic

from staging_validation.acceptance.notify import NotificationSettings
from staging_validation.acceptance.policy import load_policy
from staging_validation.campaign.assets import INGESTION_ASSETS, PROBE_ASSETS, VERDICT_ASSETS
from staging_validation.campaign.partitions import campaign_partitions
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaigns import MAX_CAMPAIGN_HOURS, CampaignState
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.config_files import ConfigError, validate_model
from staging_validation.probes.deploy_steps import DeploySteps
from staging_validation.storage import validate_campaign_id
from staging_validation.target.client import bearer_token, resolve_base_url
from staging_validation.target.profile import load_target_profile
from staging_validation.telemetry.capture import TELEMETRY_SOURCES
from staging_validation.telemetry.sources import source_mappings

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


class DeployConfig(dg.Config):
    migrate_command: str = pydantic.Field(
        default="", description="Hour 0, before the smoke tests: the database migration (run without a shell); "
        "empty: none.")
    deploy_command: str = pydantic.Field(
        default="", description="Hour 0, after the migration: deploys the code (run without a shell); empty: none.")
    timeout_s: float = pydantic.Field(default=1800.0, gt=0, description="Each step is killed after this long.")


class TelemetrySourceConfig(dg.Config):
    """A further log of the target (another concern's events in their own file), read with its own mapping."""

    name: str = pydantic.Field(description="Its capture folder name: lowercase letters, digits, '-', '_'.")
    path: str = pydantic.Field(default="", description="The log file.")
    command: str = pydantic.Field(default="", description="Instead of a path: a command printing it from byte {offset}.")
    mapping: str = pydantic.Field(description="Its mapping: a name under the profile's telemetry.sources.")


class CampaignLaunchConfig(dg.Config):
    """The launchpad form of a campaign; the defaults validate the built-in simulator (`make simulator`)."""

    campaign: str = pydantic.Field(description="Campaign id: letters, digits, '-' and '_' (a folder name).")
    target_profile: str = pydantic.Field(default="", description="Target profile YAML; empty: the documented contract.")
    base_url: str = pydantic.Field(default="http://127.0.0.1:8765", description="Overrides the profile's base URL.")
    telemetry_path: str = pydantic.Field(default="data/simulator/staging.log", description="The target's log file.")
    telemetry_command: str = pydantic.Field(
        default="", description="Instead of a path: a command printing the log from byte {offset}."
    )
    telemetry_sources: list[TelemetrySourceConfig] = pydantic.Field(
        default=[], description="Further logs of the target, beside the main one above.")
    policy: str = pydantic.Field(default="", description="Acceptance policy YAML; empty: the shipped policy.")
    hours: int = pydantic.Field(default=24, ge=1, le=24, description="Planned campaign hours before the verdict.")
    hour_seconds: float = pydantic.Field(default=3600.0, gt=0, description="Length of a campaign hour in seconds.")
    stress_baseline_rps: float = pydantic.Field(default=5.0, gt=0, description="Hour 7 sends twice this rate.")
    notification: NotificationConfig = NotificationConfig()
    deploy: DeployConfig = DeployConfig()

    def settings(self) -> dict:
        main = {"command": self.telemetry_command} if self.telemetry_command else {"path": self.telemetry_path}
        extra = [{key: value for key, value in source.model_dump().items() if value}
                 for source in self.telemetry_sources]
        telemetry: dict | list[dict] = [main, *extra] if extra else main
        notification = {k: v for k, v in self.notification.model_dump().items() if v not in ("", None)}
        return {
            "target_profile": self.target_profile or None,
            "base_url": self.base_url or None,
            "telemetry": telemetry,
            "policy": self.policy or None,
            "stress_baseline_rps": self.stress_baseline_rps,
            "notification": notification,
            **({"deploy": self.deploy.model_dump()} if self.deploy.migrate_command or self.deploy.deploy_command
               else {}),
        }


def register_campaign(store: CampaignStore, config: CampaignLaunchConfig, now_ms: int | None = None) -> CampaignState:
    """Validate every input a campaign will use, then write its registration; raises ConfigError."""
    campaign = validate_campaign_id(config.campaign)
    if (store.campaign_dir(campaign) / "campaign.json").exists():
        raise ConfigError(f"campaign {campaign!r}: already registered; choose a new id")
    settings = config.settings()
    profile = load_target_profile(settings["target_profile"])
    # The hourly probe runs build their client from these; a bad URL or a missing token would fail
    # every one of them, so the launch refuses instead.
    resolve_base_url(profile, settings["base_url"])
    bearer_token(profile)
    load_policy(settings["policy"])
    try:
        sources = TELEMETRY_SOURCES.validate_python(settings["telemetry"])
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
        raise ConfigError(f"telemetry sources: {problems}") from None
    source_mappings(sources, profile.telemetry)
    validate_model(settings.get("deploy", {}), DeploySteps, "deploy")
    notification = NotificationSettings.model_validate(settings["notification"])
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
    store.save(state)
    return state


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


@dg.job(description="Launch a validation campaign from the launchpad.")
def start_campaign():
    register_campaign_op()
