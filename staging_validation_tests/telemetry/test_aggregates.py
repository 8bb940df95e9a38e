"""The runbook's aggregates counted from structured fields: its grep traps do not fool them, the stored-
events path and the streaming `analyze` path agree, and the CLI behaves."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from staging_validation.schemas.probe_records import ProbeRecord, records_to_table
from staging_validation.target.profile import DOCUMENTED_PROFILE
from staging_validation.telemetry.aggregates import (
    LineCounts,
    final_metrics,
    final_metrics_from_summary,
    hourly_report,
    metrics_snapshot,
    render_final_metrics_text,
    render_hourly_log_line,
    render_metrics_log_line,
    reported_metrics,
    runbook_metrics,
    summarize_log_file,
)
from staging_validation.telemetry.parse import parse_log

T0 = 1_795_392_000_000


def pino(msg: str, level: int = 30, req_id: str | None = None, **fields) -> str:
    record = {"level": level, "time": T0, "pid": 7, "hostname": "stg"}
    if req_id is not None:
        record["reqId"] = req_id
    record.update(fields)
    record["msg"] = msg
    return json.dumps(record, separators=(",", ":"))  # compact, as pino writes: "size_bytes":123


def completed(req_id: str, status: int, duration_ms: float) -> str:
    return pino("request completed", req_id=req_id, req={"method": "POST", "url": "/v1/chat"},
                res={"statusCode": status}, duration_ms=duration_ms)  # fmt: skip


def governor(req_id: str, attempt: int, status: str, violation: str, regen_ms: float) -> str:
    return pino(f"[Staging] Governor pass {attempt}/5", req_id=req_id, status=status, violation_type=violation,
                attempt=attempt, max_attempts=5, regen_in_ms=regen_ms)  # fmt: skip


# Every line here is a trap for one of the runbook's greps; the comment says which count it must not move.
TRAP_LOG = [
    pino("[Staging] ContinuityPack built", req_id="req-1", hashedUserId="a", size_bytes=100, built_in_ms=10),
    pino("[Staging] ContinuityPack built", req_id="req-2", hashedUserId="b", size_bytes=201, built_in_ms=21),
    pino("[Staging] Ambiguity check completed", req_id="req-1", status="clear", reason="NONE",
         input_length=40, confidence=0.9, checked_in_ms=5, prompt="what is the fallback plan if my flight is late"),
    pino("[Staging] Ambiguity check completed", req_id="req-2", status="AMBIGUOUS", reason="MALFORMED_QUERY",
         input_length=9, confidence=0.8, checked_in_ms=7, prompt="I am missing a backpack, no continuity"),
    pino("[Staging] Relationship resolved", req_id="req-1", hashedUserId="a", source="default",
         relationship_type="public", voice_profile="neutral", trust_level="low"),
    governor("req-1", 1, "violation_detected", "repetition", 0),
    governor("req-1", 2, "violation_detected", "posture", 400),
    governor("req-1", 3, "passed", "none", 600),
    completed("req-5003", 200, 1500),  # an id and a duration containing 500: not a 5xx
    completed("req-2", 200, 500),  # a duration of 500: not a 5xx
    completed("req-1", 502, 2500),  # a 5xx
    completed("sv-probe-1", 504, 30000),  # a 5xx, the one timeout, and a probe request
    completed("req-7", 429, 3),  # rate limited
    pino("user asked about error handling and a timeout", req_id="req-8", prompt="exception timeout error"),
    pino("[Staging] Identity operation", op="link", provider="discord", provider_user_id="d", vi_user_id="u", ok=True),
    pino("[Staging] Identity operation", level=50, op="link", provider="console", provider_user_id="c",
         vi_user_id="u", ok=False),
    pino("[Staging] Identity operation", op="resolve", provider="discord", provider_user_id="identity-link-7",
         vi_user_id="u", ok=True),
    pino("Unhandled error in chat handler", level=50, req_id="req-1", err={"type": "TypeError"}),
    "GET /v1/chat 500 fallback route hit by health checker (not an error)",
    "Warning: default pack cache fallback disabled",
]  # fmt: skip


@pytest.fixture
def trap_log(tmp_path):
    path = tmp_path / "staging.log"
    path.write_text("\n".join(TRAP_LOG) + "\n", encoding="utf-8")
    return path


def test_the_runbook_metrics_are_counted_from_fields_not_text(trap_log):
    metrics = final_metrics(None, parse_log(trap_log).events)
    assert runbook_metrics(metrics) == [
        ("Missing-pack events", 0),
        ("Default-pack fallbacks", 0),
        ("Total builds", 2),
        ("Avg size", 150),  # the runbook's awk -F': ' prints 0 on compact JSON; 150.5 truncated like awk
        ("Avg build time", 15),
        ("Total checks", 2),
        ("Detected ambiguous", 1),
        ("Clear requests", 1),
        ("MALFORMED_QUERY", 1),
        ("DANGLING_REFERENCE", 0),
        ("UNDERSPECIFIED_COMPARISON", 0),
        ("CONTRADICTORY_REQUEST", 0),
        ("Avg check latency", 6),
        ("Total resolutions", 1),
        ("Owner mode", 0),
        ("Public mode", 1),
        ("Locked fact", 0),  # relationship source
        ("Database", 0),
        ("Default", 1),
        ("Total passes", 3),
        ("0 violations (passed)", 1),
        ("1+ violations", 2),
        ("Repetition", 1),
        ("Locked fact", 0),  # governor violation
        ("Ungrounded", 0),
        ("Posture", 1),
        ("Link operations", 2),
        ("Total errors", 2),
        ("HTTP 5xx", 2),
        ("Timeouts", 1),
    ]
    requests = metrics["requests"]
    assert (requests["completed"], requests["probe"], requests["rate_limited"], requests["slow"]) == (5, 1, 1, 2)
    # linear between closest ranks of 3, 500, 1500, 2500, 30000
    assert requests["latency_ms"] == pytest.approx({"p50": 1500.0, "p95": 24500.0, "p99": 28900.0})
    governor_metrics = metrics["governor"]
    assert governor_metrics["passed_attempt_distribution"] == {"3": 1}
    assert governor_metrics["zero_regeneration_share"] == 0.0
    assert (governor_metrics["regen_path_requests"], governor_metrics["regen_path_latency_ms"]["p50"]) == (1, 1000.0)
    assert metrics["identity"]["failures"] == 1
    assert metrics["ambiguity"]["organic_rate"] == 0.5


def test_analyze_streaming_and_the_stored_events_give_the_same_numbers(trap_log):
    parsed = parse_log(trap_log)
    stored = final_metrics(None, parsed.events.to_pandas(), lines=parsed.line_counts())
    summary, lines = summarize_log_file(trap_log)
    streamed = final_metrics_from_summary(summary, lines=lines)
    assert streamed == stored
    assert streamed["lines"] == {"total": len(TRAP_LOG), "unparsed": 2, "readable": len(TRAP_LOG) - 2,
                                 "readable_share": pytest.approx((len(TRAP_LOG) - 2) / len(TRAP_LOG))}


def test_the_metrics_text_has_the_runbook_layout_then_what_it_lacked(trap_log):
    text = render_final_metrics_text(final_metrics(None, parse_log(trap_log).events))
    lines = text.splitlines()
    assert lines[0] == "=== 24-HOUR STAGING VALIDATION METRICS ==="
    assert lines[1:5] == ["Missing-pack events: 0", "Default-pack fallbacks: 0", "Total builds: 2",
                          "Avg size: 150 bytes"]
    assert "  Locked fact: 0" in lines and "  Posture: 1" in lines
    assert lines[30] == "Timeouts: 1"
    assert "Latency p99: 28900 ms" in lines
    assert "Rate-limited (429): 1" in lines


def test_snapshot_and_hourly_lines_render_the_counts():
    now = datetime(2026, 11, 23, 0, 30, tzinfo=UTC)
    events = parse_log(("\n".join(TRAP_LOG) + "\n").encode()).events
    records = records_to_table([
        ProbeRecord(time=now, campaign_s=1.0, probe="smoke", case="normal", user="u", route="/v1/chat",
                    method="POST", outcome=outcome, latency_ms=latency, dropped=dropped, passed=passed)
        for outcome, latency, dropped, passed in [("ok", 100.0, False, True), ("5xx", 300.0, False, False),
                                                   ("timeout", None, True, None)]
    ])  # fmt: skip
    snapshot = metrics_snapshot(records, events, at=now)
    line = render_metrics_log_line(snapshot)
    assert line.startswith("[2026-11-23T00:30:00+00:00] requests=5 errors=2 builds=2 missing=0 fallbacks=0")
    assert "reasons[MALFORMED_QUERY=1 NONE=1]" in line and "attempts[3:1]" in line
    report = hourly_report(records, events, hour=7, lines=LineCounts(total=20, unparsed=2, readable=18))
    assert report["probes"]["by_outcome"] == {"5xx": 1, "ok": 1, "timeout": 1}
    assert report["probes"]["latency_ms"]["p50"] == 200.0  # the dropped request has no latency
    assert render_hourly_log_line(report).startswith("hour 07: requests=5 errors=2 5xx=2 timeouts=1 rate_limited=1")


def test_metrics_of_nothing_are_not_observed_counts_and_absent_values():
    metrics = final_metrics(None, parse_log(b"").events)
    assert metrics["pack"]["avg_size_bytes"] is None and metrics["requests"]["latency_ms"]["p50"] is None
    assert metrics["pack"]["missing"] == 0 and "pack_missing" in metrics["not_observed"]  # numbers stay numbers
    text = render_final_metrics_text(metrics)
    assert "Missing-pack events: not observed" in text and "Total errors: not observed" in text
    assert "denominator is all traffic" in text


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "staging_validation.cli", "analyze", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_analyze_cli_writes_the_text_and_prints_json_with_the_same_numbers(trap_log, tmp_path):
    out = tmp_path / "staging-validation-metrics.txt"
    result = run_cli(str(trap_log), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    parsed = parse_log(trap_log)
    expected = final_metrics(None, parsed.events, lines=parsed.line_counts())
    assert printed == json.loads(json.dumps(reported_metrics(expected)))
    assert out.read_text() == render_final_metrics_text(expected)


def test_analyze_cli_reads_the_telemetry_section_of_a_profile(tmp_path):
    log = tmp_path / "custom.log"
    log.write_text(json.dumps({"lvl": 30, "t": T0, "message": "done", "code": 503}) + "\n")
    profile = tmp_path / "telemetry.yaml"
    profile.write_text(
        "telemetry:\n"
        "  rules: [{kind: request_completed, equals: done}]\n"
        "  fields: {level: lvl, time: t, msg: message, http_status: code}\n"
    )
    result = run_cli(str(log), "--profile", str(profile))
    assert result.returncode == 0, result.stderr
    assert "HTTP 5xx: 1" in result.stdout.splitlines()


def test_analyze_cli_accepts_a_whole_target_profile(trap_log):
    result = run_cli(str(trap_log), "--profile", str(DOCUMENTED_PROFILE))
    assert result.returncode == 0, result.stderr
    assert "Total builds: 2" in result.stdout.splitlines()


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/staging.log"], "Error: /nonexistent/staging.log: cannot read: No such file or directory"),
        (["{tmp}"], "cannot read: Is a directory"),
        (["{log}", "--profile", "{tmp}/missing.yaml"], "missing.yaml: cannot read"),
        (["{log}", "--profile", "{tmp}/bad.yaml"], "bad.yaml: telemetry.error_level: Input should be a valid integer"),
    ],
)
def test_analyze_cli_bad_input_exits_2_with_one_line(tmp_path, trap_log, args, message):
    (tmp_path / "bad.yaml").write_text("telemetry:\n  error_level: high\n")
    result = run_cli(*(arg.format(tmp=tmp_path, log=trap_log) for arg in args))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr
