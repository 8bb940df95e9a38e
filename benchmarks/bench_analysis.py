"""The final analysis of a day: the runbook's grep pipeline vs a bare DuckDB aggregation vs our `analyze`.

    .venv/bin/python benchmarks/bench_analysis.py            # 550 MB day (generated once, cached in out/)
    .venv/bin/python benchmarks/bench_analysis.py --quick    # 20 MB

One run, one generated file, every contender in its own fresh child process, several repetitions taken
round-robin, medians. Contenders:
  runbook         `bash runbook_final_analysis.sh LOG` (one grep/awk pass per metric), whole command
  duckdb (bare)   one hand-written `read_json` + aggregate query, timed around the query (imports excluded):
                  the anchor computes the runbook's 30 metrics and latency p50/p95/p99 from the 13 fields
                  they need (its numbers are checked against the truth too); the narrow one, the previous
                  anchor, counts a third of them from 8 fields
  analyze (call)  what `analyze` runs (telemetry.aggregates: summarize_log_file, final_metrics_from_summary,
                  render_final_metrics_text) in-process, imports excluded
  analyze (CLI)   `staging-validation analyze LOG --json`, whole command including interpreter start-up
Then every number of ours is checked against the generator's ground truth, and the runbook's numbers
that differ from the truth are listed with the difference.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from common import (
    DEFAULT_RUNBOOK_SCRIPT,
    DEFAULT_SEED,
    REPO_ROOT,
    cached_day,
    load_average,
    measure_interleaved,
    print_table,
)

CLI = REPO_ROOT / ".venv" / "bin" / "staging-validation"
RUNBOOK = "runbook (bash+grep)"
BARE_DUCKDB = "duckdb, runbook metrics (bare)"
BARE_DUCKDB_NARROW = "duckdb, 8 fields (bare)"
QUICK_MEGABYTES = 20

_PACK_BUILT = "msg = '[Staging] ContinuityPack built'"
_CHECK = "msg = '[Staging] Ambiguity check completed'"
_RESOLVED = "msg = '[Staging] Relationship resolved'"
_GOVERNOR = "starts_with(msg, '[Staging] Governor pass ')"
_REQUEST = "msg = 'request completed'"
# The runbook's final analysis as one hand-written query: its 30 metrics in its order, plus latency
# percentiles, from only the 13 fields they need. The lines are grouped by their raw field values first,
# then the metrics are summed from the few dozen groups (faster than 31 filtered counts over every line:
# 0.49 s against 0.62 s back to back here). The anchor `analyze` is held to; its numbers are checked too.
RUNBOOK_METRICS_SQL = f"""
WITH line_groups AS MATERIALIZED (
  SELECT msg, status, reason, relationship_type, source, violation_type, op, level >= 50 AS error,
         res.statusCode AS http_status, count(*) AS lines, sum(size_bytes) AS size_sum, count(size_bytes) AS size_n,
         sum(built_in_ms) AS build_sum, count(built_in_ms) AS build_n,
         sum(checked_in_ms) AS check_sum, count(checked_in_ms) AS check_n,
         list(duration_ms) FILTER (WHERE duration_ms IS NOT NULL) AS durations
  FROM read_json(?, format='newline_delimited', ignore_errors=true, columns={{
    level: 'INTEGER', msg: 'VARCHAR', size_bytes: 'BIGINT', built_in_ms: 'DOUBLE', status: 'VARCHAR',
    reason: 'VARCHAR', checked_in_ms: 'DOUBLE', relationship_type: 'VARCHAR', source: 'VARCHAR',
    violation_type: 'VARCHAR', op: 'VARCHAR', res: 'STRUCT(statusCode INTEGER)', duration_ms: 'DOUBLE'}})
  GROUP BY ALL
)
SELECT
  sum(lines) FILTER (WHERE msg = '[Staging] ContinuityPack missing: no continuity pack for request'),
  sum(lines) FILTER (WHERE msg = '[Staging] ContinuityPack fallback: using default pack'),
  sum(lines) FILTER (WHERE {_PACK_BUILT}),
  sum(size_sum) FILTER (WHERE {_PACK_BUILT}) / sum(size_n) FILTER (WHERE {_PACK_BUILT}),
  sum(build_sum) FILTER (WHERE {_PACK_BUILT}) / sum(build_n) FILTER (WHERE {_PACK_BUILT}),
  sum(lines) FILTER (WHERE {_CHECK}),
  sum(lines) FILTER (WHERE {_CHECK} AND status = 'AMBIGUOUS'),
  sum(lines) FILTER (WHERE {_CHECK} AND status = 'clear'),
  sum(lines) FILTER (WHERE {_CHECK} AND reason = 'MALFORMED_QUERY'),
  sum(lines) FILTER (WHERE {_CHECK} AND reason = 'DANGLING_REFERENCE'),
  sum(lines) FILTER (WHERE {_CHECK} AND reason = 'UNDERSPECIFIED_COMPARISON'),
  sum(lines) FILTER (WHERE {_CHECK} AND reason = 'CONTRADICTORY_REQUEST'),
  sum(check_sum) FILTER (WHERE {_CHECK}) / sum(check_n) FILTER (WHERE {_CHECK}),
  sum(lines) FILTER (WHERE {_RESOLVED}),
  sum(lines) FILTER (WHERE {_RESOLVED} AND relationship_type = 'owner'),
  sum(lines) FILTER (WHERE {_RESOLVED} AND relationship_type = 'public'),
  sum(lines) FILTER (WHERE {_RESOLVED} AND source = 'locked_fact'),
  sum(lines) FILTER (WHERE {_RESOLVED} AND source = 'database'),
  sum(lines) FILTER (WHERE {_RESOLVED} AND source = 'default'),
  sum(lines) FILTER (WHERE {_GOVERNOR}),
  sum(lines) FILTER (WHERE {_GOVERNOR} AND violation_type = 'none'),
  sum(lines) FILTER (WHERE {_GOVERNOR} AND violation_type <> 'none'),
  sum(lines) FILTER (WHERE {_GOVERNOR} AND violation_type = 'repetition'),
  sum(lines) FILTER (WHERE {_GOVERNOR} AND violation_type = 'locked_fact'),
  sum(lines) FILTER (WHERE {_GOVERNOR} AND violation_type = 'ungrounded'),
  sum(lines) FILTER (WHERE {_GOVERNOR} AND violation_type = 'posture'),
  sum(lines) FILTER (WHERE msg = '[Staging] Identity operation' AND op = 'link'),
  sum(lines) FILTER (WHERE error),
  sum(lines) FILTER (WHERE {_REQUEST} AND http_status BETWEEN 500 AND 599),
  sum(lines) FILTER (WHERE {_REQUEST} AND http_status IN (408, 504)),
  (SELECT quantile_cont(duration, [0.5, 0.95, 0.99])
   FROM (SELECT unnest(durations) AS duration FROM line_groups WHERE {_REQUEST}))
FROM line_groups
"""

# The previous, narrower anchor: a third of the runbook's metrics over 8 fields, kept for comparison.
NARROW_SQL = """
SELECT
  count(*) FILTER (WHERE msg IS NOT NULL) AS json_lines,
  count(*) FILTER (WHERE level >= 50) AS error_lines,
  count(*) FILTER (WHERE msg = '[Staging] ContinuityPack built') AS pack_built,
  count(*) FILTER (WHERE starts_with(msg, '[Staging] ContinuityPack missing')) AS pack_missing,
  count(*) FILTER (WHERE starts_with(msg, '[Staging] ContinuityPack fallback')) AS pack_fallback,
  count(*) FILTER (WHERE msg = '[Staging] Ambiguity check completed') AS ambiguity_checks,
  count(*) FILTER (WHERE status = 'AMBIGUOUS') AS ambiguous,
  count(*) FILTER (WHERE starts_with(msg, '[Staging] Governor pass ')) AS governor_lines,
  count(*) FILTER (WHERE msg = 'request completed') AS requests,
  count(*) FILTER (WHERE res.statusCode >= 500) AS http_5xx,
  avg(size_bytes) AS avg_pack_size,
  avg(built_in_ms) AS avg_build_ms,
  avg(checked_in_ms) AS avg_check_ms,
  quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS latency_ms
FROM read_json(?, format='newline_delimited', ignore_errors=true, columns={
  level: 'INTEGER', msg: 'VARCHAR', status: 'VARCHAR', size_bytes: 'BIGINT', built_in_ms: 'DOUBLE',
  checked_in_ms: 'DOUBLE', duration_ms: 'DOUBLE', res: 'STRUCT(statusCode INTEGER)'})
"""


def duckdb_runbook_metrics(log_path: str) -> dict:
    """The anchor: the runbook's metrics in one bare DuckDB pass (default settings), as the runbook
    prints them (averages truncated), and the latency percentiles."""
    import duckdb

    row = duckdb.connect().execute(RUNBOOK_METRICS_SQL, [log_path]).fetchone()
    assert row is not None  # the outer SELECT aggregates without GROUP BY: always one row
    *metrics, latency = row
    return {"runbook_metrics": [0 if value is None else int(value) for value in metrics], "latency_ms": latency}


def duckdb_narrow(log_path: str) -> None:
    import duckdb

    duckdb.connect().execute(NARROW_SQL, [log_path]).fetchall()


def analyze_call(log_path: str) -> dict:
    """Our analysis in-process, as `analyze` runs it: one streaming pass, the metrics and their text."""
    from staging_validation.telemetry.aggregates import (
        final_metrics_from_summary,
        render_final_metrics_text,
        summarize_log_file,
    )

    summary, lines = summarize_log_file(log_path)
    metrics = final_metrics_from_summary(summary, lines=lines)
    render_final_metrics_text(metrics)
    return json.loads(json.dumps(metrics, default=str))


_RUNBOOK_LINE = re.compile(r"^\s*(?P<label>[^:=]+?):\s*(?P<value>-?\d+)?")


def runbook_numbers(text: str) -> list[tuple[str, int | None]]:
    """The runbook's metric lines in order (a blank value, awk printing nothing, is None)."""
    numbers = []
    for line in text.splitlines():
        match = _RUNBOOK_LINE.match(line)
        if match and not line.startswith("==="):
            value = match.group("value")
            numbers.append((match.group("label"), None if value is None else int(value)))
    return numbers


def runbook_differences(text: str, truth: dict) -> list[list[str]]:
    rows = []
    measured = runbook_numbers(text)
    if len(measured) != len(truth["runbook_metrics"]):
        raise RuntimeError(f"runbook printed {len(measured)} metric lines, expected {len(truth['runbook_metrics'])}")
    for (label, value), (truth_label, expected) in zip(measured, truth["runbook_metrics"]):
        if label != truth_label:
            raise RuntimeError(f"runbook line {label!r} where {truth_label!r} was expected")
        if value != expected:
            if value is None or expected is None:
                difference = "n/a"
            else:
                delta = value - expected
                difference = f"{delta:+,}" + (f" ({value / expected:.2f}x)" if expected else "")
            rows.append([label, "(blank)" if value is None else f"{value:,}", f"{expected:,}", difference])
    return rows


def _close(actual, expected) -> bool:
    if isinstance(expected, float) or isinstance(actual, float):
        return actual is not None and expected is not None and math.isclose(actual, expected, rel_tol=1e-9)
    return actual == expected


def compare_with_truth(ours: dict, truth: dict) -> list[list[str]]:
    """Every number of ours that the truth knows, as [name, ours, truth, "ok" | "DIFFERS"]."""
    return [
        [name, repr(actual), repr(expected), "ok" if _close(actual, expected) else "DIFFERS"]
        for name, actual, expected in _number_pairs(ours, truth)
    ]


def _number_pairs(ours: dict, truth: dict):
    """(name, ours, truth) for every number of the final metrics that the generator counted."""
    from staging_validation.telemetry.aggregates import runbook_metrics

    for (label, actual), (_, expected) in zip(runbook_metrics(ours), truth["runbook_metrics"], strict=True):
        yield f"runbook line {label!r}", actual, expected
    yield "lines total", ours["lines"]["total"], truth["lines_total"]
    yield "lines unparsed", ours["lines"]["unparsed"], truth["unparsed_lines"]
    yield "error lines", ours["error_lines"], truth["error_lines"]
    for kind, expected in truth["events"].items():
        yield f"events {kind}", ours["events"].get(kind, 0), expected
    for origin, kinds in truth["events_by_origin"].items():
        for kind, expected in kinds.items():
            yield f"events {origin} {kind}", ours["events_by_origin"][origin].get(kind, 0), expected
    requests = ours["requests"]
    for status, expected in truth["requests"]["by_status"].items():
        yield f"requests status {status}", requests["by_status"].get(status, 0), expected
    yield "requests probe", requests["probe"], truth["events_by_origin"]["probe"].get("request_completed", 0)
    yield "requests 5xx", requests["http_5xx"], truth["requests"]["by_status_class"].get("5xx", 0)
    for name in ("p50", "p95", "p99"):
        yield f"request latency {name}", requests["latency_ms"][name], truth["latency_ms"][name]
    averages = truth["averages"]
    yield "avg pack size", ours["pack"]["avg_size_bytes"], averages["pack_size_bytes"]
    yield "avg pack build ms", ours["pack"]["avg_build_ms"], averages["pack_build_ms"]
    yield "avg check ms", ours["ambiguity"]["avg_check_ms"], averages["check_latency_ms"]
    for status, expected in truth["ambiguity"]["by_status"].items():
        yield f"ambiguity status {status}", ours["ambiguity"]["by_status"].get(status, 0), expected
    for reason, expected in truth["ambiguity"]["by_reason"].items():
        yield f"ambiguity reason {reason}", ours["ambiguity"]["by_reason"].get(reason, 0), expected
    yield "organic ambiguity checks", ours["ambiguity"]["organic_checks"], truth["organic_ambiguity_checks"]
    yield "organic ambiguous", ours["ambiguity"]["organic_ambiguous"], truth["organic_ambiguous"]
    for group in ("by_source", "by_type"):
        for value, expected in truth["relationship"][group].items():
            yield f"relationship {value}", ours["relationship"][group].get(value, 0), expected
    governor, expected_governor = ours["governor"], truth["governor"]
    for violation, expected in expected_governor["by_violation_type"].items():
        yield f"governor violation {violation}", governor["by_violation_type"].get(violation, 0), expected
    for attempt, expected in expected_governor["passed_attempt_distribution"].items():
        yield f"governor passed at attempt {attempt}", governor["passed_attempt_distribution"].get(attempt, 0), expected
    for name in ("passed_requests", "zero_regeneration_share", "regen_path_requests"):
        yield f"governor {name}", governor[name], expected_governor[name]
    for name in ("p50", "p95", "p99"):
        yield (
            f"governor regen-path latency {name}",
            governor["regen_path_latency_ms"][name],
            expected_governor["regen_path_latency_ms"][name],
        )
    for op, expected in truth["identity"]["by_op"].items():
        yield f"identity {op}", ours["identity"]["by_op"].get(op, 0), expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=550)
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_MEGABYTES} MB day")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--runbook-repetitions", type=int, default=3, help="the slow contender")
    parser.add_argument("--runbook-script", type=Path, default=DEFAULT_RUNBOOK_SCRIPT)
    parser.add_argument("--skip-cli", action="store_true", help="time the in-process call only")
    args = parser.parse_args(argv)
    if not args.runbook_script.is_file():
        parser.error(f"runbook script {args.runbook_script} not found (give --runbook-script)")
    megabytes = QUICK_MEGABYTES if args.quick else args.megabytes
    log, truth = cached_day(megabytes, args.seed)
    log_arg = str(log)

    specs = {
        RUNBOOK: {"command": ["bash", str(args.runbook_script), log_arg]},
        BARE_DUCKDB: {"call": "bench_analysis:duckdb_runbook_metrics", "args": [log_arg], "imports": ["duckdb"]},
        BARE_DUCKDB_NARROW: {"call": "bench_analysis:duckdb_narrow", "args": [log_arg], "imports": ["duckdb"]},
        "analyze (in-process call)": {
            "call": "bench_analysis:analyze_call",
            "args": [log_arg],
            "imports": ["staging_validation.telemetry.aggregates"],
        },
    }
    if not args.skip_cli:
        specs["analyze (CLI, incl. start-up)"] = {"command": [str(CLI), "analyze", log_arg, "--json"]}
    repetitions = {name: args.repetitions for name in specs} | {RUNBOOK: args.runbook_repetitions}
    results = measure_interleaved(specs, repetitions)
    runbook_s = results[RUNBOOK]["median_s"]
    duckdb_s = results[BARE_DUCKDB]["median_s"]

    print(
        f"\nFinal analysis of {log.name}: {truth['generator']['bytes'] / 1e6:.0f} MB, {truth['lines_total']:,} lines, "
        f"{truth['requests']['total']:,} requests; medians of {args.repetitions} runs "
        f"({args.runbook_repetitions} for the runbook), round-robin, each in a fresh process; {load_average()}\n"
    )
    print_table(
        ["contender", "wall median", "speed-up vs runbook", "x bare DuckDB", "peak RSS"],
        [
            [
                name,
                f"{result['median_s']:.2f} s",
                f"{runbook_s / result['median_s']:.1f}x",
                f"{result['median_s'] / duckdb_s:.2f}",
                f"{result['peak_rss_mb']:.0f} MB",
            ]
            for name, result in results.items()
        ],
    )

    anchor = results[BARE_DUCKDB]["result"]
    anchor_latency = dict(zip(("p50", "p95", "p99"), anchor["latency_ms"]))
    anchor_right = [label for (label, expected), value in zip(truth["runbook_metrics"], anchor["runbook_metrics"])
                    if value == expected]
    anchor_right += [name for name, value in anchor_latency.items()
                     if math.isclose(value, truth["latency_ms"][name], rel_tol=1e-9)]
    print(f"\n{BARE_DUCKDB}: {len(anchor_right)}/{len(truth['runbook_metrics']) + 3} numbers equal the ground truth "
          "(the runbook's metrics and latency p50/p95/p99)")

    failures = 0
    for name in [name for name in results if name.startswith("analyze")]:
        result = results[name]["result"]
        ours = result if isinstance(result, dict) else json.loads(result)
        rows = compare_with_truth(ours, truth)
        wrong = [row for row in rows if row[3] != "ok"]
        failures += len(wrong)
        print(f"\n{name}: {len(rows) - len(wrong)}/{len(rows)} numbers equal the ground truth")
        if wrong:
            print_table(["number", "ours", "truth", ""], wrong)

    differences = runbook_differences(results[RUNBOOK]["result"], truth)
    print(f"\nrunbook: {len(differences)} of {len(truth['runbook_metrics'])} numbers differ from the ground truth")
    if differences:
        print_table(["runbook line", "runbook", "truth", "difference"], differences)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
