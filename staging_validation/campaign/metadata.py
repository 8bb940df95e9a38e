"""How the campaign's facts read in the Dagster UI: rounded numbers with their unit in the key, check
results that name their campaign, hour, value, threshold and samples, and the decision as a check severity.

The UI labels every check that did not pass "Failed"; the severity and the words say which kind: a REVIEW
or NO_DATA gate is a WARN whose text says it is not a failure, a FAIL is an ERROR.
"""

from __future__ import annotations

import math

import dagster as dg

from staging_validation.acceptance.gates import GateResult
from staging_validation.acceptance.report import hour_ranges

STATUS_SEVERITY = {"REVIEW": dg.AssetCheckSeverity.WARN, "NO_DATA": dg.AssetCheckSeverity.WARN,
                   "FAIL": dg.AssetCheckSeverity.ERROR}
STATUS_MEANING = {
    "PASS": "PASS",
    "REVIEW": "REVIEW (needs a person's look, not a failure)",
    "NO_DATA": "NO_DATA (not measured: too few samples, not a failure)",
    "FAIL": "FAIL",
}
# ACCEPT passes; EXTEND (observe longer) and an inconclusive verdict warn; REJECT is an error.
DECISION_SEVERITY = {"REJECT": dg.AssetCheckSeverity.ERROR}
DECISION_CHECK = "decision"
DECISION_CHECK_DESCRIPTION = (
    "The campaign's decision at a glance: passes on ACCEPT, warns on EXTEND (observe longer, then decide "
    "again) and on INCONCLUSIVE (the validator missed the evidence), errors on REJECT; the result names the "
    "rule that fired and why."
)
TAG_DECISION = "staging-validation/decision"
DIGITS = 2


def number(value: object, digits: int = DIGITS) -> dg.MetadataValue:
    """A metadata number rounded for reading; None/NaN become null (not measured), not 0."""
    if value is None or isinstance(value, bool):
        return dg.MetadataValue.null() if value is None else dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    as_float = float(value)  # type: ignore[arg-type]
    if math.isnan(as_float):
        return dg.MetadataValue.null()
    return dg.MetadataValue.float(round(as_float, digits))


def facts(values: dict, prefix: str) -> dict[str, dg.MetadataValue]:
    """A gate's metrics or thresholds as flat `prefix.name` entries (nested dicts joined with dots);
    numbers rounded, units are in the names (`_ms`, `_bytes`, `rate` and `share` are fractions 0–1)."""
    flat: dict[str, dg.MetadataValue] = {}
    for name, value in values.items():
        key = f"{prefix}.{name}"
        if isinstance(value, dict):
            flat.update(facts(value, key))
        elif isinstance(value, str):
            flat[key] = dg.MetadataValue.text(value)
        elif isinstance(value, list):
            flat[key] = dg.MetadataValue.text(", ".join(str(item) for item in value) or "none")
        elif value is None or isinstance(value, (int, float)):
            flat[key] = number(value)
        else:
            flat[key] = dg.MetadataValue.text(str(value))
    return flat


def _severity_text(passed: bool, severity: dg.AssetCheckSeverity | None) -> str:
    """The severity a person reads beside the UI's "Failed" badge: none for a pass."""
    return "none (passed)" if passed else (severity or dg.AssetCheckSeverity.WARN).value


def gate_check_result(check_name: str, gate: GateResult, campaign: str, hours: list[int]) -> dg.AssetCheckResult:
    """One gate as a check: the campaign and hours it judged, its values beside their thresholds."""
    meaning = STATUS_MEANING.get(gate.status, gate.status)
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=gate.status == "PASS",
        severity=STATUS_SEVERITY.get(gate.status, dg.AssetCheckSeverity.WARN),
        description=f"{campaign}: gate {gate.gate} {meaning}: {gate.reason} (rule {gate.rule})",
        metadata={
            "campaign": dg.MetadataValue.text(campaign),
            "hours": dg.MetadataValue.text(hour_ranges(hours) or "none"),
            "status": dg.MetadataValue.text(gate.status),
            "severity": dg.MetadataValue.text(_severity_text(gate.status == "PASS", STATUS_SEVERITY.get(gate.status))),
            "meaning": dg.MetadataValue.text(meaning),
            "rule": dg.MetadataValue.text(gate.rule),
            "samples": dg.MetadataValue.int(int(gate.samples)),
            **facts(gate.metrics, "value"),
            **facts(gate.thresholds, "threshold"),
        },
    )


def hour_check_result(check_name: str, campaign: str, hour: int, passed: bool, description: str,
                      severity: dg.AssetCheckSeverity, value: object, threshold: object, samples: int,
                      value_is: str = "", threshold_is: str = "",
                      **extra: dg.MetadataValue) -> dg.AssetCheckResult:
    """An hourly check whose result names its campaign and hour, the value it saw beside its threshold
    (`value_is` and `threshold_is` say what they count), and the samples it looked at."""
    metadata = {"campaign": dg.MetadataValue.text(campaign), "hour": dg.MetadataValue.int(hour),
                "value": number(value), "value_is": dg.MetadataValue.text(value_is),
                "threshold": number(threshold), "threshold_is": dg.MetadataValue.text(threshold_is),
                "samples": dg.MetadataValue.int(samples)}
    return dg.AssetCheckResult(check_name=check_name, passed=passed, severity=severity,
                               description=f"{campaign} hour {hour}: {description}",
                               metadata={**metadata, **extra})


def decision_check_result(payload: dict) -> dg.AssetCheckResult:
    """The `decision` check of campaign_decision, from the decision payload the asset stores."""
    decision, rule = payload["decision"], payload["rule"]
    passed = decision == "ACCEPT"
    return dg.AssetCheckResult(
        check_name=DECISION_CHECK,
        passed=passed,
        severity=DECISION_SEVERITY.get(decision, dg.AssetCheckSeverity.WARN),
        description=f"{payload['campaign']}: {decision} by rule {rule}: {payload['reason']}",
        metadata={
            "campaign": dg.MetadataValue.text(payload["campaign"]),
            "decision": dg.MetadataValue.text(decision),
            "severity": dg.MetadataValue.text(_severity_text(passed, DECISION_SEVERITY.get(decision))),
            "rule": dg.MetadataValue.text(rule),
            "reason": dg.MetadataValue.text(payload["reason"]),
            "hours_observed": dg.MetadataValue.int(len(payload["observed_hours"])),
            "hours_judged": dg.MetadataValue.int(int(payload["judged_hours"])),
            "coverage_percent": number(payload["coverage"] * 100, 1),
            "extensions_before": dg.MetadataValue.int(int(payload["extension_count"])),
            "extend_hours": dg.MetadataValue.int(int(payload.get("extend_hours") or 0)),
            "deciding_gates": dg.MetadataValue.text(", ".join(str(g) for g in payload["deciding_gates"]) or "none"),
        },
    )
