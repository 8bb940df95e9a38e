"""Every decision rule, the ops document's three conflicts, the after-extension rules and early stop.
Each case names the rule it expects."""

import pytest

from staging_validation.acceptance.decision import EarlyStop, coverage, decide, early_stop
from staging_validation.acceptance.gates import GateResult, evaluate_gates
from staging_validation.acceptance.policy import Policy
from staging_validation_tests.acceptance.acceptance_tables import (
    chat_events,
    events,
    healthy_campaign,
    identity_rows,
    records,
)

POLICY = Policy()


def gates(statuses: str, forced: tuple[int, ...] = (), policy: Policy = POLICY) -> list[GateResult]:
    """`statuses`: one letter per gate 1..5 — P(ASS), R(EVIEW), F(AIL), N(O_DATA)."""
    names = {"P": "PASS", "R": "REVIEW", "F": "FAIL", "N": "NO_DATA"}
    results = []
    for number, letter in enumerate(statuses, start=1):
        config = policy.gate(number)
        status = names[letter]
        results.append(GateResult(
            gate=number, key=f"g{number}", name=config.name, critical=config.critical, status=status, metrics={},
            thresholds={}, samples=100, rule=f"gate{number}.x", reason=f"gate {number} is {status}.",
            forces_extend=number in forced,
            action_item=f"act on gate {number}" if status in ("REVIEW", "FAIL") else None))
    return results


@pytest.mark.parametrize(
    ("statuses", "forced", "cov", "decision", "rule", "deciding"),
    [
        ("PPPPP", (), 1.0, "ACCEPT", "accept.all_pass", []),
        # the ops document: "1 REVIEW with clear action" is still a pass
        ("PRPPP", (), 1.0, "ACCEPT", "accept.one_review_with_action", [2]),
        ("RPPPP", (), 1.0, "ACCEPT", "accept.one_review_with_action", [1]),
        # ... but 2+ REVIEW extends
        ("RRPPP", (), 1.0, "EXTEND", "extend.multiple_reviews", [1, 2]),
        ("PRRPP", (), 1.0, "EXTEND", "extend.multiple_reviews", [2, 3]),
        # ... and the secondary gate in REVIEW (or FAIL) extends, never rejects
        ("PPPRP", (), 1.0, "EXTEND", "extend.secondary_gate", [4]),
        ("PPPFP", (), 1.0, "EXTEND", "extend.secondary_gate", [4]),
        # conflict: ambiguity > 10 % -> EXTEND, not REJECT
        ("PRPPP", (2,), 1.0, "EXTEND", "extend.forced_review", [2]),
        # conflict: governor regen p99 > 3000 ms -> EXTEND, not REJECT
        ("PPPRP", (4,), 1.0, "EXTEND", "extend.forced_review", [4]),
        # REJECT comes first: any critical FAIL, whatever else is extending
        ("FPPPP", (), 1.0, "REJECT", "reject.critical_fail", [1]),
        ("PFPPP", (), 1.0, "REJECT", "reject.critical_fail", [2]),
        ("PPFPP", (), 1.0, "REJECT", "reject.critical_fail", [3]),
        ("PPPPF", (), 1.0, "REJECT", "reject.critical_fail", [5]),
        ("FRPRF", (2, 4), 0.5, "REJECT", "reject.critical_fail", [1, 5]),
        # no evidence for a critical gate extends; for the secondary gate it does not
        ("NPPPP", (), 1.0, "EXTEND", "extend.critical_no_data", [1]),
        ("PPPPN", (), 1.0, "EXTEND", "extend.critical_no_data", [5]),
        ("PPPNP", (), 1.0, "ACCEPT", "accept.all_pass", []),
        # coverage: fewer than 90 % of the hours with data extends
        ("PPPPP", (), 0.89, "EXTEND", "extend.low_coverage", []),
        ("PPPPP", (), 0.90, "ACCEPT", "accept.all_pass", []),
        ("PPPPP", (), 0.91, "ACCEPT", "accept.all_pass", []),
    ],
)
def test_first_decision(statuses, forced, cov, decision, rule, deciding):
    result = decide(gates(statuses, forced), cov, POLICY)
    assert (result.decision, result.rule, result.deciding_gates) == (decision, rule, deciding)
    assert result.extend_hours == (48 if decision == "EXTEND" else 0)


def test_accept_with_one_review_carries_that_gates_action_item():
    result = decide(gates("PPRPP"), 1.0, POLICY)
    assert result.action_items == ["act on gate 3"]


def test_extend_lasts_the_policy_extension_and_lists_every_reason():
    policy = Policy(extension_hours=72)
    result = decide(gates("NRPRP", forced=(4,), policy=policy), 0.5, policy)
    assert (result.decision, result.rule, result.extend_hours) == ("EXTEND", "extend.forced_review", 72)
    for words in ("requires more data", "secondary", "2 gates in REVIEW", "no evidence", "50%"):
        assert words in result.reason


@pytest.mark.parametrize(
    ("statuses", "forced", "cov", "decision", "rule"),
    [
        # still no evidence for a critical gate after the extension: cannot accept without evidence
        ("NPPPP", (), 1.0, "REJECT", "reject.no_evidence_after_extension"),
        ("PPNRP", (4,), 1.0, "REJECT", "reject.no_evidence_after_extension"),
        # any other EXTEND stays EXTEND and a person decides; no automatic further extension
        ("PRPPP", (2,), 1.0, "EXTEND", "extend.after_extension"),
        ("PPPRP", (4,), 1.0, "EXTEND", "extend.after_extension"),
        ("RRPPP", (), 1.0, "EXTEND", "extend.after_extension"),
        ("PPPPP", (), 0.5, "EXTEND", "extend.after_extension"),
        # the other rules are unchanged by an extension
        ("PPPPP", (), 1.0, "ACCEPT", "accept.all_pass"),
        ("PRPPP", (), 1.0, "ACCEPT", "accept.one_review_with_action"),
        ("PPFPP", (), 1.0, "REJECT", "reject.critical_fail"),
    ],
)
def test_decision_after_an_extension(statuses, forced, cov, decision, rule):
    result = decide(gates(statuses, forced), cov, POLICY, extension_count=1)
    assert (result.decision, result.rule) == (decision, rule)
    assert result.extend_hours == 0
    if rule == "extend.after_extension":
        assert "a person must decide" in result.reason


def test_secondary_gate_made_critical_by_the_policy_rejects_on_fail():
    policy = Policy.model_validate({"gates": {"governor": {"critical": True}}})
    result = decide(gates("PPPFP", policy=policy), 1.0, policy)
    assert (result.decision, result.rule) == ("REJECT", "reject.critical_fail")


def test_an_early_stop_rejects_with_its_own_rule():
    stop = EarlyStop(gate=1, rule="early_stop.missing_pack", first_seen="2026-11-20T03:00:00+00:00", hour=3,
                     reason="1 request ran without a ContinuityPack.", evidence=[])
    result = decide(gates("NNNNN"), 0.1, POLICY, stopped=stop)
    assert (result.decision, result.rule, result.deciding_gates) == ("REJECT", "early_stop.missing_pack", [1])


@pytest.mark.parametrize(
    ("hours", "expected", "share"),
    [(range(24), 24, 1.0), (range(21), 24, 0.875), ([0, 1, 1, 2, 30], 4, 0.75), ([], 24, 0.0), ([0], 0, 0.0)],
)
def test_coverage_counts_distinct_campaign_hours(hours, expected, share):
    assert coverage(hours, expected) == share


# --- from measured tables to the decision: the three conflicts of the ops document -------------


def test_ambiguity_above_ten_percent_extends_not_rejects():
    record_frame, _ = healthy_campaign()
    rows = [line for n in range(200) for line in chat_events(n, n // 10, ambiguous=n % 8 == 0)]  # 12.5 %
    event_frame = events(rows)
    result = decide(evaluate_gates(record_frame, event_frame, POLICY), 1.0, POLICY)
    assert (result.decision, result.rule, result.deciding_gates) == ("EXTEND", "extend.forced_review", [2])


def test_slow_governor_regeneration_extends_not_rejects():
    record_frame, event_frame = healthy_campaign(requests_per_hour=30, regen_every=10, regen_ms=3500.0)
    result = decide(evaluate_gates(record_frame, event_frame, POLICY), 1.0, POLICY)
    assert (result.decision, result.rule, result.deciding_gates) == ("EXTEND", "extend.forced_review", [4])


def test_one_critical_review_accepts_but_a_governor_review_extends():
    record_frame, event_frame = healthy_campaign(ambiguous_every=14)  # ≈ 7 % organic ambiguity
    accepted = decide(evaluate_gates(record_frame, event_frame, POLICY), 1.0, POLICY)
    assert (accepted.decision, accepted.rule) == ("ACCEPT", "accept.one_review_with_action")
    assert accepted.action_items and "AmbiguityGate" in accepted.action_items[0]
    record_frame, event_frame = healthy_campaign(regen_every=5)  # 80 % pass on 0 regenerations
    extended = decide(evaluate_gates(record_frame, event_frame, POLICY), 1.0, POLICY)
    assert (extended.decision, extended.rule) == ("EXTEND", "extend.secondary_gate")


# --- early stop on partial data -----------------------------------------------------------------


def test_early_stop_on_a_missing_pack_gives_gate_rule_time_and_evidence():
    window = events([{"kind": "pack_built", "hour": 5},
                     {"kind": "pack_missing", "level": 50, "user_hash": "u7", "hour": 5,
                      "time": "2026-11-20T05:12:00Z"}])
    stop = early_stop(records([]), window, POLICY)
    assert (stop.gate, stop.rule, stop.hour) == (1, "early_stop.missing_pack", 5)
    assert stop.first_seen.startswith("2026-11-20T05:12:00") and "u7" in stop.evidence[0]["line"]


def test_early_stop_on_an_identity_merge_seen_by_the_probe():
    stop = early_stop(records(identity_rows(hour=9, merged=True)), events([]), POLICY)
    assert (stop.gate, stop.rule, stop.hour) == (5, "early_stop.identity_merge", 9)
    assert "vi-9-discord" in stop.reason


def test_early_stop_reports_the_earliest_failure():
    merge = records(identity_rows(hour=2, merged=True))
    missing = events([{"kind": "pack_missing", "level": 50, "hour": 6}])
    assert early_stop(merge, missing, POLICY).rule == "early_stop.identity_merge"


def test_no_early_stop_on_healthy_data_or_when_the_policy_disables_it():
    assert early_stop(*healthy_campaign(hours=2), POLICY) is None
    lenient = Policy.model_validate({"early_stop": {"missing_pack": False, "identity_merge": False}})
    assert early_stop(records(identity_rows(merged=True)),
                      events([{"kind": "pack_missing", "level": 50}]), lenient) is None
