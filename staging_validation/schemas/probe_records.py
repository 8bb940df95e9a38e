"""The probe record: one row per request the validator sent, in a fixed schema.

Every probe, whatever happened on the wire, produces exactly these columns; gates, checks and reports
read nothing else. A probe never raises on a bad response: it records the outcome and the error text.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pyarrow as pa


@dataclasses.dataclass
class ProbeRecord:
    time: datetime  # wall-clock scheduled send time, timezone-aware UTC
    campaign_s: float  # seconds since campaign start of the scheduled send time
    probe: str  # deploy | smoke | prompt_set | stress | identity | determinism
    case: str  # e.g. health, normal, ambiguous, relationship, stream, a prompt id, create_discord
    user: str  # the user id the request was sent as ("" when the route has no user)
    route: str
    method: str
    outcome: str  # an Outcome value (schemas.outcome)
    latency_ms: float | None  # from the *scheduled* send time to the end of the response; None if not sent
    http_status: int | None = None
    send_lag_ms: float | None = None  # actual send minus scheduled send (stress: coordinated-omission guard)
    dropped: bool = False  # never sent by the validator (outcome dropped, stress); never silently skipped
    passed: bool | None = None  # did the case's expectation hold (None: the case has no expectation)
    expected_ambiguous: bool | None = None  # prompt-set label
    record_id: str | None = None
    answer: str | None = None  # truncated answer text
    ambiguous: bool | None = None  # the target's ambiguity verdict, extracted through the profile
    relationship_type: str | None = None
    voice_profile: str | None = None
    trust_level: str | None = None
    vi_user_id: str | None = None
    sse_events: int | None = None
    request_id: str | None = None  # the request id the validator sent, to join with telemetry
    error: str | None = None  # why the case failed or the request did not complete
    rate_limited_retries: int = 0  # 429s waited out before this outcome (the stress probe never retries)
    # "<profile path>: <reason>; ..." for what the case needed and the profile declares not exposed.
    not_exposed: str | None = None
    body_bytes: int | None = None  # response body bytes read (at most the profile's http.max_body_bytes)
    body_truncated: bool | None = None  # the body was longer than the cap and was cut off there


RECORD_SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("campaign_s", pa.float64(), nullable=False),
        pa.field("probe", pa.string(), nullable=False),
        pa.field("case", pa.string(), nullable=False),
        pa.field("user", pa.string(), nullable=False),
        pa.field("route", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("latency_ms", pa.float64()),
        pa.field("http_status", pa.int32()),
        pa.field("send_lag_ms", pa.float64()),
        pa.field("dropped", pa.bool_(), nullable=False),
        pa.field("passed", pa.bool_()),
        pa.field("expected_ambiguous", pa.bool_()),
        pa.field("record_id", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("ambiguous", pa.bool_()),
        pa.field("relationship_type", pa.string()),
        pa.field("voice_profile", pa.string()),
        pa.field("trust_level", pa.string()),
        pa.field("vi_user_id", pa.string()),
        pa.field("sse_events", pa.int32()),
        pa.field("request_id", pa.string()),
        pa.field("error", pa.string()),
        # Nullable: files written before the column existed read as null.
        pa.field("rate_limited_retries", pa.int32()),
        pa.field("not_exposed", pa.string()),
        pa.field("body_bytes", pa.int64()),
        pa.field("body_truncated", pa.bool_()),
    ]
)


def records_to_table(records: list[ProbeRecord]) -> pa.Table:
    columns = {field.name: [getattr(r, field.name) for r in records] for field in RECORD_SCHEMA}
    return pa.Table.from_pydict(columns, schema=RECORD_SCHEMA)
