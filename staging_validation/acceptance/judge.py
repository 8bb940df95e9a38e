"""Re-judging a stored campaign: gates and decision recomputed from its stored hourly tables alone.

The `verdict` CLI and the Dagster verdict assets share this, so a user who tightens a threshold and
re-judges gets exactly what the campaign would have decided with that policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from staging_validation.acceptance.decision import Decision, EarlyStop, coverage, decide, judged_hours
from staging_validation.acceptance.gates import GateResult, evaluate_gates
from staging_validation.acceptance.monitor import Alert
from staging_validation.acceptance.policy import Policy, campaign_policy
from staging_validation.acceptance.report import CampaignEvidence
from staging_validation.campaigns import (
    HOURLY_ASSET_PROBE_RECORDS,
    HOURLY_ASSET_TELEMETRY_EVENTS,
    CampaignState,
    load_campaign_state,
    load_hourly_table,
)
from staging_validation.schemas.probe_records import RECORD_SCHEMA
from staging_validation.storage import campaign_dir
from staging_validation.schemas.events import EVENT_SCHEMA

# The hour-24 identity and determinism tests, stored once per campaign by the verdict assets.
FINAL_CHECKS_PATH = Path("verdict") / "final_checks.parquet"


def with_final_checks(records: pd.DataFrame, final: pd.DataFrame, state: CampaignState) -> pd.DataFrame:
    """The hourly probe records plus the hour-24 checks, which join at hour `total_hours`."""
    if final.empty:
        return records
    final = final.assign(hour=state.total_hours)
    return pd.concat([records, final], ignore_index=True) if len(records) else final


def load_campaign_tables(data_root: str | Path, state: CampaignState) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records, events) of every stored hour, with the final checks."""
    records = load_hourly_table(data_root, state.campaign, HOURLY_ASSET_PROBE_RECORDS, RECORD_SCHEMA)
    events = load_hourly_table(data_root, state.campaign, HOURLY_ASSET_TELEMETRY_EVENTS, EVENT_SCHEMA)
    final_path = campaign_dir(data_root, state.campaign) / FINAL_CHECKS_PATH
    final = pq.read_table(final_path, schema=RECORD_SCHEMA).to_pandas() if final_path.exists() else records.iloc[0:0]
    return with_final_checks(records, final, state), events


def decide_campaign(state: CampaignState, gates: list[GateResult], hours_with_data: Iterable[int],
                    policy: Policy) -> tuple[Decision, list[int], float]:
    """The decision over the hours this round judges: (decision, observed hours, coverage)."""
    judged = judged_hours(state)
    observed = sorted(h for h in set(hours_with_data) if h < judged)
    share = coverage(observed, judged)
    stopped = EarlyStop(**state.early_stop) if state.early_stop else None
    return decide(gates, share, policy, extension_count=state.extension_count, stopped=stopped), observed, share


def judge_campaign(data_root: str | Path, campaign_id: str, policy: Policy | None = None,
                   alerts: list[Alert] | None = None) -> CampaignEvidence:
    """Gates and decision of a stored campaign (ConfigError if the id is invalid or unknown), judged with
    `policy`, else the campaign's own policy file, else the shipped default."""
    state = load_campaign_state(data_root, campaign_id)
    policy = policy or campaign_policy(state)
    records, events = load_campaign_tables(data_root, state)
    gates = evaluate_gates(records, events, policy)
    decision, observed, share = decide_campaign(state, gates, events["hour"].astype(int), policy)
    return CampaignEvidence(campaign=state.campaign, state=state, records=records, events=events, gates=gates,
                            decision=decision, alerts=alerts or [], hours_observed=observed,
                            decided_at=pd.Timestamp.now(tz="UTC").to_pydatetime(), coverage=share,
                            judged_hours=judged_hours(state), extension_count=state.extension_count,
                            policy=policy)
