"""Partial evidence is used and the validator's own shortfalls are never the target's: gate 2 reviews
prompt-set errors without an organic rate, drops are never "target unreachable", the stress hour is
invalid when the target's limiter answered it, and latency is per probed route."""

from __future__ import annotations

import pandas as pd
import pytest

from staging_validation.acceptance.alert_rules import window_alerts
from staging_validation.acceptance.decision import decide
from staging_validation.acceptance.gates import evaluate_gates, stress_result
from staging_validation.acceptance.notify import Message
from staging_validation.acceptance.policy import Policy
from staging_validation.acceptance.report import CampaignEvidence, hourly_series, render_report
from staging_validation.lifecycle import CampaignState
from staging_validation.schemas.outcome import Outcome
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.target.profile import load_target_profile
from staging_validation.telemetry.aggregates import final_metrics
from staging_validation_tests.acceptance.acceptance_tables import events, healthy_campaign, identity_rows, records

POLICY = Policy()


def prompt_rows(normal: int, false_positives: int, ambiguous: int, false_negatives: int, **extra) -> pd.DataFrame:
    rows = [{"probe": "prompt_set", "case": f"n{n}", "expected_ambiguous": False, "ambiguous": n < false_positives,
             **extra} for n in range(normal)]
    rows += [{"probe": "prompt_set", "case": f"a{n}", "expected_ambiguous": True, "ambiguous": n >= false_negatives,
              **extra} for n in range(ambiguous)]
    return records(rows)


def test_gate2_reviews_prompt_set_errors_when_the_organic_rate_is_unmeasured():
    # The measured case: FP 1 of 14 (7.1 %), FN 1 of 8 (12.5 %), no ambiguity check in telemetry.
    gates = evaluate_gates(prompt_rows(14, 1, 8, 1), events([]), POLICY)
    gate2 = gates[1]
    assert (gate2.status, gate2.rule) == ("REVIEW", "gate2.false_positive_review")
    assert "1 of 14 normal prompts flagged ambiguous (7.14 %" in gate2.reason
    assert "1 of 8 ambiguous prompts not flagged (12.50 %" in gate2.reason
    assert "rate NO_DATA" in gate2.reason and gate2.metrics["rate_measured"] is False
    assert gate2.evidence  # the misjudged prompts are quoted
    # The critical gate still lacks its rate: the decision cannot be ACCEPT.
    assert gate2.forces_extend and decide(gates, 1.0, POLICY).decision == "EXTEND"


def test_gate2_with_a_measured_rate_and_prompt_errors_does_not_force_an_extension():
    checks = events([{"kind": "ambiguity_check", "status": "clear"} for _ in range(200)])
    gate2 = evaluate_gates(prompt_rows(14, 1, 8, 1), checks, POLICY)[1]
    assert (gate2.status, gate2.forces_extend) == ("REVIEW", False) and "rate NO_DATA" not in gate2.reason


def test_gate2_without_the_rate_and_a_clean_prompt_set_is_no_data_saying_what_was_measured():
    gate2 = evaluate_gates(prompt_rows(14, 0, 8, 0), events([]), POLICY)[1]
    assert (gate2.status, gate2.rule) == ("NO_DATA", "gate2.no_data")
    assert "0 of 14 normal prompts flagged, 0 of 8 ambiguous prompts not flagged" in gate2.reason


def test_gate2_names_an_ambiguity_verdict_that_is_not_exposed():
    unexposed = "extract.ambiguity: answers carry no ambiguity flag"
    rows = records([{"probe": "prompt_set", "case": f"p{n}", "expected_ambiguous": n % 2 == 0, "ambiguous": None,
                     "not_exposed": unexposed} for n in range(20)])
    checks = events([{"kind": "ambiguity_check", "status": "clear"} for _ in range(200)])
    gate2 = evaluate_gates(rows, checks, POLICY)[1]
    assert (gate2.status, gate2.rule) == ("NO_DATA", "gate2.no_prompt_set")
    assert unexposed in gate2.reason and gate2.metrics["not_exposed"] == [unexposed]


def stress_rows(ok: int, limited: int, dropped: int, *, legacy: bool = False, **extra) -> list[dict]:
    base = {"probe": "stress", "case": "load", "hour": 7, **extra}
    rows = [{**base, "outcome": "ok", "latency_ms": 300.0} for _ in range(ok)]
    rows += [{**base, "outcome": "rate_limited", "http_status": 429, "latency_ms": 2.0} for _ in range(limited)]
    # Stored before drops had their own outcome, a drop read `timeout` with `dropped` set.
    rows += [{**base, "outcome": "timeout" if legacy else "dropped", "dropped": True, "latency_ms": None,
              "http_status": None} for _ in range(dropped)]
    return rows


@pytest.mark.parametrize("legacy", [False, True])
def test_the_validators_drops_are_never_target_unreachable(legacy):
    alerts = window_alerts(events([]), records(stress_rows(0, 0, 32, legacy=legacy)), POLICY)
    assert [a.rule for a in alerts] == []
    sent_timeout = records([{"probe": "smoke", "outcome": "timeout", "http_status": None}])
    assert [a.rule for a in window_alerts(events([]), sent_timeout, POLICY)] == ["monitor.target_unreachable"]


def test_identity_rows_never_sent_do_not_fail_gate5():
    rows = identity_rows(3) + [{"probe": "identity", "case": "link_astralis", "outcome": Outcome.DROPPED.value,
                                "dropped": True, "passed": None, "http_status": None}]
    assert evaluate_gates(records(rows), events([]), POLICY)[4].status != "FAIL"


def test_a_stress_hour_answered_by_the_rate_limit_is_invalid_with_the_shares():
    result = stress_result(records(stress_rows(100, 387, 32)), POLICY)
    assert result.valid is False and (result.planned, result.sent, result.dropped) == (519, 487, 32)
    assert result.rate_limited_share == pytest.approx(387 / 487)
    assert "INVALID" in result.reason and "387 of 487 sent requests rate-limited (79.47 %)" in result.reason
    assert "32 not sent by the validator (not counted)" in result.reason
    valid = stress_result(records(stress_rows(480, 7, 32)), POLICY)
    assert valid.valid is True and valid.rate_limited_share == pytest.approx(7 / 487)
    stricter = Policy.model_validate({"stress": {"rate_limited_share_max": 0.01}})
    assert stress_result(records(stress_rows(480, 7, 32)), stricter).valid is False
    assert stress_result(records([]), POLICY) is None


def test_hourly_latency_is_the_chat_routes_never_mixed_with_unrelated_404s():
    chat = [{"kind": "request_completed", "route": "/v1/chat", "http_status": 200, "duration_ms": 300.0, "hour": 8}
            for _ in range(10)]
    noise = [{"kind": "request_completed", "route": "/favicon.ico", "http_status": 404, "duration_ms": 0.0,
              "hour": 8} for _ in range(40)]
    hourly = hourly_series(events(chat + noise), load_target_profile().probed_routes())
    assert hourly.loc[8, "p50_ms"] == 300.0 and hourly.loc[8, "requests"] == 50


def test_the_report_shows_latency_per_probed_route_and_the_stress_validity():
    base_records, base_events = healthy_campaign(hours=8)
    noise = events([{"kind": "request_completed", "route": "/favicon.ico", "http_status": 404, "duration_ms": 0.0,
                     "hour": 3} for _ in range(500)])
    all_events = pd.concat([base_events, noise], ignore_index=True)
    all_records = pd.concat([base_records, records(stress_rows(100, 387, 32, route="/v1/chat",
                                                               method="POST"))], ignore_index=True)
    state = CampaignState(campaign="c1", created_at_ms=0, timing=CampaignTiming(start_ms=0, hour_seconds=3600))
    gates = evaluate_gates(all_records, all_events, POLICY)
    evidence = CampaignEvidence(campaign="c1", state=state, records=all_records, events=all_events, gates=gates,
                                decision=decide(gates, 1.0, POLICY), alerts=[], hours_observed=list(range(8)),
                                decided_at=pd.Timestamp.now(tz="UTC").to_pydatetime(), coverage=1.0,
                                judged_hours=8, extension_count=0, policy=POLICY)
    text = render_report(evidence, Message("s", "b"), final_metrics(all_records, all_events),
                         hourly_series(all_events, evidence.probed_routes()))
    assert "| /v1/chat (chat) |" in text and "favicon" not in text
    assert "**INVALID.** Stress result INVALID: 387 of 487 sent requests rate-limited (79.47 %)" in text
    assert "The validator dropped 32 stress request(s)" in text


def test_the_report_names_what_a_gate_could_not_see_because_it_is_not_exposed():
    from staging_validation.acceptance.report import _gate_measurements

    unexposed = "extract.relationship: answers carry no relationship context"
    rows = records([{"probe": "determinism", "case": f"request_{n}", "user": "d1", "not_exposed": unexposed}
                    for n in range(5)])
    gate3 = evaluate_gates(rows, events([]), POLICY)[2]
    assert ["Not exposed by the target (profile)", "—", unexposed] in _gate_measurements(gate3)
