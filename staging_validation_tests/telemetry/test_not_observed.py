"""Honest zeros and the readable share (issue 11 items 4 and 6): a count of an event kind the telemetry
could not show is "not observed", never 0 — in `analyze` (text and --json), the metrics text and the
hourly lines — and the share of the log that is readable is stated, with a warning when it is low."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

from staging_validation.acceptance.decision import decide
from staging_validation.acceptance.gates import evaluate_gates
from staging_validation.acceptance.notify import compose_decision_message
from staging_validation.acceptance.policy import Policy
from staging_validation.acceptance.report import CampaignEvidence, write_campaign_outputs
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignState
from staging_validation.schemas.event_columns import EventKind
from staging_validation.schemas.telemetry_mapping import TelemetryMapping
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.telemetry.aggregates import (
    LineCounts,
    final_metrics,
    hourly_report,
    render_final_metrics_text,
    render_hourly_log_line,
)
from staging_validation.telemetry.parse import parse_log
from staging_validation_tests.acceptance.acceptance_tables import START, events, records

T0 = 1_795_392_000_000


def pino(msg: str, level: int = 30, **fields) -> str:
    return json.dumps({"level": level, "time": T0, "msg": msg, **fields})


REQUESTS_ONLY = [
    pino("request completed", reqId="sv-1", res={"statusCode": 200}, duration_ms=10),
    pino("request completed", res={"statusCode": 200}, duration_ms=12),
    # links that this mapping does not recognise (the service logs them under another msg)
    pino("identity: account linked", op="link", provider="discord"),
]


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "staging_validation.cli", "analyze", *args],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_analyze_prints_not_observed_instead_of_0_for_kinds_the_log_never_showed(tmp_path):
    log = tmp_path / "requests.log"
    log.write_text("\n".join(REQUESTS_ONLY) + "\n")
    text = analyze(str(log))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "Missing-pack events: not observed" in lines
    assert "Link operations: not observed" in lines
    assert "Total passes: not observed" in lines
    assert "HTTP 5xx: 0" in lines and "Total errors: 0" in lines  # requests were seen: their zeros are real
    assert "Not observed: pack_missing (no ContinuityPack line in the telemetry)" in lines
    printed = json.loads(analyze(str(log), "--json").stdout)
    assert printed["pack"]["missing"] == "not observed"
    assert printed["identity"]["link_operations"] == "not observed"
    assert printed["events"]["identity_op"] == "not observed"
    assert printed["requests"]["http_5xx"] == 0
    assert printed["not_observed"]["identity_op"] == "no identity line in the telemetry"


def test_a_kind_the_mapping_declares_not_exposed_says_why(tmp_path):
    log = tmp_path / "requests.log"
    log.write_text("\n".join(REQUESTS_ONLY) + "\n")
    profile = tmp_path / "telemetry.yaml"
    profile.write_text(
        "telemetry:\n"
        "  rules:\n"
        "    - {kind: request_completed, equals: request completed}\n"
        "    - {kind: pack_built, equals: '[Staging] ContinuityPack built'}\n"
        "  not_exposed:\n"
        "    pack_missing: the service never logs a missing pack\n"
    )
    printed = json.loads(analyze(str(log), "--profile", str(profile), "--json").stdout)
    assert printed["not_observed"]["pack_missing"] == "not exposed: the service never logs a missing pack"
    assert printed["not_observed"]["identity_op"] == "no telemetry rule recognises it"


def test_a_zero_is_printed_where_the_concern_was_seen():
    built = pino("[Staging] ContinuityPack built", hashedUserId="u", size_bytes=10, built_in_ms=1)
    metrics = final_metrics(None, parse_log((built + "\n").encode()).events)
    assert "Missing-pack events: 0" in render_final_metrics_text(metrics).splitlines()


def test_the_readable_share_is_stated_and_warned_about_when_low(tmp_path):
    log = tmp_path / "noisy.log"
    noise = ["Error: boom", "    at handler (/srv/app.js:10:5)", "    at next (/srv/app.js:20:3)"] * 3
    log.write_text("\n".join([*REQUESTS_ONLY[:1], *noise]) + "\n")
    result = analyze(str(log))
    assert "readable share 10.0%: 1 JSON log records" in result.stdout
    assert "Warning: only 10.0% of the log's lines are readable JSON log records" in result.stderr
    printed = json.loads(analyze(str(log), "--json").stdout)
    assert printed["lines"] == {"total": 10, "unparsed": 9, "readable": 1, "readable_share": 0.1}
    assert printed["warnings"] and "10.0%" in printed["warnings"][0]


def test_the_hourly_line_marks_not_observed_and_the_readable_share():
    parsed = parse_log(("\n".join(REQUESTS_ONLY) + "\nnot json\n").encode())
    report = hourly_report(None, parsed.events, hour=3, lines=parsed.line_counts())
    line = render_hourly_log_line(report)
    assert "missing=n/o fallbacks=n/o" in line and "requests=2 " in line and "readable=75.0%" in line
    assert report["pack"]["missing"] == 0 and "pack_missing" in report["not_observed"]
    assert parsed.line_counts() == LineCounts(total=4, unparsed=1, readable=3)


def test_the_report_states_the_readable_share_warns_when_low_and_names_what_was_not_observed(tmp_path):
    state = CampaignState(campaign="sparse-like", created_at_ms=0,
                          timing=CampaignTiming(start_ms=int(START.value // 1_000_000), hour_seconds=3600))
    no_records, no_events = records([]), events([])
    gates = evaluate_gates(no_records, no_events, Policy())
    decision = decide(gates, 0.0, Policy())
    evidence = CampaignEvidence(
        campaign=state.campaign, state=state, records=no_records, events=no_events, gates=gates, decision=decision,
        alerts=[], hours_observed=[], decided_at=datetime(2026, 11, 21, tzinfo=UTC), coverage=0.0,
        judged_hours=state.total_hours, extension_count=0,
        telemetry_lines=LineCounts(total=1000, unparsed=900, readable=100),
        telemetry_mappings=[TelemetryMapping(not_exposed={EventKind.IDENTITY_OP: "identity is not logged"})],
    )
    message = compose_decision_message(decision, gates, Policy(), state.campaign, [])
    paths = write_campaign_outputs(CampaignLayout.of(tmp_path, state.campaign), evidence, message)
    report = paths["report"].read_text()
    assert "| Readable share of the log | 10.0 % (100 of 1000 lines are JSON log records) |" in report
    assert "**Warning:** only 10.0% of the log's lines are readable JSON log records" in report
    assert "Not observed in telemetry: `identity_op` (not exposed: identity is not logged)." in report
    metrics_text = paths["metrics"].read_text()
    assert "Link operations: not observed" in metrics_text and "readable share 10.0%" in metrics_text
