"""The runbook's aggregates — metrics snapshot, hourly report, final analysis — computed right.

Every number comes from structured fields of classified events (never a text search), through one SQL
aggregate (`_event_groups_sql`) that runs over whatever relation holds the events: a campaign's stored
events (pandas / Arrow) or, for `analyze`, the classification relation streaming over a whole log file,
so a day is aggregated in one pass without materializing its lines.

Percentiles are linear interpolation between closest ranks (DuckDB `quantile_cont`, numpy's default).

Observable: a count of an event kind means something only if the telemetry could show that kind. A kind
is *not observed* — printed "not observed" (with the reason), never 0, in `analyze` (text and --json), the
metrics text and the hourly/snapshot lines — when no mapping of the log's sources recognises it (a
mapping may say so with the reason, `not_exposed`), or when no event of its concern (`EVENT_FAMILIES`:
e.g. no ContinuityPack line at all for missing packs) was seen. The error count is not observed when no
line was readable. The metrics dicts keep numbers in those places (0, for consumers that compute) and
name the kinds under `not_observed` (kind → reason); `reported_metrics` is the view with the strings.

Readable share: the lines that are JSON log records (whatever their time) over all lines of the log,
under `lines`; below the mapping's `min_readable_share` the metrics carry a warning (`warnings`).
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from staging_validation.schemas.event_columns import EVENT_FAMILIES, EventKind
from staging_validation.schemas.outcome import Outcome
from staging_validation.schemas.telemetry_mapping import TelemetryMapping, unobservable_kinds
from staging_validation.telemetry.classify import (
    classification_sql,
    connect,
    reader_sql,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
SLOW_REQUEST_MS = 2000  # the runbook monitor's "slow request" threshold
TIMEOUT_STATUSES = (408, 504)
RATE_LIMITED_STATUS = 429
AMBIGUOUS_STATUS = "AMBIGUOUS"
CLEAR_STATUS = "clear"
GOVERNOR_PASSED_STATUS = "passed"
NO_VIOLATION = "none"
AMBIGUITY_REASONS = ("MALFORMED_QUERY", "DANGLING_REFERENCE", "UNDERSPECIFIED_COMPARISON", "CONTRADICTORY_REQUEST")
_GROUP_INPUT_COLUMNS = (
    "kind", "level", "request_id", "origin", "size_bytes", "built_in_ms", "status", "reason",
    "checked_in_ms", "source", "relationship_type", "attempt", "violation_type", "regen_in_ms",
    "http_status", "duration_ms", "identity_op",
)  # fmt: skip
_RECORD_INPUT_COLUMNS = ("probe", "outcome", "latency_ms", "dropped", "passed")
_QUANTILES = "[" + ", ".join(str(q) for q in PERCENTILES.values()) + "]"

_AMB, _REL = EventKind.AMBIGUITY_CHECK.value, EventKind.RELATIONSHIP_RESOLVED.value
_GOV, _REQ, _IDENT = EventKind.GOVERNOR_PASS.value, EventKind.REQUEST_COMPLETED.value, EventKind.IDENTITY_OP.value


def _event_groups_sql(relation: str, error_level: int) -> str:
    """One hash aggregate over the events: a few dozen groups keyed by kind and the kind's own
    categorical fields (a, b, n), carrying line counts (all, probe, errors; every line is probe or
    organic, so organic is the difference), the sums and the values percentiles need. Origin and error
    are counted, not keys: fewer keys to hash on every line.

    Grouping in one pass is what keeps a whole day's analysis close to the cost of reading it.
    """
    return f"""
SELECT
  kind,
  CASE kind WHEN '{_AMB}' THEN status WHEN '{_REL}' THEN relationship_type
            WHEN '{_GOV}' THEN violation_type WHEN '{_IDENT}' THEN identity_op END AS a,
  CASE kind WHEN '{_AMB}' THEN reason WHEN '{_REL}' THEN source END AS b,
  CASE kind WHEN '{_GOV}' THEN CASE WHEN status = '{GOVERNOR_PASSED_STATUS}' THEN attempt END
            WHEN '{_REQ}' THEN http_status END AS n,
  count(*) AS lines,
  count(*) FILTER (WHERE origin = 'probe') AS probe_lines,
  count(*) FILTER (WHERE level >= {error_level}) AS error_lines,
  sum(size_bytes) AS size_sum, count(size_bytes) AS size_n,
  sum(built_in_ms) AS build_sum, count(built_in_ms) AS build_n,
  sum(checked_in_ms) AS check_sum, count(checked_in_ms) AS check_n,
  -- kept per group, used from the request / governor groups only (a null test is cheaper per line
  -- than a kind comparison); slow requests are counted from the durations, not per line.
  list(duration_ms) FILTER (WHERE duration_ms IS NOT NULL) AS durations,
  -- Two lists over the same rows stay aligned; a list of structs would build a struct on every line.
  list(request_id) FILTER (WHERE attempt >= 2) AS regen_request_ids,
  list(regen_in_ms) FILTER (WHERE attempt >= 2) AS regen_ms
FROM {relation}
GROUP BY ALL
"""


# Regen path of a request = the sum of regen_in_ms over its attempts >= 2. A line without a request id
# cannot be joined to its request, so it stands alone.
_REGEN_PATHS_SQL = f"""
SELECT quantile_cont(path_ms, {_QUANTILES}), count(path_ms) FROM (
  SELECT sum(regen_ms) AS path_ms
  FROM (SELECT request_id, regen_ms, row_number() OVER () AS line
        FROM (SELECT unnest(regen_request_ids) AS request_id, unnest(regen_ms) AS regen_ms
              FROM event_groups WHERE kind = '{_GOV}'))
  GROUP BY coalesce(request_id, 'line ' || line))
"""


@dataclasses.dataclass
class EventSummary:
    """The aggregate of a set of events: the groups of `_event_groups_sql` (without their value lists)
    and what is computed from those lists (percentiles, slow requests)."""

    groups: list[dict]
    latency_ms: dict
    slow_requests: int
    regen_path_latency_ms: dict
    regen_path_requests: int


NOT_OBSERVED = "not observed"
_RECORD_WITHOUT_EVENT = "_sv_record_without_event"  # analyze: a JSON record whose time is no real moment


@dataclasses.dataclass(frozen=True)
class LineCounts:
    """The lines of a log: all of them, those not stored as events, and those that are JSON records."""

    total: int
    unparsed: int
    readable: int

    @property
    def readable_share(self) -> float | None:
        return self.readable / self.total if self.total else None


def _percentile_dict(values: list | None) -> dict:
    return dict(zip(PERCENTILES, values)) if values else {name: None for name in PERCENTILES}


def _summarize(con, relation: str, error_level: int) -> EventSummary:
    con.execute(f"CREATE TEMP TABLE event_groups AS {_event_groups_sql(relation, error_level)}")
    cursor = con.execute(
        "SELECT * EXCLUDE (durations, regen_request_ids, regen_ms), lines - probe_lines AS organic_lines "
        "FROM event_groups"
    )
    names = [column[0] for column in cursor.description]
    groups = [dict(zip(names, row)) for row in cursor.fetchall()]
    # fetchall, not fetchone: a result left unfinished blocks the connection's next statement
    [(latency, slow)] = con.execute(
        f"SELECT quantile_cont(d, {_QUANTILES}), count(*) FILTER (WHERE d >= {SLOW_REQUEST_MS}) "
        f"FROM (SELECT unnest(durations) AS d FROM event_groups WHERE kind = '{_REQ}')"
    ).fetchall()
    [(regen, regen_requests)] = con.execute(_REGEN_PATHS_SQL).fetchall()
    return EventSummary(groups, _percentile_dict(latency), slow, _percentile_dict(regen), regen_requests)


def _as_table(frame: pd.DataFrame | pa.Table, columns: tuple[str, ...], schema: pa.Schema) -> pa.Table:
    """The columns an aggregate reads, typed by the schema whatever pandas inferred (e.g. all-None)."""
    import pyarrow as pa  # stored tables only: `analyze` streams a log file and starts without Arrow

    if isinstance(frame, pa.Table):
        return frame.select(list(columns))
    typed = pa.schema([schema.field(name) for name in columns])
    return pa.Table.from_pandas(frame[list(columns)], schema=typed, preserve_index=False)


def summarize_events(events: pd.DataFrame | pa.Table, *, error_level: int = 50) -> EventSummary:
    """The aggregate of stored events (EVENT_SCHEMA columns; extra columns are ignored)."""
    from staging_validation.schemas.events import EVENT_SCHEMA  # Arrow, as in _as_table

    con = connect()
    try:
        con.register("stored_events", _as_table(events, _GROUP_INPUT_COLUMNS, EVENT_SCHEMA))
        return _summarize(con, "stored_events", error_level)
    finally:
        con.close()


_COUNT_WINDOW_BYTES = 16 << 20  # mapped at a time: a whole mapped log would count in the process's RSS
_COUNT_SLICE_BYTES = 1 << 20


def _count_lines(path: Path, result: dict) -> None:
    """Lines of the file (an unterminated last line counts): newlines compared in place on memory-mapped
    windows, vectorized, releasing the GIL while DuckDB reads the same file.

    numpy counts about 4× faster than `bytes.count`, which matters because the count shares the CPUs with
    DuckDB's read; it is imported here, in the counting thread, so its import overlaps that read too."""
    import numpy as np

    newlines, last = 0, 10
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            for offset in range(0, size, _COUNT_WINDOW_BYTES):
                length = min(_COUNT_WINDOW_BYTES, size - offset)
                with mmap.mmap(handle.fileno(), length, offset=offset, access=mmap.ACCESS_READ) as window:
                    data = np.frombuffer(window, dtype=np.uint8)
                    for start in range(0, length, _COUNT_SLICE_BYTES):  # small temporaries
                        newlines += int(np.count_nonzero(data[start : start + _COUNT_SLICE_BYTES] == 10))
                    last = int(data[-1])
                    del data  # a map cannot close while an array views it
    except OSError as exc:
        result["error"] = exc
        return
    result["lines_total"] = newlines + (last != 10)


def summarize_log_file(path: str | Path, mapping: TelemetryMapping | None = None) -> tuple[EventSummary, LineCounts]:
    """(summary, line counts) of a whole log file in one streaming pass.

    The aggregate runs over `classification_sql` — the classification `parse_log` uses — while the line
    count (which the JSON reader cannot give: it skips blank lines) runs beside it.
    Raises OSError when the file cannot be read.
    """
    mapping = mapping or TelemetryMapping()
    path = Path(path)
    with open(path, "rb"):  # fail before starting anything on an unreadable file
        pass
    counted: dict = {}
    counter = threading.Thread(target=_count_lines, args=(path, counted))
    counter.start()
    con = connect()
    try:
        # Records that are no event (their time is no moment) form a group of their own: readable lines.
        classified = (
            f"(SELECT * REPLACE (CASE WHEN parsed THEN kind ELSE '{_RECORD_WITHOUT_EVENT}' END AS kind) "
            f"FROM ({classification_sql(reader_sql(path, mapping), mapping)}) WHERE record)"
        )
        summary = _summarize(con, classified, mapping.error_level)
    finally:
        con.close()
        counter.join()
    if "error" in counted:
        raise counted["error"]
    lines_total = counted["lines_total"]
    readable = _sum(summary.groups, "lines")
    summary.groups = [group for group in summary.groups if group["kind"] != _RECORD_WITHOUT_EVENT]
    return summary, LineCounts(lines_total, lines_total - _sum(summary.groups, "lines"), readable)


def _of_kind(summary: EventSummary, kind: EventKind) -> list[dict]:
    return [group for group in summary.groups if group["kind"] == kind.value]


def _counts(groups: list[dict], key: str, lines: str = "lines") -> dict:
    """Lines (or another line count of the groups, e.g. probe_lines) per value of `key`, no zeros."""
    counts: dict[str, int] = {}
    for group in groups:
        if group[key] is not None and group[lines]:
            counts[str(group[key])] = counts.get(str(group[key]), 0) + group[lines]
    return dict(sorted(counts.items()))


def _sum(groups: list[dict], column: str) -> int:
    return sum(group[column] for group in groups)


def _mean(groups: list[dict], total: str, count: str) -> float | None:
    n = sum(group[count] for group in groups)
    return sum(group[total] or 0 for group in groups) / n if n else None


def _telemetry_metrics(summary: EventSummary) -> dict:
    of_kind = {kind: _of_kind(summary, kind) for kind in EventKind}
    events = {kind.value: _sum(groups, "lines") for kind, groups in of_kind.items()}
    ambiguity, governor = of_kind[EventKind.AMBIGUITY_CHECK], of_kind[EventKind.GOVERNOR_PASS]
    requests, identity = of_kind[EventKind.REQUEST_COMPLETED], of_kind[EventKind.IDENTITY_OP]
    relationship, pack = of_kind[EventKind.RELATIONSHIP_RESOLVED], of_kind[EventKind.PACK_BUILT]
    ambiguity_by_status = _counts(ambiguity, "a")
    organic_checks = _sum(ambiguity, "organic_lines")
    organic_ambiguous = _sum([group for group in ambiguity if group["a"] == AMBIGUOUS_STATUS], "organic_lines")
    violations = _counts(governor, "a")
    passed = _counts(governor, "n")
    passed_requests = sum(passed.values())
    statuses = {int(status): n for status, n in _counts(requests, "n").items()}
    identity_by_op = _counts(identity, "a")
    probe_requests = _sum(requests, "probe_lines")
    by_origin = {origin: _counts(summary.groups, "kind", f"{origin}_lines") for origin in ("probe", "organic")}
    return {
        "events": events,
        "events_by_origin": by_origin,
        "events_total": _sum(summary.groups, "lines"),
        "error_lines": _sum(summary.groups, "error_lines"),
        "pack": {
            "builds": events[EventKind.PACK_BUILT],
            "missing": events[EventKind.PACK_MISSING],
            "fallbacks": events[EventKind.PACK_FALLBACK],
            "avg_size_bytes": _mean(pack, "size_sum", "size_n"),
            "avg_build_ms": _mean(pack, "build_sum", "build_n"),
        },
        "ambiguity": {
            "checks": events[EventKind.AMBIGUITY_CHECK],
            "ambiguous": ambiguity_by_status.get(AMBIGUOUS_STATUS, 0),
            "clear": ambiguity_by_status.get(CLEAR_STATUS, 0),
            "by_status": ambiguity_by_status,
            "by_reason": _counts(ambiguity, "b"),
            "avg_check_ms": _mean(ambiguity, "check_sum", "check_n"),
            "organic_checks": organic_checks,
            "organic_ambiguous": organic_ambiguous,
            "organic_rate": organic_ambiguous / organic_checks if organic_checks else None,
        },
        "relationship": {
            "resolutions": events[EventKind.RELATIONSHIP_RESOLVED],
            "by_type": _counts(relationship, "a"),
            "by_source": _counts(relationship, "b"),
        },
        "governor": {
            "passes": events[EventKind.GOVERNOR_PASS],
            "by_violation_type": violations,
            "no_violation": violations.get(NO_VIOLATION, 0),
            "with_violation": sum(n for kind, n in violations.items() if kind != NO_VIOLATION),
            "passed_requests": passed_requests,
            "passed_attempt_distribution": passed,
            "zero_regeneration_share": passed.get("1", 0) / passed_requests if passed_requests else None,
            "regen_path_requests": summary.regen_path_requests,
            "regen_path_latency_ms": summary.regen_path_latency_ms,
        },
        "identity": {
            "operations": events[EventKind.IDENTITY_OP],
            "by_op": identity_by_op,
            "link_operations": identity_by_op.get("link", 0) + identity_by_op.get("link_failed", 0),
            "failures": sum(n for op, n in identity_by_op.items() if op.endswith("_failed")),
        },
        "requests": {
            "completed": events[EventKind.REQUEST_COMPLETED],
            "probe": probe_requests,
            "organic": events[EventKind.REQUEST_COMPLETED] - probe_requests,
            "by_status": {str(status): n for status, n in sorted(statuses.items())},
            "http_5xx": sum(n for status, n in statuses.items() if 500 <= status <= 599),
            "timeouts": sum(statuses.get(status, 0) for status in TIMEOUT_STATUSES),
            "rate_limited": statuses.get(RATE_LIMITED_STATUS, 0),
            "slow": summary.slow_requests,
            "latency_ms": summary.latency_ms,
        },
        "probe_request_ids_seen": bool(sum(by_origin["probe"].values())),
    }


_PROBE_SQL = f"""
SELECT count(*), histogram(outcome), histogram(probe), count(*) FILTER (WHERE dropped),
       count(*) FILTER (WHERE passed = false),
       quantile_cont(latency_ms, {_QUANTILES}) FILTER (WHERE NOT dropped)
FROM probe_records
"""


def _probe_metrics(records: pd.DataFrame | pa.Table | None) -> dict:
    """Probe records (RECORD_SCHEMA) by outcome and probe, with latency from the intended send time."""
    requests, by_outcome, by_probe, dropped, failed, latency = 0, {}, {}, 0, 0, None
    if records is not None and len(records):
        from staging_validation.schemas.probe_records import (
            RECORD_SCHEMA,  # Arrow, as in _as_table
        )

        con = connect()
        try:
            con.register("probe_records", _as_table(records, _RECORD_INPUT_COLUMNS, RECORD_SCHEMA))
            [(requests, by_outcome, by_probe, dropped, failed, latency)] = con.execute(_PROBE_SQL).fetchall()
        finally:
            con.close()
    by_outcome = dict(sorted(by_outcome.items()))
    return {
        "requests": requests,
        "by_outcome": by_outcome,
        "by_probe": dict(sorted(by_probe.items())),
        "dropped": dropped,
        "failed_cases": failed,
        "http_5xx": by_outcome.get(Outcome.SERVER_ERROR.value, 0),
        "timeouts": by_outcome.get(Outcome.TIMEOUT.value, 0),
        "rate_limited": by_outcome.get(Outcome.RATE_LIMITED.value, 0),
        "connection_errors": by_outcome.get(Outcome.CONNECTION_ERROR.value, 0),
        "latency_ms": _percentile_dict(latency),
    }


def not_observed_kinds(events: dict[str, int], mappings: Sequence[TelemetryMapping] | None = None) -> dict[str, str]:
    """Kind → why its count is not observed (see the module docstring), for the kinds that are not;
    `events` are the counts per kind, `mappings` those of the log's sources (default: the documented)."""
    mappings = list(mappings or [TelemetryMapping()])
    unobservable = unobservable_kinds({str(index): mapping for index, mapping in enumerate(mappings)})
    families_seen = {family for kind, family in EVENT_FAMILIES.items() if events.get(kind.value)}
    found = {}
    for kind, family in EVENT_FAMILIES.items():
        if kind in unobservable:
            declared = unobservable[kind]
            found[kind.value] = (f"not exposed: {declared[1]}" if declared is not None
                                 else "no telemetry rule recognises it")
        elif family not in families_seen:
            found[kind.value] = f"no {family} line in the telemetry"
    if not sum(events.values()):
        found[EventKind.ERROR.value] = "no readable log line"
    return found


def final_metrics_from_summary(
    summary: EventSummary,
    records: pd.DataFrame | pa.Table | None = None,
    *,
    lines: LineCounts | None = None,
    mappings: Sequence[TelemetryMapping] | None = None,
) -> dict:
    """`mappings`: of the log's sources, the main one first (its `min_readable_share` is the threshold)."""
    telemetry = _telemetry_metrics(summary)
    warnings = []
    share = lines.readable_share if lines is not None else None
    minimum = (list(mappings) if mappings else [TelemetryMapping()])[0].min_readable_share
    if lines is not None and share is not None and share < minimum:
        warnings.append(f"only {_share(share)} of the log's lines are readable JSON log records "
                        f"({lines.readable} of {lines.total}; the mapping expects at least {_share(minimum)}): "
                        "most of the log could not be judged")
    return {
        "lines": {
            "total": None if lines is None else lines.total,
            "unparsed": None if lines is None else lines.unparsed,
            "readable": None if lines is None else lines.readable,
            "readable_share": share,
        },
        **telemetry,
        "not_observed": not_observed_kinds(telemetry["events"], mappings),
        "warnings": warnings,
        "probes": _probe_metrics(records),
    }


def final_metrics(
    records: pd.DataFrame | pa.Table | None,
    events: pd.DataFrame | pa.Table,
    *,
    lines: LineCounts | None = None,
    mappings: Sequence[TelemetryMapping] | None = None,
    error_level: int = 50,
) -> dict:
    """Every metric of the runbook's final analysis plus latency percentiles, 5xx, timeouts, rate-limited."""
    return final_metrics_from_summary(
        summarize_events(events, error_level=error_level), records, lines=lines, mappings=mappings
    )


def hourly_report(
    records: pd.DataFrame | pa.Table | None,
    events: pd.DataFrame | pa.Table,
    *,
    hour: int,
    lines: LineCounts | None = None,
    mappings: Sequence[TelemetryMapping] | None = None,
    error_level: int = 50,
) -> dict:
    """One campaign hour: the final analysis's metrics over that hour's records and events."""
    metrics = final_metrics(records, events, lines=lines, mappings=mappings, error_level=error_level)
    return {"hour": hour, **metrics}


# Where each kind's counts sit in the metrics: what `reported_metrics` shows as "not observed".
_COUNTS_OF_KIND = {
    EventKind.PACK_BUILT: [("pack", "builds")],
    EventKind.PACK_MISSING: [("pack", "missing")],
    EventKind.PACK_FALLBACK: [("pack", "fallbacks")],
    EventKind.AMBIGUITY_CHECK: [("ambiguity", name) for name in
                                ("checks", "ambiguous", "clear", "organic_checks", "organic_ambiguous")],
    EventKind.RELATIONSHIP_RESOLVED: [("relationship", "resolutions")],
    EventKind.GOVERNOR_PASS: [("governor", name) for name in
                              ("passes", "no_violation", "with_violation", "passed_requests", "regen_path_requests")],
    EventKind.IDENTITY_OP: [("identity", name) for name in ("operations", "link_operations", "failures")],
    EventKind.REQUEST_COMPLETED: [("requests", name) for name in
                                  ("completed", "probe", "organic", "http_5xx", "timeouts", "rate_limited", "slow")],
}


def reported_metrics(metrics: dict) -> dict:
    """The metrics as they are shown (analyze --json): every count of a kind that was not observed is
    the string "not observed" instead of a number; `not_observed` says why."""
    shown = {key: dict(value) if isinstance(value, dict) else value for key, value in metrics.items()}
    shown["events"] = dict(shown["events"])
    for kind in metrics["not_observed"]:
        shown["events"][kind] = NOT_OBSERVED
        if kind == EventKind.ERROR.value:
            shown["error_lines"] = NOT_OBSERVED
        for section, name in _COUNTS_OF_KIND.get(EventKind(kind), []):
            shown[section][name] = NOT_OBSERVED
    return shown


def metrics_snapshot(
    records: pd.DataFrame | pa.Table | None,
    events: pd.DataFrame | pa.Table,
    *,
    at: datetime,
    mappings: Sequence[TelemetryMapping] | None = None,
    error_level: int = 50,
) -> dict:
    """The runbook's 30-minute snapshot over the given records and events."""
    metrics = final_metrics(records, events, mappings=mappings, error_level=error_level)
    return {
        "at": at.isoformat(),
        "events": metrics["events"],
        "error_lines": metrics["error_lines"],
        "requests": metrics["requests"]["completed"],
        "latency_ms": metrics["requests"]["latency_ms"],
        "ambiguity_by_reason": metrics["ambiguity"]["by_reason"],
        "ambiguous": metrics["ambiguity"]["ambiguous"],
        "governor_attempt_distribution": metrics["governor"]["passed_attempt_distribution"],
        "zero_regeneration_share": metrics["governor"]["zero_regeneration_share"],
        "probe_outcomes": metrics["probes"]["by_outcome"],
        "not_observed": metrics["not_observed"],
    }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _ms_text(value: float | None) -> str:
    return "n/a" if value is None else f"{_ms(value)} ms"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def render_metrics_log_line(snapshot: dict) -> str:
    """One `metrics.log` line; "n/o": not observed (see the module docstring)."""
    events, latency = snapshot["events"], snapshot["latency_ms"]
    unseen = snapshot.get("not_observed", {})

    def count(kind: EventKind, value: object = None) -> str:
        return "n/o" if kind.value in unseen else str(events[kind.value] if value is None else value)

    reasons = " ".join(f"{reason}={n}" for reason, n in snapshot["ambiguity_by_reason"].items()) or "-"
    attempts = " ".join(f"{a}:{n}" for a, n in snapshot["governor_attempt_distribution"].items()) or "-"
    return (
        f"[{snapshot['at']}] requests={count(EventKind.REQUEST_COMPLETED, snapshot['requests'])} "
        f"errors={count(EventKind.ERROR, snapshot['error_lines'])} "
        f"builds={count(EventKind.PACK_BUILT)} missing={count(EventKind.PACK_MISSING)} "
        f"fallbacks={count(EventKind.PACK_FALLBACK)} "
        f"checks={count(EventKind.AMBIGUITY_CHECK)} "
        f"ambiguous={count(EventKind.AMBIGUITY_CHECK, snapshot['ambiguous'])} "
        f"resolutions={count(EventKind.RELATIONSHIP_RESOLVED)} passes={count(EventKind.GOVERNOR_PASS)} "
        f"latency_ms p50={_ms(latency['p50'])} p95={_ms(latency['p95'])} p99={_ms(latency['p99'])} "
        f"reasons[{reasons}] attempts[{attempts}]"
    )


def render_hourly_log_line(report: dict) -> str:
    """One `hourly.log` line; "n/o": not observed (see the module docstring)."""
    shown = reported_metrics(report)
    requests, latency = shown["requests"], shown["requests"]["latency_ms"]
    pack, governor, ambiguity, lines = shown["pack"], shown["governor"], shown["ambiguity"], shown["lines"]

    def compact(value: object) -> str:
        return "n/o" if value == NOT_OBSERVED else str(value)

    readable = "" if lines["readable_share"] is None else f" readable={_share(lines['readable_share'])}"
    return (
        f"hour {report['hour']:02d}: requests={compact(requests['completed'])} errors={compact(shown['error_lines'])} "
        f"5xx={compact(requests['http_5xx'])} timeouts={compact(requests['timeouts'])} "
        f"rate_limited={compact(requests['rate_limited'])} "
        f"slow={compact(requests['slow'])} latency_ms p50={_ms(latency['p50'])} p95={_ms(latency['p95'])} "
        f"p99={_ms(latency['p99'])} missing={compact(pack['missing'])} fallbacks={compact(pack['fallbacks'])} "
        f"ambiguous={compact(ambiguity['ambiguous'])}/{compact(ambiguity['checks'])} "
        f"zero_regen={_share(governor['zero_regeneration_share'])} "
        f"probes={report['probes']['requests']} probe_failures={report['probes']['failed_cases']} "
        f"unparsed={'n/a' if lines['unparsed'] is None else lines['unparsed']}{readable}"
    )


def runbook_metrics(metrics: dict) -> list[tuple[str, int | str | None]]:
    """The runbook final analysis's lines in its order (labels as it prints them), counted correctly;
    a count of a kind that was not observed is NOT_OBSERVED."""
    pack, ambiguity, relationship = metrics["pack"], metrics["ambiguity"], metrics["relationship"]
    governor, requests, violations = metrics["governor"], metrics["requests"], metrics["governor"]["by_violation_type"]

    def whole(value: float | None) -> int | None:  # the runbook prints awk's int(): truncation
        return None if value is None else int(value)

    pack_built, checks, resolved = EventKind.PACK_BUILT, EventKind.AMBIGUITY_CHECK, EventKind.RELATIONSHIP_RESOLVED
    governed, completed = EventKind.GOVERNOR_PASS, EventKind.REQUEST_COMPLETED
    lines = [  # (label, value, the kind it counts)
        ("Missing-pack events", pack["missing"], EventKind.PACK_MISSING),
        ("Default-pack fallbacks", pack["fallbacks"], EventKind.PACK_FALLBACK),
        ("Total builds", pack["builds"], pack_built),
        ("Avg size", whole(pack["avg_size_bytes"]), pack_built),
        ("Avg build time", whole(pack["avg_build_ms"]), pack_built),
        ("Total checks", ambiguity["checks"], checks),
        ("Detected ambiguous", ambiguity["ambiguous"], checks),
        ("Clear requests", ambiguity["clear"], checks),
        *((reason, ambiguity["by_reason"].get(reason, 0), checks) for reason in AMBIGUITY_REASONS),
        ("Avg check latency", whole(ambiguity["avg_check_ms"]), checks),
        ("Total resolutions", relationship["resolutions"], resolved),
        ("Owner mode", relationship["by_type"].get("owner", 0), resolved),
        ("Public mode", relationship["by_type"].get("public", 0), resolved),
        ("Locked fact", relationship["by_source"].get("locked_fact", 0), resolved),
        ("Database", relationship["by_source"].get("database", 0), resolved),
        ("Default", relationship["by_source"].get("default", 0), resolved),
        ("Total passes", governor["passes"], governed),
        ("0 violations (passed)", governor["no_violation"], governed),
        ("1+ violations", governor["with_violation"], governed),
        ("Repetition", violations.get("repetition", 0), governed),
        ("Locked fact", violations.get("locked_fact", 0), governed),
        ("Ungrounded", violations.get("ungrounded", 0), governed),
        ("Posture", violations.get("posture", 0), governed),
        ("Link operations", metrics["identity"]["link_operations"], EventKind.IDENTITY_OP),
        ("Total errors", metrics["error_lines"], EventKind.ERROR),
        ("HTTP 5xx", requests["http_5xx"], completed),
        ("Timeouts", requests["timeouts"], completed),
    ]
    unseen = metrics["not_observed"]
    return [(label, NOT_OBSERVED if kind.value in unseen else value) for label, value, kind in lines]


_UNITS = {"Avg size": " bytes", "Avg build time": " ms", "Avg check latency": " ms"}
_INDENTED = {"Locked fact", "Database", "Default", "Repetition", "Ungrounded", "Posture"}


def render_final_metrics_text(metrics: dict) -> str:
    """`staging-validation-metrics.txt`: the runbook's layout with correct numbers, then what it lacked."""
    lines = ["=== 24-HOUR STAGING VALIDATION METRICS ==="]
    for label, value in runbook_metrics(metrics):
        indent = "  " if label in _INDENTED else ""
        shown = "n/a" if value is None else str(value)
        numeric = value is not None and value != NOT_OBSERVED
        lines.append(f"{indent}{label}: {shown}{_UNITS.get(label, '') if numeric else ''}")
    shown_metrics = reported_metrics(metrics)
    requests, governor, ambiguity = shown_metrics["requests"], shown_metrics["governor"], shown_metrics["ambiguity"]
    latency, regen = requests["latency_ms"], governor["regen_path_latency_ms"]
    lines += [
        "",
        "=== ADDED BY STAGING-VALIDATION (structured fields, not text search) ===",
        f"Requests completed: {requests['completed']} (organic {requests['organic']}, probe {requests['probe']})",
        f"Rate-limited (429): {requests['rate_limited']}",
        f"Timeouts counted as: HTTP {' or '.join(str(s) for s in TIMEOUT_STATUSES)} on request-completed lines",
        f"Latency p50: {_ms_text(latency['p50'])}",
        f"Latency p95: {_ms_text(latency['p95'])}",
        f"Latency p99: {_ms_text(latency['p99'])}",
        f"Slow requests (>= {SLOW_REQUEST_MS} ms): {requests['slow']}",
        f"Organic ambiguity rate: {_share(ambiguity['organic_rate'])} "
        f"({ambiguity['organic_ambiguous']} of {ambiguity['organic_checks']} organic checks)",
        f"Zero-regeneration share: {_share(governor['zero_regeneration_share'])} "
        f"(of {governor['passed_requests']} requests with a passed governor line)",
        f"Regen-path latency p99: {_ms_text(regen['p99'])} ({governor['regen_path_requests']} requests regenerated)",
        f"Identity failures: {shown_metrics['identity']['failures']}",
    ]
    counted = metrics["lines"]
    if counted["total"] is not None:
        lines.append(f"Log lines: {counted['total']} ({counted['unparsed']} not events; "
                     f"readable share {_share(counted['readable_share'])}: {counted['readable']} JSON log records)")
    for kind, reason in metrics["not_observed"].items():
        lines.append(f"Not observed: {kind} ({reason})")
    lines += [f"WARNING: {warning}" for warning in metrics["warnings"]]
    if not metrics["probe_request_ids_seen"]:
        lines.append("No probe request id seen in telemetry: ambiguity denominator is all traffic")
    return "\n".join(lines) + "\n"
