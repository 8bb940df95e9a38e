"""What the validator itself failed to collect: its gaps, their make-up, its coverage (no Dagster import).

A *gap* is a planned probe step of an hour that the validator did not run in that hour: recorded as not
run (the hour ended before it could start, the probe raised, no collector was running), or still
unrecorded once the hour is over. Gaps are the validator's, never the target's: they are alerted
(`monitor.validator_gap`), made up where the plan allows, and the decision never charges evidence they
cost to the target.

Make-up: the gates need sample counts, not a particular hour, so a missed deploy verification, smoke
loop, prompt set or stress step is played again in a later hour that plans no probe of its own
(observation or extension), one make-up per hour, oldest gap first, one attempt per gap. Which hour
makes up which gap depends only on the not-run records and when they were written, never on how a make-up
went, so the collector (at the hour's start), the clock and the verdict all agree on it, at any time.
The per-hour identity check is not made up: the next hour's runs anyway.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from staging_validation.collection.recorded_steps import HourCollection, StepStatus, collection_by_hour
from staging_validation.lifecycle import CampaignState
from staging_validation.plan import Phase, ProbeStep, phase_for_hour

GAP_ALERT_RULE = "monitor.validator_gap"
# Alerts about the validator itself (a gap, a run that failed): reported apart from the target's incidents.
VALIDATOR_ALERT_PREFIX = "monitor.validator_"
NOT_RECORDED = "not recorded in its hour: no collector finished it"
MAKEUP_STEPS = (ProbeStep.DEPLOY_VERIFICATION, ProbeStep.SMOKE_LOOP, ProbeStep.PROMPT_SET, ProbeStep.STRESS)
MAKEUP_HOST_PHASES = (Phase.OBSERVATION, Phase.EXTENSION)
# An unrecorded step is only called a gap one hour after its hour ended: until then its collector may
# still be finishing it (a stress step may overrun its hour), and a collector started again records the
# steps it missed as not run, with the reason, at once.
UNRECORDED_GRACE_HOURS = 1
# Runs of a campaign that fail one after the other (each after its retries) before the campaign is stopped
# as validator_failed: one may be bad luck, two a coincidence; three mean the validator cannot serve it.
CONSECUTIVE_FAILURES_TO_STOP = 3
VALIDATOR_FAILED_RULE = "monitor.validator_failed"


@dataclasses.dataclass(frozen=True)
class Gap:
    hour: int
    step: ProbeStep
    cause: str
    made_up_in: int | None = None  # the later hour whose make-up of it ran

    @property
    def key(self) -> str:
        return f"{self.step.value}@{self.hour}"

    def describe(self) -> str:
        made_up = f", made up in hour {self.made_up_in}" if self.made_up_in is not None else ", not made up"
        return f"hour {self.hour} {self.step.value}: {self.cause}{made_up}"


def _step_order(step: ProbeStep) -> int:
    return list(ProbeStep).index(step)


def _recorded_not_run(hours: Iterable[HourCollection]) -> list[tuple[Gap, int]]:
    """(gap, when its not-run record was written) of every planned step recorded as not run, oldest first."""
    found = [(Gap(h.hour, step, outcome.reason), outcome.ended_ms)
             for h in hours for step, outcome in h.recorded.items() if outcome.status is StepStatus.NOT_RUN]
    return sorted(found, key=lambda item: (item[0].hour, _step_order(item[0].step)))


def makeup_plan(state: CampaignState, hours: Iterable[HourCollection]) -> dict[int, Gap]:
    """Host hour → the gap it plays again. A host takes the oldest gap of an earlier hour that was recorded
    as not run before the host began and that no earlier host took."""
    candidates = [(gap, ended_ms) for gap, ended_ms in _recorded_not_run(hours) if gap.step in MAKEUP_STEPS]
    plan: dict[int, Gap] = {}
    taken: set[str] = set()
    for host in range(state.total_hours):
        if phase_for_hour(host, state.planned_hours) not in MAKEUP_HOST_PHASES:
            continue
        host_start_ms = state.timing.hour_start_s(host) * 1000
        gap = next((g for g, ended_ms in candidates
                    if g.hour < host and ended_ms <= host_start_ms and g.key not in taken), None)
        if gap is not None:
            plan[host] = gap
            taken.add(gap.key)
    return plan


def makeup_for_hour(data_root: str | Path, state: CampaignState, hour: int) -> Gap | None:
    """The missed step of an earlier hour that `hour` plays again (the same answer whenever it is asked)."""
    if phase_for_hour(hour, state.planned_hours) not in MAKEUP_HOST_PHASES:
        return None  # no need to read the records
    hours = collection_by_hour(data_root, state, now_s=state.timing.hour_start_s(hour))
    return makeup_plan(state, hours).get(hour)


def find_gaps(state: CampaignState, hours: list[HourCollection], now_s: float,
              unrecorded_grace_hours: int = UNRECORDED_GRACE_HOURS) -> list[Gap]:
    """Every gap among `hours` (from `collection_by_hour`), each with the hour whose make-up of it ran."""
    made_up = {f"{step.value}@{outcome.makeup_of}": h.hour for h in hours for step, outcome in h.makeups.items()
               if outcome.status is StepStatus.RAN}
    gaps = [gap for gap, _ in _recorded_not_run(hours)]
    for h in hours:
        settled = state.timing.hour_start_s(h.hour + 1 + unrecorded_grace_hours) <= now_s
        if settled:
            gaps += [Gap(h.hour, step, NOT_RECORDED) for step in h.unrecorded]
    gaps.sort(key=lambda g: (g.hour, _step_order(g.step)))
    return [dataclasses.replace(g, made_up_in=made_up.get(g.key)) for g in gaps]


def gap_alert_message(gap: Gap) -> str:
    then = ("it is played again in a later hour that plans no probe of its own" if gap.step in MAKEUP_STEPS
            else "the next hour's identity check runs anyway")
    return (f"The validator did not run hour {gap.hour}'s {gap.step.value} step: {gap.cause}. A gap of the "
            f"validator's, not evidence against the target; {then}.")


@dataclasses.dataclass(frozen=True)
class ValidatorCoverage:
    """What the validator collected of what a verdict round needed, apart from what the target did."""

    due_steps: int  # planned probe steps of the judged hours that have ended
    ran_in_hour: int  # of those, run in their own hour
    gaps: list[Gap]
    judged_hours: int
    telemetry_hours: list[int]  # judged hours whose telemetry was ingested (stored, even if empty)
    failed_reason: str | None = None  # the campaign was stopped because its own runs kept failing

    @property
    def probe_coverage(self) -> float:
        return self.ran_in_hour / self.due_steps if self.due_steps else 1.0

    @property
    def telemetry_coverage(self) -> float:
        return len(self.telemetry_hours) / self.judged_hours if self.judged_hours else 1.0

    @property
    def telemetry_missing(self) -> list[int]:
        return sorted(set(range(self.judged_hours)) - set(self.telemetry_hours))

    @property
    def open_gaps(self) -> list[Gap]:
        return [g for g in self.gaps if g.made_up_in is None]

    @property
    def missed_anything(self) -> bool:
        """Evidence is missing through the validator: a gap not made up, an hour not ingested, a failure."""
        return bool(self.open_gaps or self.telemetry_missing or self.failed_reason)

    def missed_text(self) -> str:
        """One sentence naming what the validator missed, for the decision's reason and the report."""
        parts = []
        if self.failed_reason:
            parts.append(self.failed_reason)
        if self.open_gaps:
            shown = "; ".join(g.describe() for g in self.open_gaps[:8])
            parts.append(f"{len(self.open_gaps)} probe step(s) not run and not made up ({shown}"
                         + ("; …" if len(self.open_gaps) > 8 else "") + ")")
        if self.telemetry_missing:
            shown = ", ".join(str(h) for h in self.telemetry_missing[:12])
            parts.append(f"telemetry of {len(self.telemetry_missing)} hour(s) not ingested (hours {shown}"
                         + (", …" if len(self.telemetry_missing) > 12 else "") + ")")
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return {"probe_coverage": round(self.probe_coverage, 4), "due_steps": self.due_steps,
                "ran_in_hour": self.ran_in_hour,
                "telemetry_coverage": round(self.telemetry_coverage, 4), "judged_hours": self.judged_hours,
                "telemetry_hours_missing": self.telemetry_missing,
                "gaps": [{"hour": g.hour, "step": g.step.value, "cause": g.cause, "made_up_in": g.made_up_in}
                         for g in self.gaps],
                "failed_reason": self.failed_reason}


def validator_coverage(state: CampaignState, hours: list[HourCollection], judged_hours: int, considered_hours: int,
                       telemetry_hours: Iterable[int], now_s: float) -> ValidatorCoverage:
    """The validator's coverage of a round over hours 0..judged_hours-1; probe steps are counted in the
    `considered_hours` (those that have ended; an early stop's hour was cut short on purpose)."""
    considered = [h for h in hours if h.hour < min(considered_hours, judged_hours)]
    gaps = find_gaps(state, considered, now_s, unrecorded_grace_hours=0)
    due = sum(len(h.planned) for h in considered)
    return ValidatorCoverage(
        due_steps=due, ran_in_hour=sum(len(h.ran) for h in considered), gaps=gaps, judged_hours=judged_hours,
        telemetry_hours=sorted({h for h in telemetry_hours if 0 <= h < judged_hours}),
        failed_reason=state.validator_failure.reason if state.validator_failure else None)


def consecutive_failures(outcomes: Iterable[tuple[str, bool]]) -> list[str]:
    """The keys of the trailing run of failures among (key, failed), in the order the runs ended; a key is
    judged by its last run (a retry that succeeded clears its run's failure)."""
    last: dict[str, bool] = {}
    for key, failed in outcomes:
        last.pop(key, None)  # re-inserted: the order is that of each key's last run
        last[key] = failed
    trailing: list[str] = []
    for key, failed in reversed(last.items()):
        if not failed:
            break
        trailing.append(key)
    return trailing[::-1]
