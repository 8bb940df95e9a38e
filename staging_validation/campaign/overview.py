"""Every campaign at a glance: the `campaigns_overview` asset (one table row per campaign) and the
`campaign_hours_summary` asset (per campaign: one row per hour, and a chart of that campaign alone).

The `campaigns_overview` sensor reports both as materializations when what they show changed (sensors
decide, nothing here is slow): the UI's asset page then shows the latest table without a run.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import dagster as dg
import pandas as pd

from staging_validation.acceptance.judge import load_hourly_table
from staging_validation.acceptance.report import hourly_summary_chart
from staging_validation.campaign.assets import HOURLY_REPORT_SCHEMA
from staging_validation.campaign.metadata import number
from staging_validation.campaign.partitions import campaign_partitions
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.sensors import SENSOR_INTERVAL_S, readable_campaigns
from staging_validation.layout import HOURLY_ASSET_TELEMETRY_EVENTS
from staging_validation.lifecycle import CampaignState, CampaignStatus
from staging_validation.schemas.timing import hour_key

OVERVIEW_GROUP = "campaigns"
CODE_LOCATION = "staging_validation"  # workspace.yaml's location_name, in the UI's links
GATE_COLUMNS = [f"gate_{n}" for n in range(1, 6)]
OVERVIEW_COLUMNS = dg.TableSchema(columns=[
    dg.TableColumn("campaign", "string", description="Campaign id"),
    dg.TableColumn("decision", "string", description="ACCEPT, EXTEND, REJECT or INCONCLUSIVE; 'pending' before the "
                                                     "verdict"),
    dg.TableColumn("rule", "string", description="The rule that decided"),
    *[dg.TableColumn(name, "string", description=f"Gate {name[-1]} status at the last verdict")
      for name in GATE_COLUMNS],
    dg.TableColumn("status", "string", description="registered, running, extended, stopped early (verdict "
                                                   "pending), decided or validator_failed"),
    dg.TableColumn("hours_observed", "int", description="Hours with stored telemetry"),
    dg.TableColumn("hours_planned", "int", description="Planned hours plus extensions"),
    dg.TableColumn("profile", "string", description="Target profile (the deployment's contract)"),
    dg.TableColumn("report", "string", description="The acceptance report's file"),
])
HOUR_COLUMNS = dg.TableSchema(columns=[
    dg.TableColumn("hour", "int"),
    dg.TableColumn("state", "string", description="observed, ended (not stored yet), gap, skipped (after an "
                                                 "early stop) or not yet due"),
    dg.TableColumn("requests", "int"),
    dg.TableColumn("errors", "int", description="Error lines (level ≥ 50)"),
    dg.TableColumn("latency_p50_ms", "float"),
    dg.TableColumn("latency_p99_ms", "float"),
    dg.TableColumn("ambiguity_rate_percent", "float"),
    dg.TableColumn("zero_regen_share_percent", "float"),
])

campaigns_overview_asset = dg.AssetSpec(
    "campaigns_overview", group_name=OVERVIEW_GROUP, kinds={"python"},
    description="Every campaign in one table: profile, status, hours observed, each gate, the decision, its rule "
                "and the report file. Kept current by the campaigns_overview sensor.",
)
campaign_hours_summary_asset = dg.AssetSpec(
    "campaign_hours_summary", partitions_def=campaign_partitions, group_name=OVERVIEW_GROUP, kinds={"python"},
    description="One campaign's hours: a row per hour (observed, gap, skipped after an early stop, not yet due) "
                "and a chart of requests and latency for this campaign alone. Kept current by the "
                "campaigns_overview sensor.",
)


def _decision(store: CampaignStore, campaign: str) -> dict | None:
    path = store.layout(campaign).decision_file
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not decided yet, or being rewritten: the next tick shows it


def _status(state: CampaignState) -> str:
    if state.status == CampaignStatus.STOPPED and state.early_stop:
        return f"stopped at hour {state.stopped_at_hour} ({state.early_stop.rule}), verdict pending"
    if state.status == CampaignStatus.DECIDED and state.early_stop:
        return f"decided after an early stop at hour {state.stopped_at_hour}"
    return state.status.value


def _profile(state: CampaignState) -> str:
    profile = state.settings.target_profile
    return Path(profile).stem if profile else "documented"


def overview_row(store: CampaignStore, state: CampaignState) -> dict:
    decision = _decision(store, state.campaign)
    gates = {f"gate_{g['gate']}": g["status"] for g in decision["gates"]} if decision else {}
    layout = store.layout(state.campaign)
    report = layout.report_file
    return {
        "campaign": state.campaign,
        "decision": decision["decision"] if decision else "pending",
        "rule": decision["rule"] if decision else "",
        **{name: gates.get(name, "pending") for name in GATE_COLUMNS},
        "status": _status(state),
        "hours_observed": len(layout.stored_hours(HOURLY_ASSET_TELEMETRY_EVENTS)),
        "hours_planned": state.total_hours,
        "profile": _profile(state),
        "report": str(report) if report.exists() else "not written yet",
    }


def report_link(campaign: str) -> str:
    """The UI page of the campaign's acceptance_report partition (its markdown shows the charts)."""
    return f"/assets/acceptance_report?view=partitions&partition={campaign}"


def rejudge_link(campaign: str) -> str:
    """The campaign_reverdict launchpad with the campaign's partition chosen: one more click launches it."""
    return (f"/locations/{CODE_LOCATION}/jobs/campaign_reverdict/playground/setup"
            f"?tags%5B0%5D%5Bkey%5D=dagster%2Fpartition&tags%5B0%5D%5Bvalue%5D={campaign}")


def links_markdown(rows: list[dict]) -> str:
    """Per campaign, its decision and the two pages a person goes to next (campaign ids need no escaping:
    they are letters, digits, '-' and '_')."""
    lines = ["| campaign | decision | report | re-judge |", "|---|---|---|---|"]
    lines += [f"| {row['campaign']} | **{row['decision']}** | [report]({report_link(row['campaign'])}) | "
              f"[re-judge {row['campaign']}]({rejudge_link(row['campaign'])}) |" for row in rows]
    return "\n".join(lines)


def _hour_state(state: CampaignState, hour: int, observed: set[int], now_hour: int) -> str:
    if hour in observed:
        return "observed"
    if state.stopped_at_hour is not None and hour > state.stopped_at_hour:
        return f"skipped: the campaign stopped at hour {state.stopped_at_hour}"
    if hour >= now_hour:
        return "not yet due"
    if state.status.collecting:
        return "ended, not stored yet"  # its hour run may still be queued or running
    return "gap: nothing stored"


def hour_rows(store: CampaignStore, state: CampaignState, now_s: float | None = None) -> list[dict]:
    """One row per hour of the campaign's current round, from the stored hourly reports."""
    stored = load_hourly_table(store.layout(state.campaign), "hourly_report", HOURLY_REPORT_SCHEMA,
                               state.total_hours)
    reports = {int(row.hour): json.loads(row.report) for row in stored.itertuples()}
    now_hour = int(state.timing.campaign_seconds(now_s) // 3600)
    rows = []
    for hour in range(state.total_hours):
        report = reports.get(hour)
        row = {"hour": hour, "state": _hour_state(state, hour, set(reports), now_hour), "requests": None,
               "errors": None, "latency_p50_ms": None, "latency_p99_ms": None, "ambiguity_rate_percent": None,
               "zero_regen_share_percent": None}
        if report:
            latency = report["requests"]["latency_ms"]
            rate, share = report["ambiguity"]["organic_rate"], report["governor"]["zero_regeneration_share"]
            row.update(requests=report["requests"]["completed"], errors=report["error_lines"],
                       latency_p50_ms=_rounded(latency["p50"]), latency_p99_ms=_rounded(latency["p99"]),
                       ambiguity_rate_percent=_rounded(rate * 100 if rate is not None else None),
                       zero_regen_share_percent=_rounded(share * 100 if share is not None else None))
        rows.append(row)
    return rows


def _rounded(value: float | None) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), 1)


def _table(rows: list[dict], schema: dg.TableSchema) -> dg.MetadataValue:
    return dg.MetadataValue.table([dg.TableRecord(row) for row in rows], schema=schema)


def _fingerprint(content: object) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def overview_events(store: CampaignStore, states: list[CampaignState], cursor: dict) -> list[dg.AssetMaterialization]:
    """The materializations whose content changed since the cursor's fingerprints; updates `cursor`."""
    events = []
    rows = [overview_row(store, state) for state in states]
    if _fingerprint(rows) != cursor.get("overview"):
        cursor["overview"] = _fingerprint(rows)
        events.append(dg.AssetMaterialization(
            asset_key=campaigns_overview_asset.key,
            description="Every campaign, newest decision first in each row.",
            metadata={"campaigns": _table(rows, OVERVIEW_COLUMNS),
                      "open": dg.MetadataValue.md(links_markdown(rows)),
                      "count": dg.MetadataValue.int(len(rows)),
                      "decided": dg.MetadataValue.int(sum(row["decision"] != "pending" for row in rows)),
                      "rejected": dg.MetadataValue.int(sum(row["decision"] == "REJECT" for row in rows))},
        ))
    for state in states:
        # Rows without the 'not yet due' states: those change every hour without new data.
        hours = hour_rows(store, state)
        stored = [row for row in hours if row["state"] != "not yet due"]
        key = f"hours:{state.campaign}"
        if not stored or _fingerprint(stored) == cursor.get(key):
            continue
        cursor[key] = _fingerprint(stored)
        frame = pd.DataFrame(hours).set_index("hour")
        chart = base64.b64encode(hourly_summary_chart(frame, state.campaign)).decode("ascii")
        observed = [row for row in hours if row["state"] == "observed"]
        events.append(dg.AssetMaterialization(
            asset_key=campaign_hours_summary_asset.key,
            partition=state.campaign,
            metadata={
                "hours": _table(hours, HOUR_COLUMNS),
                "chart": dg.MetadataValue.md(f"![{state.campaign}: requests and latency by hour]"
                                             f"(data:image/png;base64,{chart})"),
                "hours_observed": dg.MetadataValue.int(len(observed)),
                "hours_skipped": dg.MetadataValue.int(sum(row["state"].startswith("skipped") for row in hours)),
                "hours_gap": dg.MetadataValue.int(sum(row["state"].startswith("gap") for row in hours)),
                "requests_total": dg.MetadataValue.int(sum(row["requests"] or 0 for row in observed)),
                "latency_p99_ms_worst_hour": number(max((row["latency_p99_ms"] for row in observed
                                                         if row["latency_p99_ms"] is not None), default=None), 1),
                "last_hour": dg.MetadataValue.text(hour_key(observed[-1]["hour"]) if observed else "none"),
            },
        ))
    return events


@dg.sensor(
    name="campaigns_overview",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the campaigns_overview table and each campaign's hours summary current: reports them "
                "when a campaign's status, hours or decision changed (no run).",
)
def campaigns_overview_sensor(context: dg.SensorEvaluationContext, store: CampaignStore):
    cursor = json.loads(context.cursor) if context.cursor else {}
    events = overview_events(store, readable_campaigns(context, store), cursor)
    if not events:
        return dg.SkipReason("no campaign changed")
    return dg.SensorResult(asset_events=events, cursor=json.dumps(cursor, sort_keys=True))
