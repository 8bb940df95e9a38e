"""The runbook's monitor rules over one 5-minute window; each case names the rule it expects."""

import pandas as pd
import pytest

from staging_validation.acceptance.alert_rules import window_alerts
from staging_validation.acceptance.policy import Policy
from staging_validation_tests.acceptance.acceptance_tables import events, identity_rows, records

POLICY = Policy()
NO_RECORDS = records([])


def error_lines(count):
    return [{"kind": "error", "level": 50, "msg": "Unhandled error in chat handler"} for _ in range(count)]


def completed(durations):
    return [{"kind": "request_completed", "http_status": 200, "duration_ms": d} for d in durations]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (error_lines(10), []),
        (error_lines(11), [("warning", "monitor.errors", 11)]),
        # level >= 50 counts whatever the kind (a missing pack is also an error line)
        (error_lines(10) + [{"kind": "identity_op", "level": 50, "identity_op": "link_failed"}],
         [("warning", "monitor.errors", 11)]),
        (completed([2000.0] * 5 + [1999.0] * 20), []),
        (completed([2000.0] * 6), [("warning", "monitor.slow_requests", 6)]),
        (completed([1999.9] * 6), []),
        ([{"kind": "pack_missing", "level": 50, "user_hash": "u1"}], [("critical", "monitor.missing_pack", 1)]),
        ([{"kind": "pack_fallback", "level": 40}], []),
        ([{"kind": "identity_op", "identity_op": "create", "provider": "discord", "provider_user_id": "d",
           "vi_user_id": "vi-1"},
          {"kind": "identity_op", "identity_op": "create", "provider": "sovereign", "provider_user_id": "s",
           "vi_user_id": "vi-1"}], [("critical", "monitor.identity_merge", 1)]),
        ([], []),
    ],
)
def test_monitor_rules(rows, expected):
    alerts = window_alerts(events(rows), NO_RECORDS, POLICY)
    assert [(a.severity, a.rule, a.count) for a in alerts] == expected


def test_identity_merge_seen_by_a_probe_is_critical():
    alerts = window_alerts(events([]), records(identity_rows(hour=3, merged=True)), POLICY)
    assert [(a.severity, a.rule) for a in alerts] == [("critical", "monitor.identity_merge")]
    assert "vi-3-discord" in alerts[0].message and alerts[0].evidence


def test_alert_time_is_the_first_offending_line_and_evidence_shows_lines():
    rows = [{"kind": "pack_missing", "level": 50, "time": "2026-11-20T08:03:00Z", "hour": 8},
            {"kind": "pack_missing", "level": 50, "time": "2026-11-20T08:01:00Z", "hour": 8}]
    (alert,) = window_alerts(events(rows), NO_RECORDS, POLICY)
    assert alert.time_ms == pd.Timestamp("2026-11-20T08:01:00Z").value // 1_000_000
    assert alert.evidence[0]["time"].startswith("2026-11-20T08:01:00")


def test_monitor_thresholds_and_severities_come_from_the_policy():
    policy = Policy.model_validate({"monitor": {"errors_warning_above": 2, "missing_pack_critical": False}})
    alerts = window_alerts(events(error_lines(3) + [{"kind": "pack_missing", "level": 50}]), NO_RECORDS, policy)
    assert [(a.severity, a.rule, a.count) for a in alerts] == [("warning", "monitor.errors", 4),
                                                                ("warning", "monitor.missing_pack", 1)]


def probe_rows(outcomes):
    return [{"probe": "smoke", "case": "normal", "outcome": outcome} for outcome in outcomes]


@pytest.mark.parametrize(
    ("record_outcomes", "event_rows", "expected"),
    [
        (["ok"] * 20, [], []),
        (["connection_error"], [], [("warning", "monitor.target_unreachable", 1)]),
        (["timeout", "connection_error", "ok"], [], [("warning", "monitor.target_unreachable", 2)]),
        (["rate_limited"] * 5, [], []),
        (["rate_limited"] * 6, [], [("warning", "monitor.rate_limited", 6)]),
        # 429s that only the telemetry saw (organic users) count too.
        (["rate_limited"] * 3, [{"kind": "request_completed", "http_status": 429, "duration_ms": 2.0}] * 3,
         [("warning", "monitor.rate_limited", 6)]),
        ([], [{"kind": "request_completed", "http_status": 429, "duration_ms": 2.0}] * 5, []),
    ],
)
def test_unreachable_target_and_rate_limiting_rules(record_outcomes, event_rows, expected):
    alerts = window_alerts(events(event_rows), records(probe_rows(record_outcomes)), POLICY)
    assert [(a.severity, a.rule, a.count) for a in alerts] == expected
