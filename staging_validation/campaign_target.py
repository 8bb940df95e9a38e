"""A campaign's target and its log, as its stored settings name them (no Dagster import)."""

from __future__ import annotations

from pathlib import Path

from staging_validation.campaigns import CampaignState
from staging_validation.config_files import validate_model
from staging_validation.storage import campaign_dir
from staging_validation.target.client import TargetClient
from staging_validation.target.profile import TargetProfile, load_target_profile
from staging_validation.telemetry.capture import LogFollower, TelemetrySource


def target_profile(state: CampaignState) -> TargetProfile:
    return load_target_profile(state.settings.get("target_profile") or None)


def target_client(state: CampaignState) -> TargetClient:
    return TargetClient(target_profile(state), base_url=state.settings.get("base_url"))


def telemetry_store(data_root: str | Path, state: CampaignState) -> Path:
    return campaign_dir(data_root, state.campaign) / "telemetry"


def log_follower(data_root: str | Path, state: CampaignState) -> LogFollower:
    source = validate_model(state.settings.get("telemetry"), TelemetrySource,
                            f"campaign {state.campaign}: settings.telemetry")
    time_path = target_profile(state).telemetry.fields.time
    return LogFollower(source, telemetry_store(data_root, state), state.timing, time_path=time_path)
