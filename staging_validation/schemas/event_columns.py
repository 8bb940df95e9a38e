"""The telemetry event without Arrow: its kinds and its columns with their SQL types.

One row per parsed log line, of one of the target's event kinds or `other`. Lines that are not JSON
objects with a level or a msg are counted as unparsed and not stored as rows; a parsed line that matches
no event of the mapping is stored with kind `other`. Columns that do not apply to a kind are null.

The classifier (`telemetry.classify`) selects these columns in SQL; `telemetry.events` is the same
columns as an Arrow schema (EVENT_SCHEMA), for stored events. This module imports neither DuckDB nor
Arrow, so what only needs the kinds (or streams a log through SQL, like `analyze`) starts light.
"""

from __future__ import annotations

from enum import StrEnum


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


# The concern each target event belongs to: a count of a kind is observable only when its concern shows in
# the telemetry at all (a log without any ContinuityPack line says nothing about missing packs).
EVENT_FAMILIES = {
    EventKind.PACK_BUILT: "ContinuityPack",
    EventKind.PACK_MISSING: "ContinuityPack",
    EventKind.PACK_FALLBACK: "ContinuityPack",
    EventKind.AMBIGUITY_CHECK: "ambiguity check",
    EventKind.RELATIONSHIP_RESOLVED: "relationship",
    EventKind.GOVERNOR_PASS: "governor",
    EventKind.REQUEST_COMPLETED: "request",
    EventKind.IDENTITY_OP: "identity",
}

# Column → DuckDB type, in schema order. `time` is stored to the millisecond, in UTC.
EVENT_COLUMNS = {
    "time": "TIMESTAMPTZ",  # the line's own `time`
    "kind": "VARCHAR",  # an EventKind value
    "level": "SMALLINT",
    "request_id": "VARCHAR",
    "origin": "VARCHAR",  # "probe" (request id carries our prefix) | "organic"
    "msg": "VARCHAR",
    "user_hash": "VARCHAR",
    # pack_built
    "size_bytes": "BIGINT",
    "built_in_ms": "DOUBLE",
    # ambiguity_check (status also used by governor_pass)
    "status": "VARCHAR",
    "reason": "VARCHAR",
    "confidence": "DOUBLE",
    "input_length": "BIGINT",
    "checked_in_ms": "DOUBLE",
    # relationship_resolved
    "source": "VARCHAR",
    "relationship_type": "VARCHAR",
    "voice_profile": "VARCHAR",
    "trust_level": "VARCHAR",
    # governor_pass
    "attempt": "INTEGER",
    "max_attempts": "INTEGER",
    "violation_type": "VARCHAR",
    "regen_in_ms": "DOUBLE",
    # request_completed
    "route": "VARCHAR",
    "method": "VARCHAR",
    "http_status": "INTEGER",
    "duration_ms": "DOUBLE",
    # identity_op
    "identity_op": "VARCHAR",  # create | resolve | link | lookup | link_failed
    "provider": "VARCHAR",
    "provider_user_id": "VARCHAR",
    "vi_user_id": "VARCHAR",
    # the line itself, for evidence in reports
    "raw": "VARCHAR",
}
NOT_NULL_COLUMNS = frozenset({"kind", "origin"})
