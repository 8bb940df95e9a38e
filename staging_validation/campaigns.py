"""A campaign's registration and its stored hourly tables, as plain files (no Dagster import).

Layout under the data root (default `data/`):

    campaigns/<id>/campaign.json                 this module's CampaignState, written atomically
    campaigns/<id>/hours/<asset>/<HH>.parquet    one file per stored hour of an hourly asset
    campaigns/<id>/telemetry/                    the durable capture (cursor + raw lines per hour)
    campaigns/<id>/alerts.jsonl                  monitor alerts, append-only
    campaigns/<id>/outbox/                       every notification, sent or not
    campaigns/<id>/decision.json, STAGING_ACCEPTANCE_REPORT.md, staging-validation-metrics.txt, charts/

The Dagster IO manager writes the `hours/` files; `verdict` and the reports read them back from here,
so a re-judgement never depends on the target or on Dagster being up.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic

from staging_validation.config_files import ConfigError, StrictModel, validate_model
from staging_validation.schemas.timing import CampaignTiming, hour_key
from staging_validation.storage import atomic_write_text, campaign_dir, validate_campaign_id

MAX_CAMPAIGN_HOURS = 96  # 24 planned hours plus the longest extension the policy allows (72)
HOURLY_ASSET_PROBE_RECORDS = "probe_records"
HOURLY_ASSET_TELEMETRY_EVENTS = "telemetry_events"


class CampaignState(StrictModel):
    campaign: str  # a folder name under the data root, so validated like every campaign id
    created_at_ms: int
    timing: CampaignTiming
    planned_hours: int = pydantic.Field(default=24, ge=1, le=MAX_CAMPAIGN_HOURS)
    # active | stopped (early stop, awaiting its verdict) | validator_failed (its own runs kept failing,
    # awaiting its verdict) | decided
    status: str = "active"
    extension_count: int = 0
    extension_hours: int = 0  # hours added by extensions so far
    # Set when a critical failure ends the campaign before its planned end: the gate, the rule, the hour,
    # when it was first seen, the reason and evidence (acceptance.decision.EarlyStop's fields).
    early_stop: dict | None = None
    settings: dict = pydantic.Field(default_factory=dict)  # the launch config, secrets excluded
    validator_failure: str | None = None  # why the campaign was stopped as validator_failed

    @pydantic.field_validator("campaign")
    @classmethod
    def _valid_campaign_id(cls, value: str) -> str:
        return validate_campaign_id(value)

    @property
    def total_hours(self) -> int:
        return self.planned_hours + self.extension_hours

    @property
    def stopped_at_hour(self) -> int | None:
        return None if self.early_stop is None else int(self.early_stop["hour"])


def state_path(data_root: str | Path, campaign_id: str) -> Path:
    return campaign_dir(data_root, campaign_id) / "campaign.json"


def save_campaign_state(data_root: str | Path, state: CampaignState) -> None:
    validate_campaign_id(state.campaign)
    atomic_write_text(state_path(data_root, state.campaign), state.model_dump_json(indent=2))


def load_campaign_state(data_root: str | Path, campaign_id: str) -> CampaignState:
    path = state_path(data_root, campaign_id)
    if not path.exists():
        raise ConfigError(f"campaign {campaign_id!r}: no campaign registered at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path}: unreadable campaign state: {exc}") from None
    state = validate_model(data, CampaignState, f"{path}: invalid campaign state")
    if state.campaign != campaign_id:
        # An edited file would otherwise make every reader work in another campaign's folder.
        raise ConfigError(f"{path}: names campaign {state.campaign!r}, but is the registration of {campaign_id!r}")
    return state


def hourly_asset_dir(data_root: str | Path, campaign_id: str, asset_name: str) -> Path:
    return campaign_dir(data_root, campaign_id) / "hours" / asset_name


def stored_hours(data_root: str | Path, campaign_id: str, asset_name: str) -> list[int]:
    folder = hourly_asset_dir(data_root, campaign_id, asset_name)
    return sorted(int(p.stem) for p in folder.glob("*.parquet") if p.stem.isdigit())


def load_hourly_table(
    data_root: str | Path, campaign_id: str, asset_name: str, schema: pa.Schema
) -> pd.DataFrame:
    """Every stored hour of one hourly asset, concatenated, with an `hour` column; empty if none."""
    frames = []
    for hour in stored_hours(data_root, campaign_id, asset_name):
        path = hourly_asset_dir(data_root, campaign_id, asset_name) / f"{hour_key(hour)}.parquet"
        frame = pq.read_table(path, schema=schema).to_pandas()
        frame["hour"] = hour
        frames.append(frame)
    if not frames:
        empty = schema.empty_table().to_pandas()
        empty["hour"] = pd.Series(dtype="int64")
        return empty
    return pd.concat(frames, ignore_index=True)
