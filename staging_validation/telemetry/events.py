"""The telemetry event: one row per parsed log line, of one of the target's event kinds or `other`.

The parser (`telemetry.parse`) fills this schema from the target's log using the field mapping of the
target profile. Lines that are not JSON objects with a level or a msg are counted as unparsed and not
stored as rows; a parsed line that matches no event of the mapping is stored with kind `other`.
Columns that do not apply to a kind are null.
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa


class EventKind(StrEnum):
    PACK_BUILT = "pack_built"
    PACK_MISSING = "pack_missing"
    PACK_FALLBACK = "pack_fallback"
    AMBIGUITY_CHECK = "ambiguity_check"
    RELATIONSHIP_RESOLVED = "relationship_resolved"
    GOVERNOR_PASS = "governor_pass"
    REQUEST_COMPLETED = "request_completed"
    IDENTITY_OP = "identity_op"
    ERROR = "error"  # level >= 50 with no more specific kind
    OTHER = "other"  # valid pino JSON that matches no event of the profile


EVENT_SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("ms", tz="UTC")),  # the line's own `time`
        pa.field("kind", pa.string(), nullable=False),  # an EventKind value
        pa.field("level", pa.int16()),
        pa.field("request_id", pa.string()),
        pa.field("origin", pa.string(), nullable=False),  # "probe" (request id carries our prefix) | "organic"
        pa.field("msg", pa.string()),
        pa.field("user_hash", pa.string()),
        # pack_built
        pa.field("size_bytes", pa.int64()),
        pa.field("built_in_ms", pa.float64()),
        # ambiguity_check (status also used by governor_pass)
        pa.field("status", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("input_length", pa.int64()),
        pa.field("checked_in_ms", pa.float64()),
        # relationship_resolved
        pa.field("source", pa.string()),
        pa.field("relationship_type", pa.string()),
        pa.field("voice_profile", pa.string()),
        pa.field("trust_level", pa.string()),
        # governor_pass
        pa.field("attempt", pa.int32()),
        pa.field("max_attempts", pa.int32()),
        pa.field("violation_type", pa.string()),
        pa.field("regen_in_ms", pa.float64()),
        # request_completed
        pa.field("route", pa.string()),
        pa.field("method", pa.string()),
        pa.field("http_status", pa.int32()),
        pa.field("duration_ms", pa.float64()),
        # identity_op
        pa.field("identity_op", pa.string()),  # create | resolve | link | lookup | link_failed
        pa.field("provider", pa.string()),
        pa.field("provider_user_id", pa.string()),
        pa.field("vi_user_id", pa.string()),
        # the line itself, for evidence in reports
        pa.field("raw", pa.string()),
    ]
)
