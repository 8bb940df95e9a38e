"""The Dagster side of the validator's gaps: which probe runs did not record in their hour and why, the
`monitor.validator_gap` alerts, and stopping a campaign whose own runs
keep failing. The rules themselves are `staging_validation.validator_gaps` (plain functions)."""

from __future__ import annotations

import dataclasses
import time

import dagster as dg
import pyarrow.parquet as pq

from staging_validation.acceptance.alert_rules import Alert
from staging_validation.campaign.jobs import campaign_probes_job
from staging_validation.campaign.partitions import split_campaign_hour
from staging_validation.campaign.resources import CampaignStore
from staging_validation.layout import HOURLY_ASSET_PROBE_RECORDS
from staging_validation.lifecycle import CampaignState, fail_validator
from staging_validation.schemas.probe_records import RECORD_SCHEMA
from staging_validation.validator_gaps import (
    GAP_ALERT_RULE,
    Gap,
    ended_hours,
    find_gaps,
    recorded_steps,
    validator_failure,
)

VALIDATOR_FAILED_RULE = "monitor.validator_failed"
UNDER_WAY = {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}


def _hour_records(store: CampaignStore, campaign: str, hour: int):
    path = store.layout(campaign).hour_file(HOURLY_ASSET_PROBE_RECORDS, hour)
    if not path.exists():
        return RECORD_SCHEMA.empty_table().to_pandas()
    with path.open("rb") as handle:
        return pq.read_table(handle, schema=RECORD_SCHEMA).to_pandas()


def probe_run_cause(record: dg.RunRecord | None, hour_end_s: float) -> str | None:
    """Why an ended hour's probe run may not have recorded in its hour; None while it may still record."""
    if record is None:
        return "no probe run was launched for the hour (daemon down or the clock behind)"
    run = record.dagster_run
    started = record.start_time
    if run.status in UNDER_WAY:
        if started is not None and started < hour_end_s:
            return None  # started inside its hour: its rows are stored when it ends
        return "its probe run started after the hour had ended (queue lag)"
    if run.status == dg.DagsterRunStatus.FAILURE:
        return "its probe run failed (crashed or killed)"
    if run.status == dg.DagsterRunStatus.CANCELED:
        return "its probe run was canceled"
    if not run.is_finished:
        return "its probe run was still queued when the hour ended (queue lag)"
    if started is not None and started >= hour_end_s:
        return "its probe run started after the hour had ended (queue lag)"
    return "its probe run ended without recording it"


def _probe_runs_by_hour(records: list[dg.RunRecord]) -> dict[int, dg.RunRecord]:
    """The latest probe run of each hour (a retry supersedes the run it retries)."""
    found: dict[int, dg.RunRecord] = {}
    for record in sorted(records, key=lambda r: r.create_timestamp.timestamp()):
        run = record.dagster_run
        if run.job_name != campaign_probes_job.name or not run.tags.get("dagster/partition"):
            continue
        found[split_campaign_hour(run.tags["dagster/partition"])[1]] = record
    return found


def gap_alert(gap: Gap, now_ms: int) -> Alert:
    return Alert(now_ms, "warning", GAP_ALERT_RULE,
                 f"Validator gap: the {gap.step.value} step of hour {gap.hour} did not run in its hour: {gap.cause}. "
                 "This is the validator's fault, not the target's; it is made up in a later hour where the plan "
                 "allows, else named in the decision.",
                 1, [{"hour": gap.hour, "step": gap.step.value, "cause": gap.cause}])


def new_gap_alerts(store: CampaignStore, state: CampaignState, records: list[dg.RunRecord], progress: dict,
                   now_s: float | None = None) -> list[dict]:
    """Alerts for the gaps of the hours that ended since the last call, in hour order, stored at once.

    `progress["next_gap_hour"]` (the clock's cursor) is the first hour not yet judged; an hour whose probe
    run is still under way inside its hour waits, and so do the hours after it. A gap already in the
    campaign's alerts (a lost cursor) is not alerted twice."""
    now_s = time.time() if now_s is None else now_s
    done = ended_hours(state.timing.campaign_seconds(now_s), state.total_hours)
    hour = progress.get("next_gap_hour", 0)
    if hour >= done:
        return []
    runs = _probe_runs_by_hour(records)
    alerted = {f"{e['step']}@{e['hour']}" for a in store.read_alerts(state.campaign) if a["rule"] == GAP_ALERT_RULE
               for e in a.get("evidence", [])}
    raised = []
    while hour < done:
        cause = probe_run_cause(runs.get(hour), state.timing.hour_start_s(hour + 1))
        if cause is None:
            break
        recorded = recorded_steps(_hour_records(store, state.campaign, hour))
        for gap in find_gaps(state.planned_hours, hour + 1, recorded, unsettled=range(hour), causes={hour: cause}):
            if gap.key not in alerted:
                raised.append(dataclasses.asdict(gap_alert(gap, int(now_s * 1000))))
        hour += 1
    progress["next_gap_hour"] = hour
    if raised:
        store.append_alerts(state.campaign, raised)
    return raised


def stop_if_validator_failed(store: CampaignStore, state: CampaignState, records: list[dg.RunRecord],
                             now_s: float | None = None) -> dict | None:
    """Stop a campaign whose own runs keep failing (→ validator_failed, a final status: no more runs are
    requested for it; a re-judgement says why, `inconclusive.validator_failed`). Returns the alert stored,
    or None."""
    ended = sorted((r for r in records if r.dagster_run.is_finished and r.end_time is not None),
                   key=lambda r: r.end_time or 0.0)
    # A run and its retries (run_retries in dagster.yaml) are one attempt: judged by the latest of them.
    reason = validator_failure((r.dagster_run.tags.get("dagster/root_run_id", r.dagster_run.run_id),
                                r.dagster_run.status == dg.DagsterRunStatus.FAILURE) for r in ended)
    if reason is None:
        return None
    if not store.load(state.campaign).status.collecting:
        return None
    now_ms = int((time.time() if now_s is None else now_s) * 1000)
    fail_validator(store.data_root, state.campaign, reason, now_ms=now_ms)
    alert = dataclasses.asdict(Alert(now_ms, "critical", VALIDATOR_FAILED_RULE,
                                     f"Campaign stopped: {reason}.", 1, []))
    store.append_alerts(state.campaign, [alert])
    return alert
