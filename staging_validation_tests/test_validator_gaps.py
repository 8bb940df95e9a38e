"""The validator's gaps as plain functions: gaps, make-up, coverage, and a decision that never charges them
to the target."""

from __future__ import annotations

import pytest

from staging_validation.acceptance.decision import decide
from staging_validation.acceptance.policy import Policy
from staging_validation.collection.recorded_steps import HourCollection, StepOutcome, StepStatus
from staging_validation.collection.validator_gaps import (
    NOT_RECORDED,
    Gap,
    ValidatorCoverage,
    find_gaps,
    makeup_plan,
    validator_coverage,
)
from staging_validation.lifecycle import CampaignState, EarlyStop, ValidatorFailure
from staging_validation.plan import ProbeStep, plan_for_hour
from staging_validation.schemas.timing import CampaignTiming
from staging_validation_tests.acceptance.test_acceptance_decision import gates

HOUR_S = 10.0
STATE = CampaignState(campaign="c", created_at_ms=0, timing=CampaignTiming(start_ms=0, hour_seconds=HOUR_S),
                      planned_hours=24)


def hour_start_ms(hour: float) -> int:
    return int(hour * HOUR_S * 1000)


def ran(hour: int, step: ProbeStep, makeup_of: int | None = None) -> StepOutcome:
    return StepOutcome(hour=hour, step=step, status=StepStatus.RAN, started_ms=hour_start_ms(hour),
                       ended_ms=hour_start_ms(hour + 0.5), passed=True, makeup_of=makeup_of)


def not_run(hour: int, step: ProbeStep, at_hour: float, reason: str = "no collector was running during the hour",
            makeup_of: int | None = None) -> StepOutcome:
    return StepOutcome(hour=hour, step=step, status=StepStatus.NOT_RUN, ended_ms=hour_start_ms(at_hour),
                       reason=reason, makeup_of=makeup_of)


def collected(hours: int, *, missing: dict[int, dict[ProbeStep, StepOutcome | None]] | None = None,
              makeups: dict[int, StepOutcome] | None = None, now_hour: float | None = None) -> list[HourCollection]:
    """Hours 0..hours-1, every planned step ran unless `missing` says otherwise (None: unrecorded)."""
    now_hour = hours if now_hour is None else now_hour
    result = []
    for hour in range(hours):
        planned = plan_for_hour(hour, 24).steps
        recorded = {step: ran(hour, step) for step in planned}
        for step, outcome in (missing or {}).get(hour, {}).items():
            if outcome is None:
                del recorded[step]
            else:
                recorded[step] = outcome
        host = (makeups or {}).get(hour)
        result.append(HourCollection(hour=hour, planned=planned, recorded=recorded,
                                     makeups={host.step: host} if host else {}, over=hour + 1 <= now_hour))
    return result


def test_a_step_recorded_as_not_run_is_a_gap_with_its_reason_and_an_unrecorded_one_only_after_a_grace_hour():
    hours = collected(6, missing={
        2: {ProbeStep.PROMPT_SET: not_run(2, ProbeStep.PROMPT_SET, 2.9, "the hour ended before the step could start")},
        4: {ProbeStep.PROMPT_SET: None},  # its collector may still be at it
    }, now_hour=5.5)
    gaps = find_gaps(STATE, hours, now_s=5.5 * HOUR_S)
    assert gaps == [Gap(2, ProbeStep.PROMPT_SET, "the hour ended before the step could start")]
    # One hour after hour 4 ended, nobody can still be finishing it.
    later = find_gaps(STATE, hours, now_s=6.0 * HOUR_S)
    assert later[-1] == Gap(4, ProbeStep.PROMPT_SET, NOT_RECORDED)


def test_missed_steps_are_made_up_in_the_first_hours_without_a_probe_of_their_own_oldest_first_once_each():
    outage = {hour: {step: not_run(hour, step, 7.2) for step in plan_for_hour(hour, 24).steps} for hour in (3, 4)}
    plan = makeup_plan(STATE, collected(9, missing=outage))
    # Hour 7 plays the stress test (not a host); 8 and 9 are observation hours; identity checks are not made up.
    assert plan == {8: Gap(3, ProbeStep.PROMPT_SET, "no collector was running during the hour"),
                    9: Gap(4, ProbeStep.PROMPT_SET, "no collector was running during the hour")}


def test_a_gap_recorded_after_a_host_hour_began_is_left_to_a_later_host():
    # The collector came back in hour 8.5 and recorded hour 5's prompt set as not run then: hour 8 had
    # already begun without knowing of it, so hour 9 makes it up, whatever is asked when.
    late = {5: {ProbeStep.PROMPT_SET: not_run(5, ProbeStep.PROMPT_SET, 8.5)}}
    assert makeup_plan(STATE, collected(9, missing=late)) == {
        9: Gap(5, ProbeStep.PROMPT_SET, "no collector was running during the hour")}


def test_a_make_up_that_ran_closes_its_gap_and_one_that_could_not_run_leaves_it_open():
    missing = {2: {ProbeStep.PROMPT_SET: not_run(2, ProbeStep.PROMPT_SET, 2.5)},
               3: {ProbeStep.PROMPT_SET: not_run(3, ProbeStep.PROMPT_SET, 3.5)}}
    hours = collected(10, missing=missing, makeups={
        8: ran(8, ProbeStep.PROMPT_SET, makeup_of=2),
        9: not_run(9, ProbeStep.PROMPT_SET, 9.9, "the probe raised OSError: x", makeup_of=3)})
    gaps = find_gaps(STATE, hours, now_s=10 * HOUR_S)
    assert [(g.hour, g.made_up_in) for g in gaps] == [(2, 8), (3, None)]
    coverage = validator_coverage(STATE, hours, judged_hours=10, considered_hours=10, telemetry_hours=range(10),
                                  now_s=10 * HOUR_S)
    assert (coverage.due_steps, coverage.ran_in_hour) == (18, 16)
    assert coverage.open_gaps == [gaps[1]] and coverage.missed_anything
    assert "hour 3 prompt_set" in coverage.missed_text() and "hour 2" not in coverage.missed_text()


def test_coverage_counts_probe_steps_and_telemetry_hours_apart():
    hours = collected(4)
    coverage = validator_coverage(STATE, hours, judged_hours=4, considered_hours=4, telemetry_hours=[0, 1, 3, 7],
                                  now_s=4 * HOUR_S)
    assert (coverage.probe_coverage, coverage.telemetry_coverage, coverage.telemetry_missing) == (1.0, 0.75, [2])
    assert coverage.as_dict()["telemetry_hours_missing"] == [2]


POLICY = Policy()
NOTHING_MISSED = ValidatorCoverage(due_steps=48, ran_in_hour=48, gaps=[], judged_hours=24,
                                   telemetry_hours=list(range(24)))
PROMPTS_MISSED = ValidatorCoverage(due_steps=48, ran_in_hour=44, judged_hours=24, telemetry_hours=list(range(24)),
                                   gaps=[Gap(h, ProbeStep.PROMPT_SET, "no collector was running during the hour")
                                         for h in range(2, 6)])

TELEMETRY_MISSED = ValidatorCoverage(due_steps=48, ran_in_hour=48, gaps=[], judged_hours=24,
                                     telemetry_hours=list(range(12)))


@pytest.mark.parametrize(("statuses", "cov", "extensions", "validator", "decision", "rule"), [
    # No evidence for gate 2 because its prompt sets never ran: the validator's, not the target's.
    ("PNPPP", 1.0, 0, PROMPTS_MISSED, "INCONCLUSIVE", "inconclusive.validator"),
    ("PNPPP", 1.0, 1, PROMPTS_MISSED, "INCONCLUSIVE", "inconclusive.validator"),
    # The same missing evidence with nothing missed by the validator: the target's to answer for.
    ("PNPPP", 1.0, 0, NOTHING_MISSED, "EXTEND", "extend.critical_no_data"),
    ("PNPPP", 1.0, 1, NOTHING_MISSED, "REJECT", "reject.no_evidence_after_extension"),
    # What the target did still decides: a critical failure rejects, a forced review extends.
    ("FNPPP", 1.0, 0, PROMPTS_MISSED, "REJECT", "reject.critical_fail"),
    ("PNPRP", 1.0, 0, PROMPTS_MISSED, "EXTEND", "extend.secondary_gate"),
    # Enough evidence despite the gaps: decided, the gaps said in the reason.
    ("PPPPP", 1.0, 0, PROMPTS_MISSED, "ACCEPT", "accept.all_pass"),
    # Low coverage through the validator is not a reason to extend.
    ("PPPPP", 0.5, 0, TELEMETRY_MISSED, "INCONCLUSIVE", "inconclusive.validator"),
])
def test_evidence_the_validator_missed_is_never_charged_to_the_target(statuses, cov, extensions, validator, decision,
                                                                       rule):
    result = decide(gates(statuses), cov, POLICY, extension_count=extensions, validator=validator)
    assert (result.decision, result.rule) == (decision, rule), result.reason
    if validator.missed_anything and decision != "REJECT":
        assert "validator" in result.reason
    if decision == "INCONCLUSIVE":
        assert result.extend_hours == 0 and any("validator" in item for item in result.action_items)


def test_a_campaign_stopped_for_its_validators_failures_is_inconclusive_and_an_early_stop_still_rejects():
    failed = ValidatorCoverage(due_steps=10, ran_in_hour=4, gaps=[], judged_hours=5, telemetry_hours=[0, 1],
                               failed_reason="3 runs of the campaign failed in a row")
    result = decide(gates("PNPPP"), 0.4, POLICY, validator=failed)
    assert (result.decision, result.rule) == ("INCONCLUSIVE", "inconclusive.validator_failed")
    assert "3 runs of the campaign failed in a row" in result.reason
    stop = EarlyStop(gate=1, rule="early_stop.missing_pack", first_seen="2026-11-20T01:00:00+00:00", hour=1,
                     reason="missing pack")
    assert decide(gates("FNPPP"), 0.4, POLICY, stopped=stop, validator=failed).decision == "REJECT"


def test_the_state_records_the_validator_failure_the_coverage_reports():
    state = STATE.model_copy(update={"validator_failure": ValidatorFailure(reason="runs kept failing", at_ms=5)})
    coverage = validator_coverage(state, collected(2), judged_hours=2, considered_hours=2, telemetry_hours=[0, 1],
                                  now_s=2 * HOUR_S)
    assert coverage.failed_reason == "runs kept failing" and coverage.missed_anything
