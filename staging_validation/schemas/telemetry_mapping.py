"""Which log lines are which events, and where each event column comes from: the target profile's
`telemetry` section. The defaults are the documented contract (docs/ARCHITECTURE.md, "Telemetry as the
simulator writes it"), so a deployment that logs as documented needs no telemetry section at all.

Classification is by structured fields only: a line's `msg` is compared to the rules in order (first
match wins); a JSON line that matches no rule is `error` when its level is at least `error_level`, else
`other`.
"""

from __future__ import annotations

import re

import duckdb
import pydantic

from staging_validation.config_files import StrictModel
from staging_validation.schemas.event_columns import EventKind

_PATH_SEGMENT = re.compile(r'^[^."\\]+$')


def _check_dotted_path(path: str) -> str:
    if not all(_PATH_SEGMENT.match(segment) for segment in path.split(".")):
        raise ValueError(
            f"{path!r} is not a dotted field path (segments separated by '.', no quotes or backslashes)"
        )
    return path


class MsgRule(StrictModel):
    """One `msg` pattern → one event kind. Exactly one of equals / prefix / regex."""

    kind: EventKind
    equals: str | None = None
    prefix: str | None = None
    regex: str | None = None  # a search (not an anchored match); RE2 syntax, as DuckDB evaluates it

    @pydantic.model_validator(mode="after")
    def _exactly_one_pattern(self) -> MsgRule:
        given = [name for name in ("equals", "prefix", "regex") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of equals, prefix, regex (got {given or 'none'})")
        if self.kind == EventKind.OTHER:
            raise ValueError("'other' is what unmatched lines become; it cannot be a rule's kind")
        if self.regex is not None:
            try:  # by the parser's own regex engine (RE2), which rejects some Python syntax (lookarounds)
                duckdb.execute("SELECT regexp_matches('', $1)", [self.regex]).fetchall()
            except duckdb.Error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {str(exc).splitlines()[0]}") from None
        return self


class EventFieldPaths(StrictModel):
    """Source field (dotted path into the JSON line) of every event column read from the line.

    `kind`, `origin`, `request_id` and `raw` are derived, so they have no entry here.
    """

    time: str = "time"  # epoch milliseconds (a number) or an ISO-8601 string
    level: str = "level"
    msg: str = "msg"
    user_hash: str = "hashedUserId"
    size_bytes: str = "size_bytes"
    built_in_ms: str = "built_in_ms"
    status: str = "status"
    reason: str = "reason"
    confidence: str = "confidence"
    input_length: str = "input_length"
    checked_in_ms: str = "checked_in_ms"
    source: str = "source"
    relationship_type: str = "relationship_type"
    voice_profile: str = "voice_profile"
    trust_level: str = "trust_level"
    attempt: str = "attempt"
    max_attempts: str = "max_attempts"
    violation_type: str = "violation_type"
    regen_in_ms: str = "regen_in_ms"
    route: str = "req.url"
    method: str = "req.method"
    http_status: str = "res.statusCode"
    duration_ms: str = "duration_ms"
    identity_op: str = "op"
    provider: str = "provider"
    provider_user_id: str = "provider_user_id"
    vi_user_id: str = "vi_user_id"

    @pydantic.field_validator("*")
    @classmethod
    def _dotted(cls, value: str) -> str:
        return _check_dotted_path(value)


def _documented(kind: EventKind, **pattern: str) -> MsgRule:
    """A rule of the documented contract: known good (a test validates every one), so built without the
    validator, whose regex check would open a DuckDB database whenever this module is imported."""
    return MsgRule.model_construct(kind=kind, **pattern)


# Disjoint, so their order only matters for speed: the most frequent first, the regex last.
DEFAULT_MSG_RULES = (
    _documented(EventKind.REQUEST_COMPLETED, equals="request completed"),
    _documented(EventKind.PACK_BUILT, equals="[Staging] ContinuityPack built"),
    _documented(EventKind.AMBIGUITY_CHECK, equals="[Staging] Ambiguity check completed"),
    _documented(EventKind.RELATIONSHIP_RESOLVED, equals="[Staging] Relationship resolved"),
    _documented(EventKind.IDENTITY_OP, equals="[Staging] Identity operation"),
    _documented(EventKind.PACK_MISSING, equals="[Staging] ContinuityPack missing: no continuity pack for request"),
    _documented(EventKind.PACK_FALLBACK, equals="[Staging] ContinuityPack fallback: using default pack"),
    _documented(EventKind.GOVERNOR_PASS, regex=r"^\[Staging\] Governor pass \d+/\d+$"),
)


class TelemetryMapping(StrictModel):
    """The `telemetry` section of a target profile."""

    rules: tuple[MsgRule, ...] = DEFAULT_MSG_RULES
    fields: EventFieldPaths = EventFieldPaths()
    # The first of these present on a line is its request id.
    request_id_fields: tuple[str, ...] = ("reqId", "requestId")
    # Sent by every probe request; its value starts with the prefix so the line's origin is "probe".
    request_id_header: str = pydantic.Field(default="x-request-id", min_length=1)
    probe_request_id_prefix: str = pydantic.Field(default="sv-", min_length=1)
    # Lines at or above this level count as errors whatever their kind.
    error_level: int = 50
    # Events at or above this level keep their raw line (`raw` column) as evidence for reports.
    evidence_level: int = 40
    # identity_op lines whose field is false get the op suffixed "_failed" (e.g. "link_failed").
    identity_ok_field: str = "ok"

    @pydantic.model_validator(mode="after")
    def _paths_are_values_not_objects(self) -> TelemetryMapping:
        paths = {*self.fields.model_dump().values(), *self.request_id_fields, self.identity_ok_field}
        for path in paths:
            if any(other.startswith(path + ".") for other in paths):
                raise ValueError(f"field {path!r} is mapped as a value, but other fields are read from inside it")
        return self

    @pydantic.field_validator("request_id_fields")
    @classmethod
    def _request_id_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one request-id field")
        return tuple(_check_dotted_path(path) for path in value)

    @pydantic.field_validator("identity_ok_field")
    @classmethod
    def _ok_path(cls, value: str) -> str:
        return _check_dotted_path(value)
