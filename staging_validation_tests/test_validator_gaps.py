"""The validator's gaps as plain functions: due steps, gaps, make-up, coverage, validator failure."""

from __future__ import annotations

import pandas as pd
import pytest

from staging_validation.validator_gaps import (
    NOT_RECORDED,
    Gap,
    Step,
    coverage_from_dict,
    due_steps,
    find_gaps,
    makeup_step,
    recorded_steps,
    validator_coverage,
    validator_failure,
)
from staging_validation_tests.acceptance.acceptance_tables import identity_rows, records


def every_step(hours: range, planned: int = 24) -> dict[int, set[str]]:
    return {hour: {step.value for step in due_steps(hour, planned)} for hour in hours}


@pytest.mark.parametrize(("hour", "steps"), [
    (0, [Step.IDENTITY, Step.DEPLOY]), (1, [Step.IDENTITY, Step.SMOKE_LOOP]), (4, [Step.IDENTITY, Step.PROMPT_SET]),
    (7, [Step.IDENTITY, Step.STRESS]), (8, [Step.IDENTITY]), (30, [Step.IDENTITY]),
])
def test_each_hour_is_due_its_identity_check_and_its_phases_step(hour, steps):
    assert due_steps(hour, 24) == steps


def test_steps_are_recorded_in_the_hour_they_were_scheduled_not_the_partition_they_were_stored_in():
    # A run of hour 2 that started late scheduled its rows in hour 3.
    late = records([{"probe": "prompt_set", "hour": 3}] + identity_rows(hour=3))
    late["hour"] = 2
    assert recorded_steps(late) == {3: {"prompt_set", "identity"}}
    assert recorded_steps(records([])) == {}


def test_a_step_not_recorded_in_its_hour_is_a_gap_and_an_unsettled_hour_waits():
    recorded = every_step(range(5))
    del recorded[3]  # hour 3's run never ran
    recorded[4].discard("prompt_set")
    gaps = find_gaps(24, 5, recorded, unsettled=[4], causes={3: "its probe run failed"})
    assert [(g.hour, g.step) for g in gaps] == [(3, Step.IDENTITY), (3, Step.PROMPT_SET)]
    assert {g.cause for g in gaps} == {"its probe run failed"}
    assert [(g.hour, g.step, g.cause) for g in find_gaps(24, 5, recorded)][-1] == (4, Step.PROMPT_SET, NOT_RECORDED)


def test_a_missed_prompt_set_is_made_up_by_the_first_observation_hour_and_only_once():
    recorded = every_step(range(10))
    del recorded[2], recorded[3]  # hours 2 and 3 missed (daemon down)
    gaps = find_gaps(24, 10, recorded)
    assert makeup_step(8, 24, gaps) is Step.PROMPT_SET  # the oldest open gap first
    assert makeup_step(7, 24, gaps) is None  # the stress hour plays its own step
    recorded[8].add("prompt_set")  # hour 8 made up hour 2
    gaps = find_gaps(24, 10, recorded)
    assert [(g.hour, g.step, g.made_up_in) for g in gaps if g.step is Step.PROMPT_SET] == [
        (2, Step.PROMPT_SET, 8), (3, Step.PROMPT_SET, None)]
    assert makeup_step(9, 24, gaps) is Step.PROMPT_SET
    # The identity check is not made up: the next hour's runs anyway.
    assert makeup_step(9, 24, [Gap(5, Step.IDENTITY, NOT_RECORDED)]) is None


def test_probe_coverage_is_due_steps_run_in_their_hour_apart_from_telemetry_coverage():
    # The campaign: every probe run started after its hour (so probed nothing), while the telemetry
    # capture got every hour. Main reported "coverage 100 %".
    coverage = validator_coverage(planned_hours=3, judged_hours=3, hours_ended=3, records=records([]),
                                  telemetry_hours=[0, 1, 2])
    assert coverage.probe_coverage == 0 and coverage.telemetry_coverage == 1
    assert coverage.due_steps == 6 and len(coverage.open_gaps) == 6 and coverage.missed_anything
    assert "6 probe step(s) not run and not made up" in coverage.missed_text()
    assert coverage_from_dict(coverage.as_dict()) == coverage


def test_a_campaign_that_collected_everything_missed_nothing():
    rows = [{"probe": step.value, "hour": hour} for hour in range(3) for step in due_steps(hour, 3)]
    coverage = validator_coverage(3, 3, 3, records(rows), telemetry_hours=[0, 1, 2])
    assert coverage.probe_coverage == 1 and not coverage.missed_anything and coverage.missed_text() == ""


def test_hours_not_ingested_are_the_validators_miss():
    rows = [{"probe": step.value, "hour": hour} for hour in range(3) for step in due_steps(hour, 3)]
    coverage = validator_coverage(3, 3, 3, records(rows), telemetry_hours=[0])
    assert coverage.telemetry_missing == [1, 2] and coverage.missed_anything
    assert "telemetry of 2 hour(s) not ingested (hours 1, 2)" in coverage.missed_text()


def test_three_failures_in_a_row_are_a_validator_failure_and_a_retry_that_succeeds_clears_its_key():
    assert validator_failure([("a", True), ("b", True)]) is None
    reason = validator_failure([("ok", False), ("a", True), ("b", True), ("c", True)])
    assert reason and reason.startswith("validator_failed: 3 runs") and "(last: a, b, c)" in reason
    assert validator_failure([("a", True), ("b", True), ("c", True), ("a", False)]) is None
    assert validator_failure([("a", True), ("b", True), ("ok", False), ("c", True)]) is None


def test_no_records_is_no_steps():
    assert recorded_steps(pd.DataFrame({"probe": [], "campaign_s": []})) == {}
