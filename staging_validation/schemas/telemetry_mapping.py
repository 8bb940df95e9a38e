"""Which log lines are which events, and where each event column comes from: the target profile's
`telemetry` section. The defaults are the documented contract (docs/ARCHITECTURE.md, "Telemetry as the
simulator writes it"), so a deployment that logs as documented needs no telemetry section at all.

Classification is by structured fields only: a line's `msg` (or the field a rule names) is compared to the
rules in order (first match wins); a JSON line that matches no rule is `error` when its level is at least
`error_level`, else `other`. A rule may set constant event columns on the events it matches
(`constants: {identity_op: create}`) for a target whose lines do not carry that field.

A line is an event only when its time is a real moment: a number (or numeric string) of the mapping's
`time_format` unit, or an ISO-8601 string, inside the window the reader is given (for a campaign: from a
little before its start to the end of its last possible hour). Any other JSON line is *unparsed*, as are
lines that are not JSON objects, lines longer than `max_line_bytes` and lines whose level is neither a
number nor one of `level_names`.

A target with several logs (request lines on stdout, another concern's events in a JSONL file) names a
mapping per extra log under `sources`; the campaign's telemetry sources refer to them by name
(`telemetry.capture.TelemetrySource.mapping`).

`not_exposed` declares event kinds the target does not log at all (with the reason): their counts are
"not observed", never 0 (see `telemetry.aggregates`, "Observable").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal

import duckdb
import pydantic

from staging_validation.config_files import StrictModel
from staging_validation.schemas.event_columns import EVENT_COLUMNS, EVENT_FAMILIES, EventKind

# Event columns a rule may set to a constant: not the derived ones, nor the line's own time and level.
SETTABLE_COLUMNS = frozenset(EVENT_COLUMNS) - {"time", "kind", "level", "origin", "request_id", "raw"}
TimeFormat = Literal["auto", "epoch_ms", "epoch_s", "iso8601"]
SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")  # a folder name of the capture store
MAX_LINE_BYTES = 1 << 20

_PATH_SEGMENT = re.compile(r'^[^."\\]+$')


def _check_dotted_path(path: str) -> str:
    if not all(_PATH_SEGMENT.match(segment) for segment in path.split(".")):
        raise ValueError(
            f"{path!r} is not a dotted field path (segments separated by '.', no quotes or backslashes)"
        )
    return path


class MsgRule(StrictModel):
    """One pattern on `msg` (or on `field`) → one event kind. Exactly one of equals / prefix / regex."""

    kind: EventKind
    equals: str | None = None
    prefix: str | None = None
    regex: str | None = None  # a search (not an anchored match); RE2 syntax, as DuckDB evaluates it
    field: str | None = None  # dotted path of the text the pattern applies to; None: the mapping's msg field
    # Constant event columns of the events this rule matches, e.g. {"identity_op": "create"}.
    constants: dict[str, str | int | float | bool] = pydantic.Field(default_factory=dict)

    @pydantic.field_validator("field")
    @classmethod
    def _field_path(cls, value: str | None) -> str | None:
        return None if value is None else _check_dotted_path(value)

    @pydantic.field_validator("constants")
    @classmethod
    def _settable(cls, value: dict) -> dict:
        unknown = sorted(set(value) - SETTABLE_COLUMNS)
        if unknown:
            raise ValueError(f"cannot set {unknown}: a rule sets only event columns {sorted(SETTABLE_COLUMNS)}")
        return value

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

    time: str = "time"  # a number of the mapping's time_format (epoch ms by default) or an ISO-8601 string
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
    # _fields_set given (its default), so mypy does not take a key of **pattern for it.
    return MsgRule.model_construct(_fields_set=None, kind=kind, **pattern)


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
    """The `telemetry` section of a target profile: how its (main) log reads, and under `sources` how each
    further log of the target reads."""

    rules: tuple[MsgRule, ...] = DEFAULT_MSG_RULES
    fields: EventFieldPaths = EventFieldPaths()
    # auto: a number is epoch ms, a string a number of epoch ms or an ISO-8601 time.
    time_format: TimeFormat = "auto"
    # Level names (compared case-insensitively) → numeric level, for a log writing "info"/"warn"/"error".
    # Empty: levels are numbers (read natively, which is cheaper).
    level_names: dict[str, int] = pydantic.Field(default_factory=dict)
    # Event kinds this log never carries, with the reason: counted as "not observed", never as 0.
    not_exposed: dict[EventKind, str] = pydantic.Field(default_factory=dict)
    # A longer line is not read (the capture keeps its first bytes, marked truncated): counted, unparsed.
    max_line_bytes: int = pydantic.Field(default=MAX_LINE_BYTES, ge=1024, le=64 << 20)
    # How long before the campaign start a line may be and still be an event of it (clock skew, launch).
    before_start_allowance_s: float = pydantic.Field(default=300.0, ge=0)
    # Below this share of readable (parsed) lines, the aggregates and reports warn.
    min_readable_share: float = pydantic.Field(default=0.5, ge=0, le=1)
    # Further logs of the target by name: each its own mapping (no nested sources).
    sources: dict[str, TelemetryMapping] = pydantic.Field(default_factory=dict)
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
        paths = {*self.fields.model_dump().values(), *self.request_id_fields, self.identity_ok_field,
                 *(rule.field for rule in self.rules if rule.field is not None)}
        for path in paths:
            if any(other.startswith(path + ".") for other in paths):
                raise ValueError(f"field {path!r} is mapped as a value, but other fields are read from inside it")
        return self

    @pydantic.model_validator(mode="before")
    @classmethod
    def _default_rules_skip_what_is_not_exposed(cls, data: object) -> object:
        """A profile that only declares kinds not exposed keeps the documented rules for the others."""
        if isinstance(data, dict) and data.get("not_exposed") and "rules" not in data:
            declared = {str(kind) for kind in data["not_exposed"]}
            data = {**data, "rules": tuple(rule for rule in DEFAULT_MSG_RULES if rule.kind.value not in declared)}
        return data

    @pydantic.model_validator(mode="after")
    def _declarations_agree(self) -> TelemetryMapping:
        ruled = {rule.kind for rule in self.rules}
        contradicted = sorted(kind.value for kind in self.not_exposed if kind in ruled)
        if contradicted:
            raise ValueError(f"not_exposed names {contradicted}, which rules also recognise; remove one")
        if any(EventKind(kind) in (EventKind.OTHER, EventKind.ERROR) for kind in self.not_exposed):
            raise ValueError("not_exposed: 'other' and 'error' are not target events")
        for name, source in self.sources.items():
            if not SOURCE_NAME.match(name):
                raise ValueError(f"source name {name!r}: lowercase letters, digits, '-' and '_' (a folder name)")
            if source.sources:
                raise ValueError(f"source {name!r} names sources of its own; sources are one level deep")
        return self

    @pydantic.field_validator("level_names")
    @classmethod
    def _lowercase_names(cls, value: dict[str, int]) -> dict[str, int]:
        return {name.lower(): level for name, level in value.items()}

    def for_source(self, name: str | None) -> TelemetryMapping:
        """The mapping of the named source (None: this main one). A source that does not set the probe
        request-id header or prefix inherits this mapping's: the probes send one header to one service."""
        if name is None:
            return self
        if name not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none"
            raise ValueError(f"no telemetry mapping named {name!r} in the profile's telemetry.sources (known: {known})")
        source = self.sources[name]
        inherited = {key: getattr(self, key) for key in ("request_id_header", "probe_request_id_prefix")
                     if key not in source.model_fields_set}
        return source.model_copy(update=inherited)

    def source_mappings_by_path(self, source_names: Iterable[str | None]) -> dict[str, TelemetryMapping]:
        """The mappings of a campaign's sources (None: the main section) by their profile path: `telemetry`,
        `telemetry.sources.<name>`."""
        return {"telemetry" if name is None else f"telemetry.sources.{name}": self.for_source(name)
                for name in source_names}

    def recognised_kinds(self) -> frozenset[EventKind]:
        """The event kinds this mapping can produce from a line: its rules' kinds, and error/other."""
        return frozenset({rule.kind for rule in self.rules} | {EventKind.ERROR, EventKind.OTHER})

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


def unobservable_kinds(mappings: Mapping[str, TelemetryMapping]) -> dict[EventKind, tuple[str, str] | None]:
    """The target event kinds (`EVENT_FAMILIES`) that no mapping of a log's sources recognises, so their
    counts can never be observed: kind → (key of the mapping declaring it `not_exposed`, its reason), or
    None when none declares it (no rule recognises it). `mappings` by a key of the caller's (a profile path)."""
    recognised = frozenset().union(*(mapping.recognised_kinds() for mapping in mappings.values()))
    found: dict[EventKind, tuple[str, str] | None] = {}
    for kind in EVENT_FAMILIES:
        if kind in recognised:
            continue
        found[kind] = next(((key, mapping.not_exposed[kind]) for key, mapping in mappings.items()
                            if kind in mapping.not_exposed), None)
    return found


def unobservable_items(mappings: Mapping[str, TelemetryMapping]) -> dict[str, str]:
    """`unobservable_kinds` as the gates name them: kind → `"<profile path>.not_exposed.<kind>: <reason>"`
    (or `"<profile path>.rules: no rule recognises <kind>"`), `mappings` keyed by their profile path."""
    first = next(iter(mappings), "telemetry")
    return {kind.value: (f"{declared[0]}.not_exposed.{kind.value}: {declared[1]}" if declared is not None
                         else f"{first}.rules: no rule recognises {kind.value}")
            for kind, declared in unobservable_kinds(mappings).items()}
