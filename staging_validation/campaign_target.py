"""A campaign's target and its log, as its stored settings name them (no Dagster import)."""

from __future__ import annotations

from pathlib import Path

from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignState
from staging_validation.storage import local_path
from staging_validation.target.client import TargetClient
from staging_validation.target.profile import TargetProfile, load_target_profile
from staging_validation.telemetry.capture import LogFollower


def target_profile(state: CampaignState) -> TargetProfile:
    return load_target_profile(state.settings.target_profile)


def target_client(state: CampaignState) -> TargetClient:
    return TargetClient(target_profile(state), base_url=state.settings.base_url)


def telemetry_store(data_root: str | Path, state: CampaignState) -> Path:
    return local_path(CampaignLayout.of(data_root, state.campaign).telemetry_dir)


def log_follower(data_root: str | Path, state: CampaignState) -> LogFollower:
    time_path = target_profile(state).telemetry.fields.time
    return LogFollower(state.settings.telemetry, telemetry_store(data_root, state), state.timing, time_path=time_path)
