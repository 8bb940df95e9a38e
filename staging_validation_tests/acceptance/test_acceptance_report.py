"""The filled report, decision.json, the metrics text and the charts for an ACCEPT, an EXTEND and a REJECT."""

import json
import re

import pandas as pd
import pytest

from staging_validation.acceptance.alert_rules import Alert
from staging_validation.acceptance.decision import decide
from staging_validation.acceptance.gates import evaluate_gates
from staging_validation.acceptance.notify import compose_decision_message
from staging_validation.acceptance.policy import Policy
from staging_validation.acceptance.report import CHARTS, CampaignEvidence, write_campaign_outputs
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignState
from staging_validation.schemas.timing import CampaignTiming
from staging_validation_tests.acceptance.acceptance_tables import START, events, healthy_campaign, records

POLICY = Policy()
SECTIONS = ["## 1. Deployment status", "## 2. Gate 1: ContinuityPack integrity", "## 3. Gate 2: AmbiguityGate rate",
            "## 4. Gate 3: Relationship determinism", "## 5. Gate 4: Governor regen health",
            "## 6. Gate 5: Identity correctness", "## 7. Operational metrics", "## 8. Incidents",
            "## 9. Anomalies", "## 10. Final gate table", "## 11. Decision", "## 12. Notification"]
PLACEHOLDERS = re.compile(r"_{3,}|\[date\]|\[reason\]|\[gate\]|<date>|<reason>|<gate>|TODO|\bnan\b|\bNaT\b")
MISSING_PACK_ALERT = Alert(time_ms=int(START.value // 1_000_000) + 5 * 3_600_000, severity="critical",
                           rule="monitor.missing_pack", message="1 request(s) ran without a ContinuityPack.",
                           count=1, evidence=[])


def campaign(kind: str):
    if kind == "ACCEPT":
        records, evts = healthy_campaign()
        return records, evts, []
    if kind == "EXTEND":
        records, evts = healthy_campaign(ambiguous_every=8)  # 12.5 % organic ambiguity
        return records, evts, []
    records, evts = healthy_campaign(hours=6)
    missing = events([{"kind": "pack_missing", "level": 50, "user_hash": "u-3", "hour": 5,
                       "time": START + pd.Timedelta(hours=5, minutes=1)}])
    return records, pd.concat([evts, missing], ignore_index=True), [MISSING_PACK_ALERT]


@pytest.fixture(scope="module", params=["ACCEPT", "EXTEND", "REJECT"])
def outputs(request, tmp_path_factory):
    records, evts, alerts = campaign(request.param)
    hours = sorted(set(evts["hour"]))
    state = CampaignState(campaign=f"camp-{request.param.lower()}", created_at_ms=0,
                          timing=CampaignTiming(start_ms=int(START.value // 1_000_000), hour_seconds=3600))
    gates = evaluate_gates(records, evts, POLICY)
    share = len(hours) / state.total_hours
    decision = decide(gates, share, POLICY)
    message = compose_decision_message(decision, gates, POLICY, state.campaign, hours)
    evidence = CampaignEvidence(campaign=state.campaign, state=state, records=records, events=evts, gates=gates,
                                decision=decision, alerts=alerts, hours_observed=hours,
                                decided_at=pd.Timestamp("2026-11-21T00:05:00Z").to_pydatetime(), coverage=share,
                                judged_hours=state.total_hours, extension_count=state.extension_count)
    layout = CampaignLayout.of(tmp_path_factory.mktemp(request.param), state.campaign)
    paths = write_campaign_outputs(layout, evidence, message)
    out_dir = layout.dir
    return request.param, out_dir, paths, message


def test_decision_is_the_expected_one(outputs):
    kind, _, paths, _ = outputs
    document = json.loads(paths["decision"].read_text())
    expected_rule = {"ACCEPT": "accept.all_pass", "EXTEND": "extend.forced_review",
                     "REJECT": "reject.critical_fail"}[kind]
    assert (document["decision"], document["rule"]) == (kind, expected_rule)


def test_report_fills_every_template_section(outputs):
    kind, _, paths, message = outputs
    report = paths["report"].read_text()
    positions = [report.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert f"**{kind}**, by rule" in report
    assert message.body.splitlines()[0] in report and message.subject in report
    assert report.count("**Status: ") == 5 and "Evidence:" in report
    final_table = report[report.index("## 10. Final gate table"):report.index("## 11. Decision")]
    assert final_table.count("`gate") == 5


def test_incidents_list_the_monitor_alerts_with_time(outputs):
    kind, _, paths, _ = outputs
    report = paths["report"].read_text()
    incidents = report[report.index("## 8. Incidents"):report.index("## 9. Anomalies")]
    if kind == "REJECT":
        assert "monitor.missing_pack" in incidents and "2026-11-20T05:00:00" in incidents
        assert "critical" in incidents
    else:
        assert "raised no alert" in incidents


def test_charts_are_pngs_linked_from_the_report(outputs):
    _, out_dir, paths, _ = outputs
    report = paths["report"].read_text()
    for relative in CHARTS.values():
        assert (out_dir / relative).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({relative})" in report


def test_decision_json_has_exactly_the_documented_keys(outputs):
    _, _, paths, message = outputs
    document = json.loads(paths["decision"].read_text())
    assert set(document) == {"campaign", "decision", "rule", "decided_at", "observed_hours", "coverage", "validator",
                             "extension", "gates", "action_items", "stress", "notification"}
    assert set(document["extension"]) == {"count", "hours"}
    assert [set(g) for g in document["gates"]] == [{"gate", "name", "critical", "status", "metrics", "thresholds",
                                                   "samples", "reason"}] * 5
    assert document["notification"] == {"subject": message.subject, "body": message.body}


def test_metrics_text_mirrors_the_runbook_final_analysis(outputs):
    kind, _, paths, _ = outputs
    text = paths["metrics"].read_text()
    assert text.startswith("=== 24-HOUR STAGING VALIDATION METRICS ===")
    assert f"Missing-pack events: {1 if kind == 'REJECT' else 0}\n" in text


def test_no_placeholder_text_and_no_half_written_file_remains(outputs):
    _, out_dir, paths, _ = outputs
    for name in ("report", "decision", "metrics"):
        found = PLACEHOLDERS.findall(paths[name].read_text())
        assert found == [], f"{name}: {found}"
    assert [p for p in out_dir.rglob("*") if p.name.endswith(".tmp")] == []


def test_a_campaign_with_no_data_at_all_still_gets_a_complete_report(tmp_path):
    state = CampaignState(campaign="empty", created_at_ms=0,
                          timing=CampaignTiming(start_ms=int(START.value // 1_000_000), hour_seconds=3600))
    no_records, no_events = records([]), events([])
    gates = evaluate_gates(no_records, no_events, POLICY)
    decision = decide(gates, 0.0, POLICY)
    message = compose_decision_message(decision, gates, POLICY, "empty", [])
    evidence = CampaignEvidence(campaign="empty", state=state, records=no_records, events=no_events, gates=gates,
                                decision=decision, alerts=[], hours_observed=[],
                                decided_at=pd.Timestamp("2026-11-21T00:05:00Z").to_pydatetime(), coverage=0.0,
                                judged_hours=state.total_hours, extension_count=state.extension_count)
    layout = CampaignLayout.of(tmp_path, state.campaign)
    paths = write_campaign_outputs(layout, evidence, message)
    report = paths["report"].read_text()
    assert all(section in report for section in SECTIONS)
    assert "Decision: EXTEND (rule extend.critical_no_data)" in message.body
    assert "NOT RECORDED" in report and "24 of 24 campaign hours have no stored data: hours 0–23." in report
    for relative in CHARTS.values():
        assert (layout.dir / relative).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("report", "decision", "metrics"):
        assert PLACEHOLDERS.findall(paths[name].read_text()) == []


def test_the_first_extend_is_reported_as_judged_not_as_the_lengthened_campaign(tmp_path):
    # The decision asset saves the lengthened state before the report is written; the report must still
    # describe the 24 hours that were judged and the extension this decision starts.
    records, evts, _ = campaign("EXTEND")
    lengthened = CampaignState(campaign="camp-extending", created_at_ms=0, extension_count=1, extension_hours=48,
                               timing=CampaignTiming(start_ms=int(START.value // 1_000_000), hour_seconds=3600))
    gates = evaluate_gates(records, evts, POLICY)
    decision = decide(gates, 1.0, POLICY, extension_count=0)
    hours = list(range(24))
    message = compose_decision_message(decision, gates, POLICY, lengthened.campaign, hours)
    evidence = CampaignEvidence(campaign=lengthened.campaign, state=lengthened, records=records, events=evts,
                                gates=gates, decision=decision, alerts=[], hours_observed=hours,
                                decided_at=pd.Timestamp("2026-11-21T00:05:00Z").to_pydatetime(), coverage=1.0,
                                judged_hours=24, extension_count=0)
    paths = write_campaign_outputs(CampaignLayout.of(tmp_path, lengthened.campaign), evidence, message)
    report = paths["report"].read_text()
    assert "| Observed hours | 24 of 24 (coverage 100%: hours with telemetry events) |" in report
    assert "| Extensions before this decision | 0 |" in report
    assert "(rule `extend.forced_review`), extending the campaign by 48 hours |" in report
    assert "have no stored data" not in report and "no probe result" not in report
    assert json.loads(paths["decision"].read_text())["extension"] == {"count": 0, "hours": 48}
