"""A campaign's target and its log, as its stored settings name them (no Dagster import)."""

from __future__ import annotations

import os
from pathlib import Path

from staging_validation.config_files import ConfigError
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignState
from staging_validation.schemas.telemetry_mapping import unobservable_items
from staging_validation.storage import local_path
from staging_validation.target.client import TargetClient, bearer_token
from staging_validation.target.profile import TargetProfile, load_target_profile
from staging_validation.telemetry.sources import CampaignTelemetry


def target_profile(state: CampaignState) -> TargetProfile:
    return load_target_profile(state.settings.target_profile)


def target_client(state: CampaignState) -> TargetClient:
    return TargetClient(target_profile(state), base_url=state.settings.base_url)


def campaign_secrets(state: CampaignState) -> list[str]:
    """The values of the campaign's secrets, from the environment variables its settings name (the target
    token, the webhook URL, the SMTP password), for masking wherever a command's output is stored."""
    notification = state.settings.notification
    values = [bearer_token(target_profile(state)), notification.webhook_url(),
              os.environ.get(notification.smtp_password_env) if notification.smtp_password_env else None]
    return [value for value in values if value]


def telemetry_store(data_root: str | Path, state: CampaignState) -> Path:
    return local_path(CampaignLayout.of(data_root, state.campaign).telemetry_dir)


def log_follower(data_root: str | Path, state: CampaignState) -> CampaignTelemetry:
    """Every telemetry source of the campaign (settings.telemetry), each with its mapping."""
    try:
        return CampaignTelemetry(state.settings.telemetry, telemetry_store(data_root, state), state.timing,
                                 target_profile(state).telemetry)
    except ConfigError as exc:
        raise ConfigError(f"campaign {state.campaign}: settings.telemetry: {exc}") from None


def unobservable_event_kinds(state: CampaignState) -> dict[str, str]:
    """Event kind → `"<profile path>: <reason>"` for the kinds no mapping of the campaign's telemetry sources
    recognises (declared `not_exposed`, or no rule for them): what its telemetry can never show."""
    telemetry = target_profile(state).telemetry
    try:
        mappings = telemetry.source_mappings_by_path(source.mapping for source in state.settings.telemetry)
    except ValueError as exc:
        raise ConfigError(f"campaign {state.campaign}: settings.telemetry: {exc}") from None
    return unobservable_items(mappings)
