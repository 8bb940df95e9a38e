"""From gate results to ACCEPT / EXTEND / REJECT / INCONCLUSIVE, and the early stop the monitor applies
to partial data.

The order is the policy's: REJECT on a critical FAIL, then EXTEND on any reason to gather more data, then
ACCEPT. Every decision names the rule that produced it (a stable id such as `extend.forced_review`).

The target is judged on what it did, never on what the validator failed to collect: when the evidence a
rule needs is missing and the validator missed part of the campaign (a probe step not run and not made
up, an hour's telemetry not ingested, a campaign stopped because its own runs kept failing), the decision
is INCONCLUSIVE with a rule naming the validator (`inconclusive.validator`,
`inconclusive.validator_failed`), never a REJECT or an EXTEND for that missing evidence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Literal

import pandas as pd

from staging_validation.acceptance.gates import GateResult, event_evidence, identity_merges, merge_evidence
from staging_validation.acceptance.policy import Policy
from staging_validation.collection.validator_gaps import ValidatorCoverage
from staging_validation.lifecycle import EarlyStop
from staging_validation.schemas.event_columns import EventKind

DecisionOutcome = Literal["ACCEPT", "EXTEND", "REJECT", "INCONCLUSIVE"]
# Rules whose reason is missing evidence, as opposed to evidence the target produced.
MISSING_EVIDENCE_RULES = ("extend.critical_no_data", "extend.low_coverage")
VALIDATOR_ACTION = ("Fix what kept the validator from collecting (see the report's section on what the validator "
                    "missed), then run the campaign again: the target was not judged on the evidence it missed.")


@dataclasses.dataclass
class Decision:
    decision: DecisionOutcome
    rule: str
    reason: str
    action_items: list[str]
    extend_hours: int  # hours to add to the campaign; 0 unless EXTEND continues automatically
    deciding_gates: list[int]


def coverage(hours_with_data: Iterable[int], hours_expected: int) -> float:
    """Share of the campaign's hours 0..hours_expected-1 that have stored data."""
    if hours_expected <= 0:
        return 0.0
    return len({h for h in hours_with_data if 0 <= h < hours_expected}) / hours_expected


def _names(gates: list[GateResult]) -> str:
    return ", ".join(f"gate {g.gate} ({g.name})" for g in gates)


def _missed_note(validator: ValidatorCoverage | None) -> str:
    """What the validator missed, said even when the evidence was enough to decide without it."""
    if validator is None or not validator.missed_anything:
        return ""
    return f" The validator missed (not charged to the target): {validator.missed_text()}."


def decide(gates: list[GateResult], coverage: float, policy: Policy, extension_count: int = 0,
           stopped: EarlyStop | None = None, validator: ValidatorCoverage | None = None) -> Decision:
    """`extension_count` is how many extensions the campaign already ran (0: the first decision);
    `stopped` is the early stop that ended the campaign, if any; `validator` is what the validator
    collected of the round (None: assume it collected everything)."""
    actions = [g.action_item for g in gates if g.action_item and g.status in ("FAIL", "REVIEW")]
    if stopped is not None:
        return Decision("REJECT", stopped.rule, f"Stopped early: {stopped.reason}", actions,
                        0, [stopped.gate])

    critical_fails = [g for g in gates if g.critical and g.status == "FAIL"]
    if critical_fails:
        return Decision("REJECT", "reject.critical_fail",
                        f"Critical {_names(critical_fails)} failed: "
                        + " ".join(g.reason for g in critical_fails),
                        actions, 0, [g.gate for g in critical_fails])

    if validator is not None and validator.failed_reason:
        return Decision("INCONCLUSIVE", "inconclusive.validator_failed",
                        f"Not judged: the campaign was stopped because the validator's own runs kept failing. "
                        f"What the validator missed: {validator.missed_text()}.",
                        [*actions, VALIDATOR_ACTION], 0, [])

    reviews = [g for g in gates if g.status == "REVIEW"]
    critical_no_data = [g for g in gates if g.critical and g.status == "NO_DATA"]
    extend_reasons: list[tuple[str, list[GateResult], str]] = []
    forced = [g for g in reviews if g.forces_extend]
    if forced:
        extend_reasons.append(("extend.forced_review", forced,
                               f"{_names(forced)} in a REVIEW that requires more data"))
    secondary = [g for g in gates if not g.critical and g.status in ("REVIEW", "FAIL")]
    if secondary:
        extend_reasons.append(("extend.secondary_gate", secondary,
                               f"secondary {_names(secondary)} is {'/'.join(g.status for g in secondary)}"))
    if len(reviews) >= 2:
        extend_reasons.append(("extend.multiple_reviews", reviews, f"{len(reviews)} gates in REVIEW"))
    if critical_no_data:
        extend_reasons.append(("extend.critical_no_data", critical_no_data,
                               f"no evidence for critical {_names(critical_no_data)}"))
    if coverage < policy.coverage_minimum:
        extend_reasons.append(("extend.low_coverage", [],
                               f"only {coverage:.0%} of the campaign's hours have data "
                               f"(minimum {policy.coverage_minimum:.0%})"))

    if validator is not None and validator.missed_anything and any(
            rule in MISSING_EVIDENCE_RULES for rule, _, _ in extend_reasons):
        # Evidence is missing and the validator missed part of the campaign: not the target's to answer for.
        target_reasons = [r for r in extend_reasons if r[0] not in MISSING_EVIDENCE_RULES]
        if not target_reasons or extension_count > 0:
            missing = sorted({g.gate for _, found, _ in extend_reasons for g in found if g.status == "NO_DATA"})
            return Decision("INCONCLUSIVE", "inconclusive.validator",
                            f"Not judged: evidence is missing ({'; '.join(t for _, _, t in extend_reasons)}) and "
                            f"the validator failed to collect part of the campaign: {validator.missed_text()}.",
                            [*actions, VALIDATOR_ACTION], 0, missing)
        extend_reasons = target_reasons

    if extend_reasons:
        deciding = sorted({g.gate for _, found, _ in extend_reasons for g in found})
        details = "; ".join(text for _, _, text in extend_reasons)
        gate_reasons = " ".join(g.reason for g in gates if g.gate in deciding)
        if extension_count == 0:
            rule = extend_reasons[0][0]
            reason = f"More data needed: {details}. {gate_reasons}".strip() + _missed_note(validator)
            return Decision("EXTEND", rule, reason, actions, policy.extension_hours, deciding)
        if critical_no_data:
            return Decision("REJECT", "reject.no_evidence_after_extension",
                            f"Cannot accept without evidence: after {extension_count} extension(s) there is "
                            f"still {details}.",
                            actions + [f"Make {_names(critical_no_data)} observable, then redeploy."],
                            0, [g.gate for g in critical_no_data])
        return Decision("EXTEND", "extend.after_extension",
                        f"Still undecided after {extension_count} extension(s): {details}; a person must "
                        f"decide whether to release, extend again or reject. {gate_reasons}".strip(),
                        actions + ["A person must decide: the policy does not extend a campaign twice."],
                        0, deciding)

    if len(reviews) == 1:
        review = reviews[0]
        return Decision("ACCEPT", "accept.one_review_with_action",
                        f"All critical gates pass except {_names(reviews)} in REVIEW with a clear action: "
                        f"{review.reason}" + _missed_note(validator), actions, 0, [review.gate])
    unobserved = [g for g in gates if g.status == "NO_DATA"]
    reason = "All critical gates pass."
    if unobserved:
        reason += f" No data for secondary {_names(unobserved)}."
        actions += [f"Make {_names(unobserved)} observable in the next campaign."]
    return Decision("ACCEPT", "accept.all_pass", reason + _missed_note(validator), actions, 0, [])


def early_stop(records: pd.DataFrame, events: pd.DataFrame, policy: Policy) -> EarlyStop | None:
    """The earliest failure that ends a campaign at once (missing pack, identity merge), or None.
    Works on any slice of the campaign's data, so the monitor can call it on each new window."""
    found: list[EarlyStop] = []
    if policy.early_stop.missing_pack:
        missing = events[events["kind"] == EventKind.PACK_MISSING.value].sort_values("time")
        if len(missing):
            first = missing.iloc[0]
            found.append(EarlyStop(
                gate=1, rule="early_stop.missing_pack", first_seen=first["time"].isoformat(),
                hour=int(first["hour"]),
                reason=(f"{len(missing)} request(s) ran without a ContinuityPack; first at "
                        f"{first['time'].isoformat()} (hour {int(first['hour'])})."),
                evidence=event_evidence(missing)))
    if policy.early_stop.identity_merge:
        merges = identity_merges(records, events).sort_values("time")
        if len(merges):
            first = merges.iloc[0]
            found.append(EarlyStop(
                gate=5, rule="early_stop.identity_merge", first_seen=pd.Timestamp(first["time"]).isoformat(),
                hour=int(first["hour"]),
                reason=(f"accidental identity merge: {first['detail']}; first at "
                        f"{pd.Timestamp(first['time']).isoformat()} (hour {int(first['hour'])})."),
                evidence=merge_evidence(merges)))
    return min(found, key=lambda stop: stop.first_seen) if found else None
