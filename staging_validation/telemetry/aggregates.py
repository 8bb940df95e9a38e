"""The runbook's aggregates — metrics snapshot, hourly report, final analysis — computed right.

Every number comes from structured fields of classified events (never a text search), through one SQL
aggregate (`EVENT_SUMMARY_SQL`) that runs over whatever relation holds the events: a campaign's stored
events (pandas / Arrow) or, for `analyze`, the classification relation streaming over a whole log file,
so the day is aggregated in one pass without materializing its lines.

Percentiles are linear interpolation between closest ranks (DuckDB `quantile_cont`, pandas default).
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from staging_validation.probes.records import Outcome
from staging_validation.telemetry.events import EVENT_SCHEMA, EventKind
from staging_validation.telemetry.mapping import TelemetryMapping
from staging_validation.telemetry.parse import classification_sql, connect, reader_sql

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

_AMB, _REL = EventKind.AMBIGUITY_CHECK.value, EventKind.RELATIONSHIP_RESOLVED.value
_GOV, _REQ, _IDENT = EventKind.GOVERNOR_PASS.value, EventKind.REQUEST_COMPLETED.value, EventKind.IDENTITY_OP.value


def _event_groups_sql(relation: str, error_level: int) -> str:
    """One hash aggregate over the events: a few hundred groups keyed by kind, origin, error and the
    kind's own categorical fields (a, b, n), carrying the sums and the values percentiles need.

    Grouping on one pass is what keeps a whole day's analysis close to the cost of reading it.
    """
    return f"""
SELECT
  kind, origin, level >= {error_level} AS is_error,
  CASE kind WHEN '{_AMB}' THEN status WHEN '{_REL}' THEN relationship_type
            WHEN '{_GOV}' THEN violation_type WHEN '{_IDENT}' THEN identity_op END AS a,
  CASE kind WHEN '{_AMB}' THEN reason WHEN '{_REL}' THEN source END AS b,
  CASE kind WHEN '{_GOV}' THEN CASE WHEN status = '{GOVERNOR_PASSED_STATUS}' THEN attempt END
            WHEN '{_REQ}' THEN http_status END AS n,
  count(*) AS lines,
  sum(size_bytes) AS size_sum, count(size_bytes) AS size_n,
  sum(built_in_ms) AS build_sum, count(built_in_ms) AS build_n,
  sum(checked_in_ms) AS check_sum, count(checked_in_ms) AS check_n,
  count(*) FILTER (WHERE duration_ms >= {SLOW_REQUEST_MS}) AS slow,
  list(duration_ms) FILTER (WHERE kind = '{_REQ}' AND duration_ms IS NOT NULL) AS durations,
  list(struct_pack(request_id := request_id, regen_in_ms := regen_in_ms))
    FILTER (WHERE kind = '{_GOV}' AND attempt >= 2) AS regenerations
FROM {relation}
GROUP BY ALL
"""


def _event_groups(con, relation: str, error_level: int) -> pd.DataFrame:
    return con.sql(_event_groups_sql(relation, error_level)).df()


def group_events(events: pd.DataFrame | pa.Table, *, error_level: int = 50) -> pd.DataFrame:
    """The grouped aggregate over stored events (EVENT_SCHEMA columns; extra columns are ignored)."""
    if isinstance(events, pd.DataFrame):
        schema = pa.schema([EVENT_SCHEMA.field(name) for name in _GROUP_INPUT_COLUMNS])
        table = pa.Table.from_pandas(events[list(_GROUP_INPUT_COLUMNS)], schema=schema, preserve_index=False)
    else:
        table = events.select(list(_GROUP_INPUT_COLUMNS))
    con = connect()
    try:
        con.register("stored_events", table)
        return _event_groups(con, "stored_events", error_level)
    finally:
        con.close()


def _count_lines(path: Path, result: dict) -> None:
    newlines = 0
    last = b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(16 << 20):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    result["lines_total"] = newlines + (last != b"\n")


def group_log_file(path: str | Path, mapping: TelemetryMapping | None = None) -> tuple[pd.DataFrame, int, int]:
    """(event groups, lines_total, unparsed_lines) of a whole log file in one streaming pass.

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
        con.execute("SET preserve_insertion_order = false")  # order does not matter to an aggregate
        classified = f"(SELECT * FROM ({classification_sql(reader_sql(path, mapping), mapping)}) WHERE parsed)"
        groups = _event_groups(con, classified, mapping.error_level)
    finally:
        con.close()
        counter.join()
    lines_total = counted["lines_total"]
    return groups, lines_total, lines_total - int(groups["lines"].sum())


def _percentiles(values) -> dict:
    values = pd.Series(values, dtype="float64").dropna()
    if values.empty:
        return {name: None for name in PERCENTILES}
    return {name: float(values.quantile(q)) for name, q in PERCENTILES.items()}


def _counts(frame: pd.DataFrame, column: str) -> dict:
    totals = frame.dropna(subset=[column]).groupby(column)["lines"].sum()
    return {_key(key): int(n) for key, n in sorted(totals.items(), key=lambda item: _key(item[0]))}


def _key(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _mean(frame: pd.DataFrame, total: str, count: str) -> float | None:
    n = frame[count].sum()
    return float(frame[total].sum() / n) if n else None


def _flatten(series: pd.Series) -> list:
    return [value for values in series.dropna() for value in values]


def _telemetry_metrics(groups: pd.DataFrame) -> dict:
    of_kind = {kind: groups[groups["kind"] == kind.value] for kind in EventKind}
    events = {kind.value: int(frame["lines"].sum()) for kind, frame in of_kind.items()}
    ambiguity, governor = of_kind[EventKind.AMBIGUITY_CHECK], of_kind[EventKind.GOVERNOR_PASS]
    relationship, requests = of_kind[EventKind.RELATIONSHIP_RESOLVED], of_kind[EventKind.REQUEST_COMPLETED]
    pack = of_kind[EventKind.PACK_BUILT]
    ambiguity_by_status = _counts(ambiguity, "a")
    organic_checks = ambiguity[ambiguity["origin"] == "organic"]
    organic_ambiguous = int(organic_checks.loc[organic_checks["a"] == AMBIGUOUS_STATUS, "lines"].sum())
    violations = _counts(governor, "a")
    passed = _counts(governor, "n")
    passed_requests = sum(passed.values())
    regen = pd.DataFrame(_flatten(governor["regenerations"]), columns=["request_id", "regen_in_ms"])
    # A regeneration line without a request id cannot be joined to its request: it stands alone.
    regen["request_id"] = regen["request_id"].fillna(pd.Series(regen.index.astype(str), index=regen.index))
    regen_paths = regen.groupby("request_id")["regen_in_ms"].sum(min_count=1)
    by_status = _counts(requests, "n")
    statuses = {int(status): n for status, n in by_status.items()}
    identity_by_op = _counts(of_kind[EventKind.IDENTITY_OP], "a")
    probe_requests = int(requests.loc[requests["origin"] == "probe", "lines"].sum())
    by_origin = {
        origin: {k: int(n) for k, n in groups[groups["origin"] == origin].groupby("kind")["lines"].sum().items()}
        for origin in ("probe", "organic")
    }
    return {
        "events": events,
        "events_by_origin": by_origin,
        "events_total": int(groups["lines"].sum()),
        "error_lines": int(groups.loc[groups["is_error"] == True, "lines"].sum()),  # noqa: E712 — nullable
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
            "organic_checks": int(organic_checks["lines"].sum()),
            "organic_ambiguous": organic_ambiguous,
            "organic_rate": organic_ambiguous / organic_checks["lines"].sum() if len(organic_checks) else None,
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
            "regen_path_requests": int(regen_paths.notna().sum()),
            "regen_path_latency_ms": _percentiles(regen_paths),
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
            "by_status": by_status,
            "http_5xx": sum(n for status, n in statuses.items() if 500 <= status <= 599),
            "timeouts": sum(statuses.get(status, 0) for status in TIMEOUT_STATUSES),
            "rate_limited": statuses.get(RATE_LIMITED_STATUS, 0),
            "slow": int(requests["slow"].sum()),
            "latency_ms": _percentiles(_flatten(requests["durations"])),
        },
        "probe_request_ids_seen": bool(sum(by_origin["probe"].values())),
    }


def _probe_metrics(records: pd.DataFrame | None) -> dict:
    if records is None or records.empty:
        return {"requests": 0, "by_outcome": {}, "by_probe": {}, "dropped": 0, "failed_cases": 0,
                "http_5xx": 0, "timeouts": 0, "rate_limited": 0, "connection_errors": 0,
                "latency_ms": {name: None for name in PERCENTILES}}  # fmt: skip
    outcomes = records["outcome"].value_counts()
    sent = records[~records["dropped"].astype(bool)]
    return {
        "requests": len(records),
        "by_outcome": {str(k): int(v) for k, v in outcomes.sort_index().items()},
        "by_probe": {str(k): int(v) for k, v in records["probe"].value_counts().sort_index().items()},
        "dropped": int(records["dropped"].astype(bool).sum()),
        "failed_cases": int((records["passed"] == False).sum()),  # noqa: E712 — nullable column: None is not a failure
        "http_5xx": int(outcomes.get(Outcome.SERVER_ERROR.value, 0)),
        "timeouts": int(outcomes.get(Outcome.TIMEOUT.value, 0)),
        "rate_limited": int(outcomes.get(Outcome.RATE_LIMITED.value, 0)),
        "connection_errors": int(outcomes.get(Outcome.CONNECTION_ERROR.value, 0)),
        "latency_ms": _percentiles(sent["latency_ms"].astype(float)),
    }


def final_metrics_from_groups(
    groups: pd.DataFrame,
    records: pd.DataFrame | None = None,
    *,
    lines_total: int | None = None,
    unparsed_lines: int | None = None,
) -> dict:
    return {
        "lines": {"total": lines_total, "unparsed": unparsed_lines},
        **_telemetry_metrics(groups),
        "probes": _probe_metrics(records),
    }


def final_metrics(
    records: pd.DataFrame | None,
    events: pd.DataFrame | pa.Table,
    *,
    lines_total: int | None = None,
    unparsed_lines: int | None = None,
    error_level: int = 50,
) -> dict:
    """Every metric of the runbook's final analysis plus latency percentiles, 5xx, timeouts, rate-limited."""
    return final_metrics_from_groups(
        group_events(events, error_level=error_level),
        records,
        lines_total=lines_total,
        unparsed_lines=unparsed_lines,
    )


def hourly_report(
    records: pd.DataFrame | None,
    events: pd.DataFrame | pa.Table,
    *,
    hour: int,
    lines_total: int | None = None,
    unparsed_lines: int | None = None,
    error_level: int = 50,
) -> dict:
    """One campaign hour: the final analysis's metrics over that hour's records and events."""
    metrics = final_metrics(
        records, events, lines_total=lines_total, unparsed_lines=unparsed_lines, error_level=error_level
    )
    return {"hour": hour, **metrics}


def metrics_snapshot(
    records: pd.DataFrame | None,
    events: pd.DataFrame | pa.Table,
    *,
    at: datetime,
    error_level: int = 50,
) -> dict:
    """The runbook's 30-minute snapshot over the given records and events."""
    metrics = final_metrics(records, events, error_level=error_level)
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
    }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _ms_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def render_metrics_log_line(snapshot: dict) -> str:
    """One `metrics.log` line."""
    events, latency = snapshot["events"], snapshot["latency_ms"]
    reasons = " ".join(f"{reason}={n}" for reason, n in snapshot["ambiguity_by_reason"].items()) or "-"
    attempts = " ".join(f"{a}:{n}" for a, n in snapshot["governor_attempt_distribution"].items()) or "-"
    return (
        f"[{snapshot['at']}] requests={snapshot['requests']} errors={snapshot['error_lines']} "
        f"builds={events['pack_built']} missing={events['pack_missing']} fallbacks={events['pack_fallback']} "
        f"checks={events['ambiguity_check']} ambiguous={snapshot['ambiguous']} "
        f"resolutions={events['relationship_resolved']} passes={events['governor_pass']} "
        f"latency_ms p50={_ms(latency['p50'])} p95={_ms(latency['p95'])} p99={_ms(latency['p99'])} "
        f"reasons[{reasons}] attempts[{attempts}]"
    )


def render_hourly_log_line(report: dict) -> str:
    """One `hourly.log` line."""
    requests, latency = report["requests"], report["requests"]["latency_ms"]
    pack, governor = report["pack"], report["governor"]
    return (
        f"hour {report['hour']:02d}: requests={requests['completed']} errors={report['error_lines']} "
        f"5xx={requests['http_5xx']} timeouts={requests['timeouts']} rate_limited={requests['rate_limited']} "
        f"slow={requests['slow']} latency_ms p50={_ms(latency['p50'])} p95={_ms(latency['p95'])} "
        f"p99={_ms(latency['p99'])} missing={pack['missing']} fallbacks={pack['fallbacks']} "
        f"ambiguous={report['ambiguity']['ambiguous']}/{report['ambiguity']['checks']} "
        f"zero_regen={_share(governor['zero_regeneration_share'])} "
        f"probes={report['probes']['requests']} probe_failures={report['probes']['failed_cases']} "
        f"unparsed={'n/a' if report['lines']['unparsed'] is None else report['lines']['unparsed']}"
    )


def runbook_metrics(metrics: dict) -> list[tuple[str, int | None]]:
    """The runbook final analysis's lines in its order (labels as it prints them), counted correctly."""
    pack, ambiguity, relationship = metrics["pack"], metrics["ambiguity"], metrics["relationship"]
    governor, requests, violations = metrics["governor"], metrics["requests"], metrics["governor"]["by_violation_type"]

    def whole(value: float | None) -> int | None:  # the runbook prints awk's int(): truncation
        return None if value is None else int(value)

    return [
        ("Missing-pack events", pack["missing"]),
        ("Default-pack fallbacks", pack["fallbacks"]),
        ("Total builds", pack["builds"]),
        ("Avg size", whole(pack["avg_size_bytes"])),
        ("Avg build time", whole(pack["avg_build_ms"])),
        ("Total checks", ambiguity["checks"]),
        ("Detected ambiguous", ambiguity["ambiguous"]),
        ("Clear requests", ambiguity["clear"]),
        *((reason, ambiguity["by_reason"].get(reason, 0)) for reason in AMBIGUITY_REASONS),
        ("Avg check latency", whole(ambiguity["avg_check_ms"])),
        ("Total resolutions", relationship["resolutions"]),
        ("Owner mode", relationship["by_type"].get("owner", 0)),
        ("Public mode", relationship["by_type"].get("public", 0)),
        ("Locked fact", relationship["by_source"].get("locked_fact", 0)),
        ("Database", relationship["by_source"].get("database", 0)),
        ("Default", relationship["by_source"].get("default", 0)),
        ("Total passes", governor["passes"]),
        ("0 violations (passed)", governor["no_violation"]),
        ("1+ violations", governor["with_violation"]),
        ("Repetition", violations.get("repetition", 0)),
        ("Locked fact", violations.get("locked_fact", 0)),
        ("Ungrounded", violations.get("ungrounded", 0)),
        ("Posture", violations.get("posture", 0)),
        ("Link operations", metrics["identity"]["link_operations"]),
        ("Total errors", metrics["error_lines"]),
        ("HTTP 5xx", requests["http_5xx"]),
        ("Timeouts", requests["timeouts"]),
    ]


_UNITS = {"Avg size": " bytes", "Avg build time": " ms", "Avg check latency": " ms"}
_INDENTED = {"Locked fact", "Database", "Default", "Repetition", "Ungrounded", "Posture"}


def render_final_metrics_text(metrics: dict) -> str:
    """`staging-validation-metrics.txt`: the runbook's layout with correct numbers, then what it lacked."""
    lines = ["=== 24-HOUR STAGING VALIDATION METRICS ==="]
    for label, value in runbook_metrics(metrics):
        indent = "  " if label in _INDENTED else ""
        shown = "n/a" if value is None else str(value)
        lines.append(f"{indent}{label}: {shown}{_UNITS.get(label, '') if value is not None else ''}")
    requests, governor, ambiguity = metrics["requests"], metrics["governor"], metrics["ambiguity"]
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
        f"Identity failures: {metrics['identity']['failures']}",
    ]
    if metrics["lines"]["total"] is not None:
        lines.append(f"Log lines: {metrics['lines']['total']} ({metrics['lines']['unparsed']} not JSON log records)")
    if not metrics["probe_request_ids_seen"]:
        lines.append("No probe request id seen in telemetry: ambiguity denominator is all traffic")
    return "\n".join(lines) + "\n"
