"""Build probe-record and telemetry-event tables from a few dicts, filling the schema's defaults.

The shapes are exactly what `acceptance.judge.load_hourly_table` returns: the shared schema plus `hour`.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from staging_validation.collection.recorded_steps import StepOutcome, StepStatus, record_step
from staging_validation.layout import HOURLY_ASSET_PROBE_RECORDS, HOURLY_ASSET_TELEMETRY_EVENTS, CampaignLayout
from staging_validation.lifecycle import CampaignState
from staging_validation.plan import plan_for_hour
from staging_validation.schemas.events import EVENT_SCHEMA
from staging_validation.schemas.probe_records import RECORD_SCHEMA
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.storage import atomic_write_text

START = pd.Timestamp("2026-11-20T00:00:00Z")
RECORD_DEFAULTS = {"probe": "smoke", "case": "normal", "user": "u1", "route": "/v1/chat", "method": "POST",
                   "outcome": "ok", "latency_ms": 120.0, "dropped": False, "http_status": 200}
EVENT_DEFAULTS = {"origin": "organic", "level": 30}


def _table(rows: list[dict], schema: pa.Schema, defaults: dict) -> pd.DataFrame:
    columns: dict[str, list] = {field.name: [] for field in schema}
    hours = []
    for index, row in enumerate(rows):
        row = {**defaults, **row}
        hour = row.pop("hour", 0)
        # Rows are a second apart inside their hour unless a time is given.
        row.setdefault("time", START + pd.Timedelta(hours=hour, seconds=index % 3600))
        row["time"] = pd.Timestamp(row["time"]).to_pydatetime()
        if schema is RECORD_SCHEMA:
            row.setdefault("campaign_s", (pd.Timestamp(row["time"]) - START).total_seconds())
        if schema is EVENT_SCHEMA and "raw" not in row:
            row["raw"] = json.dumps({k: v for k, v in row.items() if k != "time" and v is not None},
                                    default=str)
        for name in columns:
            columns[name].append(row.get(name))
        hours.append(hour)
    frame = pa.Table.from_pydict(columns, schema=schema).to_pandas()
    frame["hour"] = pd.Series(hours, dtype="int64")
    return frame


def records(rows: list[dict]) -> pd.DataFrame:
    return _table(rows, RECORD_SCHEMA, RECORD_DEFAULTS)


def events(rows: list[dict]) -> pd.DataFrame:
    return _table(rows, EVENT_SCHEMA, EVENT_DEFAULTS)


def chat_events(request: int, hour: int, *, ambiguous: bool = False, attempts: int = 1,
                regen_ms: float = 400.0, user: str | None = None, relationship: str = "public",
                origin: str = "organic", duration_ms: float = 350.0) -> list[dict]:
    """The telemetry of one chat request as the architecture describes it, in order."""
    request_id = f"{'sv-' if origin == 'probe' else 'req-'}{request}"
    user_hash = user or f"user-{request % 40}"
    base = {"request_id": request_id, "origin": origin, "hour": hour}
    lines = [{**base, "kind": "pack_built", "user_hash": user_hash, "size_bytes": 40_000, "built_in_ms": 60.0},
             {**base, "kind": "ambiguity_check", "status": "AMBIGUOUS" if ambiguous else "clear",
              "reason": "MALFORMED_QUERY" if ambiguous else "NONE", "checked_in_ms": 3.0}]
    if not ambiguous:
        lines.append({**base, "kind": "relationship_resolved", "user_hash": user_hash, "source": "database",
                      "relationship_type": relationship, "voice_profile": "neutral", "trust_level": "standard"})
        for attempt in range(1, attempts + 1):
            lines.append({**base, "kind": "governor_pass", "attempt": attempt, "max_attempts": 5,
                          "status": "passed" if attempt == attempts else "violation_detected",
                          "violation_type": "none" if attempt == attempts else "repetition",
                          "regen_in_ms": 0.0 if attempt == 1 else regen_ms})
    lines.append({**base, "kind": "request_completed", "route": "/v1/chat", "method": "POST", "http_status": 200,
                  "duration_ms": duration_ms})
    return lines


def healthy_campaign(hours: int = 24, requests_per_hour: int = 10, ambiguous_every: int = 50,
                     regen_every: int = 10, regen_ms: float = 400.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A campaign every gate passes: (records, events)."""
    event_rows: list[dict] = []
    for n in range(hours * requests_per_hour):
        attempts = 2 if n % regen_every == 3 else 1
        event_rows += chat_events(n, n // requests_per_hour, ambiguous=n % ambiguous_every == 1,
                                  attempts=attempts, regen_ms=regen_ms)
        event_rows += chat_events(100_000 + n, n // requests_per_hour, ambiguous=n % 5 == 0, origin="probe",
                                  attempts=attempts, regen_ms=regen_ms)
    record_rows = [{"probe": "prompt_set", "case": f"p{n}", "user": f"prompt-user-{n}", "hour": 2 + n % 5,
                    "expected_ambiguous": n % 4 == 0, "ambiguous": n % 4 == 0, "passed": True}
                   for n in range(100)]
    record_rows += [{"probe": "determinism", "case": "relationship", "user": "det-user", "hour": 1,
                     "relationship_type": "public", "voice_profile": "neutral", "trust_level": "standard",
                     "passed": True} for _ in range(5)]
    record_rows += [row for hour in range(hours) for row in identity_rows(hour)]
    record_rows += [{"probe": "deploy", "case": "health", "route": "/health", "method": "GET", "passed": True}]
    record_rows += [{"probe": probe, "case": case, "hour": hour, "passed": True}
                    for probe, hour in (("deploy", 0), ("smoke", 1), ("smoke", 1))
                    for case in ("normal", "ambiguous", "relationship", "stream")]
    return records(record_rows), events(event_rows)


def identity_rows(hour: int = 0, merged: bool = False) -> list[dict]:
    """One run of the identity probe (fresh identities each hour); `merged`: sovereign gets discord's id."""
    base = {"probe": "identity", "hour": hour, "route": "/v1/identity", "passed": True}
    discord_id = f"vi-{hour}-discord"
    return [{**base, "case": "create_discord", "vi_user_id": discord_id},
            {**base, "case": "create_sovereign", "vi_user_id": discord_id if merged else f"vi-{hour}-sovereign",
             "passed": not merged, "error": "accidental merge: both got one id" if merged else None},
            {**base, "case": "lookup_discord", "vi_user_id": discord_id},
            {**base, "case": "link_astralis", "vi_user_id": discord_id}]


def store_campaign(data_root, campaign: str, record_frame: pd.DataFrame, event_frame: pd.DataFrame,
                   **state_fields) -> None:
    """campaign.json (as the lifecycle would have left it) plus one Parquet file per hour and asset, as the
    Dagster IO manager writes them."""
    state_fields.setdefault("timing", CampaignTiming(start_ms=int(START.value // 1_000_000), hour_seconds=3600))
    state_fields.setdefault("created_at_ms", 0)
    state = CampaignState(campaign=campaign, **state_fields)
    layout = CampaignLayout.of(data_root, campaign)
    atomic_write_text(layout.state_file, state.model_dump_json())
    for asset, frame, schema in ((HOURLY_ASSET_PROBE_RECORDS, record_frame, RECORD_SCHEMA),
                                 (HOURLY_ASSET_TELEMETRY_EVENTS, event_frame, EVENT_SCHEMA)):
        layout.hours_dir(asset).mkdir(parents=True, exist_ok=True)
        for hour, rows in frame.groupby("hour"):
            table = pa.Table.from_pandas(rows.drop(columns="hour"), schema=schema, preserve_index=False)
            pq.write_table(table, layout.hour_file(asset, int(hour)))
    # The collector's record of each stored hour: every planned step ran (an hour not stored is a gap).
    for hour in sorted(set(record_frame["hour"]) | set(event_frame["hour"])):
        for step in plan_for_hour(int(hour), state.planned_hours).steps:
            record_step(data_root, campaign, StepOutcome(hour=int(hour), step=step, status=StepStatus.RAN,
                                                         started_ms=0, ended_ms=0, passed=True), [])
