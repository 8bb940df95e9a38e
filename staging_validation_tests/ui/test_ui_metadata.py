"""What the Dagster UI shows of a campaign: the decision as a check severity, gates and hours with their
context, and the campaigns overview the sensor keeps current."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from staging_validation.acceptance.gates import GateResult
from staging_validation.campaign.jobs import CampaignLaunchConfig, register_campaign
from staging_validation.campaign.metadata import decision_check_result, gate_check_result, number
from staging_validation.campaign.overview import campaigns_overview_sensor
from staging_validation.campaign.resources import CampaignStore
from staging_validation.definitions import build_definitions


def decision_payload(decision: str, rule: str = "some.rule") -> dict:
    return {"campaign": "c1", "decision": decision, "rule": rule, "reason": "because", "observed_hours": [0, 1],
            "judged_hours": 2, "coverage": 1.0, "extension_count": 0, "extend_hours": 0, "deciding_gates": [1]}


@pytest.mark.parametrize(("decision", "passed", "severity"), [
    ("ACCEPT", True, dg.AssetCheckSeverity.WARN),  # a passed check's severity is not shown
    ("EXTEND", False, dg.AssetCheckSeverity.WARN),
    ("INCONCLUSIVE", False, dg.AssetCheckSeverity.WARN),
    ("REJECT", False, dg.AssetCheckSeverity.ERROR),
])
def test_the_decision_check_passes_warns_or_errors_with_its_rule(decision, passed, severity):
    result = decision_check_result(decision_payload(decision, "early_stop.missing_pack"))
    assert (result.passed, result.severity) == (passed, severity)
    assert f"c1: {decision} by rule early_stop.missing_pack: because" == result.description
    assert result.metadata["rule"].value == "early_stop.missing_pack"
    assert result.metadata["coverage_percent"].value == 100.0


def gate(status: str) -> GateResult:
    return GateResult(gate=2, key="ambiguity", name="AmbiguityGate rate", critical=False, status=status,
                      metrics={"rate": 0.071234, "latency": {"p99_ms": 1381.2449999999992}, "denominator": "organic"},
                      thresholds={"rate_review_at_or_above": 0.05, "min_samples": 50}, samples=420,
                      rule=f"gate2.{status.lower()}", reason="7.12 % of 420")


@pytest.mark.parametrize(("status", "severity", "words"), [
    ("REVIEW", dg.AssetCheckSeverity.WARN, "not a failure"),
    ("NO_DATA", dg.AssetCheckSeverity.WARN, "not measured"),
    ("FAIL", dg.AssetCheckSeverity.ERROR, "FAIL"),
])
def test_a_gate_check_says_which_kind_of_not_passing_with_campaign_hours_values_and_thresholds(status, severity,
                                                                                                 words):
    result = gate_check_result("gate_2_ambiguity_rate", gate(status), "c1", [0, 1, 2, 5])
    assert not result.passed and result.severity == severity
    assert words in result.description and result.description.startswith("c1: gate 2 ")
    assert result.metadata["status"].value == status
    assert words in result.metadata["meaning"].value or status == "FAIL"
    assert result.metadata["hours"].value == "0–2, 5"
    assert result.metadata["samples"].value == 420
    assert result.metadata["value.rate"].value == 0.07
    assert result.metadata["value.latency.p99_ms"].value == 1381.24
    assert result.metadata["threshold.rate_review_at_or_above"].value == 0.05


def test_numbers_are_rounded_and_missing_ones_are_null_not_zero():
    assert number(1381.2449999999992).value == 1381.24
    assert number(float("nan")) == dg.MetadataValue.null()
    assert number(None) == dg.MetadataValue.null()
    assert number(7).value == 7


def overview_rows(result) -> list[dict]:
    [event] = [e for e in result.asset_events if e.asset_key == dg.AssetKey("campaigns_overview")]
    return [record.data for record in event.metadata["campaigns"].value.records]


def test_the_overview_sensor_reports_one_row_per_campaign_when_something_changed(tmp_path):
    store = CampaignStore(data_root=str(tmp_path / "data"))
    for campaign in ("alpha", "beta"):
        register_campaign(store, CampaignLaunchConfig(campaign=campaign, telemetry_path=str(tmp_path / "log"),
                                                      hours=3))
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        def tick(cursor=None):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                              instance_ref=instance.get_ref(), resources=defs.resources)
            return campaigns_overview_sensor.evaluate_tick(context)

        first = tick()
        assert [(row["campaign"], row["decision"], row["status"], row["hours_planned"])
                for row in overview_rows(first)] == [("alpha", "pending", "registered", 3),
                                                     ("beta", "pending", "registered", 3)]
        assert tick(first.cursor).skip_message == "no campaign changed"

        store.layout("beta").decision_file.write_text(json.dumps({
            "decision": "REJECT", "rule": "early_stop.missing_pack",
            "gates": [{"gate": n, "status": "FAIL" if n == 1 else "PASS"} for n in range(1, 6)]}))
        decided = overview_rows(tick(first.cursor))[1]
        assert (decided["decision"], decided["rule"], decided["gate_1"], decided["gate_5"]) == (
            "REJECT", "early_stop.missing_pack", "FAIL", "PASS")
        assert decided["profile"] == "documented"
