"""Re-judging a stored campaign: gates and decision recomputed from its stored hourly tables alone.

The `verdict` CLI and the Dagster verdict assets share this, so a user who tightens a threshold and
re-judges gets exactly what the campaign would have decided with that policy.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from staging_validation.acceptance.alert_rules import Alert
from staging_validation.acceptance.decision import Decision, coverage, decide
from staging_validation.acceptance.gates import GateResult, evaluate_gates
from staging_validation.acceptance.policy import Policy, campaign_policy
from staging_validation.acceptance.report import CampaignEvidence
from staging_validation.campaign_target import unobservable_event_kinds
from staging_validation.collection.recorded_steps import collection_by_hour
from staging_validation.collection.validator_gaps import ValidatorCoverage, validator_coverage
from staging_validation.config_files import ConfigError
from staging_validation.layout import HOURLY_ASSET_PROBE_RECORDS, HOURLY_ASSET_TELEMETRY_EVENTS, CampaignLayout
from staging_validation.lifecycle import CampaignState, RoundSpec, load_campaign_state
from staging_validation.probes.deploy_steps import stored_deploy_steps
from staging_validation.schemas.events import EVENT_SCHEMA
from staging_validation.schemas.probe_records import RECORD_SCHEMA
from staging_validation.storage import DataPath


def read_parquet(path: DataPath, schema: pa.Schema) -> pd.DataFrame:
    """One stored table, from a local path or any UPath."""
    with path.open("rb") as handle:
        return pq.read_table(handle, schema=schema).to_pandas()


def load_hourly_table(layout: CampaignLayout, asset: str, schema: pa.Schema, below_hour: int) -> pd.DataFrame:
    """The stored hours 0..below_hour-1 of one hourly asset, concatenated, with an `hour` column."""
    frames = []
    for hour in layout.stored_hours(asset):
        if hour < below_hour:
            frames.append(read_parquet(layout.hour_file(asset, hour), schema).assign(hour=hour))
    if not frames:
        return schema.empty_table().to_pandas().assign(hour=pd.Series(dtype="int64"))
    return pd.concat(frames, ignore_index=True)


def with_final_checks(records: pd.DataFrame, final: pd.DataFrame, hour: int) -> pd.DataFrame:
    """The hourly probe records plus the final checks, which join at `hour` (the one after those judged)."""
    if final.empty:
        return records
    final = final.assign(hour=hour)
    return pd.concat([records, final], ignore_index=True) if len(records) else final


def load_campaign_tables(layout: CampaignLayout, round_spec: RoundSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records, events) a round judges: its hours as stored, with the round's final checks. Hours stored
    after the round (an extension's) are left out, so a round re-judged later sees what it saw."""
    judged = round_spec.judged_hours
    records = load_hourly_table(layout, HOURLY_ASSET_PROBE_RECORDS, RECORD_SCHEMA, judged)
    events = load_hourly_table(layout, HOURLY_ASSET_TELEMETRY_EVENTS, EVENT_SCHEMA, judged)
    final_path = layout.round_final_checks_file(round_spec.round_id)
    final = read_parquet(final_path, RECORD_SCHEMA) if final_path.exists() else records.iloc[0:0]
    return with_final_checks(records, final, judged), events


def round_validator_coverage(data_root: str | os.PathLike | UPath, state: CampaignState, round_spec: RoundSpec,
                             now_s: float | None = None) -> ValidatorCoverage:
    """What the validator collected of a round. An early-stopped round counts probe steps up to the hour
    before its stop (the stop hour was cut short on purpose), so a re-judgement later says the same."""
    now_s = time.time() if now_s is None else now_s
    judged = round_spec.judged_hours
    if round_spec.early_stop is not None:
        considered = round_spec.early_stop.hour
    else:
        considered = max(0, min(judged, math.floor(state.timing.campaign_seconds(now_s) / 3600)))
    layout = CampaignLayout.of(data_root, state.campaign)
    return validator_coverage(state, collection_by_hour(data_root, state, now_s), judged, considered,
                              layout.stored_hours(HOURLY_ASSET_TELEMETRY_EVENTS), now_s)


def decide_round(round_spec: RoundSpec, gates: list[GateResult], hours_with_data: Iterable[int],
                 policy: Policy, validator: ValidatorCoverage | None) -> tuple[Decision, list[int], float]:
    """The decision of one round, a pure function of its gates, hours and what the validator collected:
    (decision, observed hours, coverage)."""
    judged = round_spec.judged_hours
    observed = sorted(h for h in set(hours_with_data) if h < judged)
    share = coverage(observed, judged)
    decision = decide(gates, share, policy, extension_count=round_spec.extension_count, stopped=round_spec.early_stop,
                      validator=validator)
    return decision, observed, share


def round_for_rejudging(state: CampaignState, round_id: str | None) -> RoundSpec:
    """The round named, else the round a verdict run would judge now; before any round is due, the current
    round over the hours stored so far (a preview: nothing is recorded from a re-judgement)."""
    if round_id is None and not state.rounds and not state.current_round_due():
        return state.current_round()
    return state.round_to_judge(round_id)


def _unobservable(state: CampaignState) -> dict[str, str]:
    """What the campaign's telemetry can never show, from its target profile; nothing when the profile cannot
    be read any more (re-judged elsewhere): the gates are then judged as for the documented contract."""
    try:
        return unobservable_event_kinds(state)
    except ConfigError:
        return {}


def judge_campaign(data_root: str | os.PathLike | UPath, campaign_id: str, policy: Policy | None = None,
                   alerts: list[Alert] | None = None, round_id: str | None = None) -> CampaignEvidence:
    """Gates and decision of a stored campaign's round (ConfigError if the id, the round or the state is
    invalid), judged with `policy`, else the campaign's own policy file, else the shipped default."""
    state = load_campaign_state(data_root, campaign_id)
    layout = CampaignLayout.of(data_root, campaign_id)
    policy = policy or campaign_policy(state)
    round_spec = round_for_rejudging(state, round_id)
    records, events = load_campaign_tables(layout, round_spec)
    gates = evaluate_gates(records, events, policy, _unobservable(state))
    validator = round_validator_coverage(data_root, state, round_spec)
    decision, observed, share = decide_round(round_spec, gates, events["hour"].astype(int), policy, validator)
    recorded = state.verdict_round(round_spec.round_id)
    decided_at = (pd.Timestamp(recorded.decided_at_ms, unit="ms", tz="UTC") if recorded is not None
                  else pd.Timestamp.now(tz="UTC"))
    return CampaignEvidence(campaign=state.campaign, state=state, records=records, events=events, gates=gates,
                            decision=decision, alerts=alerts or [], hours_observed=observed,
                            decided_at=decided_at.to_pydatetime(), coverage=share,
                            judged_hours=round_spec.judged_hours, extension_count=round_spec.extension_count,
                            policy=policy, validator=validator,
                            deploy_steps=stored_deploy_steps(data_root, campaign_id))
