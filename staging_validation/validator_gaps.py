"""What the validator itself failed to collect: its gaps, their make-up, its coverage (no Dagster import).

A *gap* is a planned probe step that was due in an hour that has ended and was not recorded in that
hour: the daemon was down, the run queued past the hour, or the run crashed. Gaps are the validator's
fault, never the target's: they are named, alerted (`monitor.validator_gap`) and, where the plan allows,
made up in a later hour; the decision never charges evidence they cost to the target.

Make-up: the gates need sample counts, not a particular hour, so a missed deploy verification, smoke
loop, prompt set or stress hour is played again in a later hour that plans no probe step of its own
(observation or extension), one make-up per hour, oldest gap first. The per-hour identity check is not
made up: the next hour's identity check runs anyway.

Everything here is a pure function of the plan, the campaign clock and what was recorded, so the clock,
the monitor, the verdict assets and the `verdict` CLI all see the same gaps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from staging_validation.layout import HOURLY_ASSET_PROBE_RECORDS, CampaignLayout
from staging_validation.lifecycle import CampaignState
from staging_validation.plan import Phase, phase_for_hour
from staging_validation.schemas.probe_records import RECORD_SCHEMA


class Step(StrEnum):
    """A planned probe step; the value is the `probe` column of the rows it records."""

    IDENTITY = "identity"
    DEPLOY = "deploy"
    SMOKE_LOOP = "smoke"
    PROMPT_SET = "prompt_set"
    STRESS = "stress"


PHASE_STEP = {Phase.DEPLOY: Step.DEPLOY, Phase.SMOKE_LOOP: Step.SMOKE_LOOP, Phase.PROMPT_SET: Step.PROMPT_SET,
              Phase.STRESS: Step.STRESS}
STEP_PHASE = {step: phase for phase, step in PHASE_STEP.items()}
MAKEUP_HOST_PHASES = (Phase.OBSERVATION, Phase.EXTENSION)
GAP_ALERT_RULE = "monitor.validator_gap"
# Runs of a campaign that fail one after the other before the campaign is stopped as validator_failed:
# one failure is retried by Dagster, a second may be bad luck, a third means the validator cannot serve it.
CONSECUTIVE_FAILURES_TO_STOP = 3
NOT_RECORDED = "not recorded in its hour"


def due_steps(hour: int, planned_hours: int) -> list[Step]:
    """The probe steps the plan runs in `hour`: the identity check, then the phase's own step if any."""
    own = PHASE_STEP.get(phase_for_hour(hour, planned_hours))
    return [Step.IDENTITY] + ([own] if own else [])


@dataclasses.dataclass(frozen=True)
class Gap:
    hour: int
    step: Step
    cause: str  # why it did not run, as far as the caller knows (else NOT_RECORDED)
    made_up_in: int | None = None  # the later hour that played it again, if any

    @property
    def key(self) -> str:
        return f"{self.step.value}@{self.hour}"

    def describe(self) -> str:
        made_up = f", made up in hour {self.made_up_in}" if self.made_up_in is not None else ", not made up"
        return f"hour {self.hour} {self.step.value}: {self.cause}{made_up}"


def recorded_steps(records: pd.DataFrame) -> dict[int, set[str]]:
    """Per campaign hour, the probe steps with at least one row scheduled inside that hour (by the row's
    `campaign_s`, not the partition it was stored in: a run that started late records nothing in its hour)."""
    if records.empty:
        return {}
    hours = (records["campaign_s"] // 3600).astype("int64")
    return {int(hour): set(group) for hour, group in records["probe"].groupby(hours)}


def ended_hours(campaign_seconds_now: float, total_hours: int) -> int:
    """How many of the campaign's hours 0..total_hours-1 have ended."""
    return max(0, min(total_hours, math.floor(campaign_seconds_now / 3600)))


def find_gaps(planned_hours: int, hours_ended: int, recorded: Mapping[int, Iterable[str]],
              unsettled: Iterable[int] = (), causes: Mapping[int, str] | None = None) -> list[Gap]:
    """Every due step of hours 0..hours_ended-1 that was not recorded in its hour, with its make-up.

    `unsettled` hours have a probe run still under way (it may still store rows from inside the hour):
    they are not judged yet. `causes` says per hour why its run did not record (from the run records)."""
    pending = set(unsettled)
    missed = []
    for hour in range(hours_ended):
        if hour in pending:
            continue
        seen = set(recorded.get(hour, ()))
        missed += [Gap(hour, step, (causes or {}).get(hour, NOT_RECORDED))
                   for step in due_steps(hour, planned_hours) if step.value not in seen]
    return _with_makeup(missed, planned_hours, recorded)


def _makeup_recordings(planned_hours: int, recorded: Mapping[int, Iterable[str]]) -> list[tuple[int, Step]]:
    """(hour, step) of every step recorded in an hour whose plan does not include it: a make-up."""
    found = []
    for hour in sorted(recorded):
        planned = set(due_steps(hour, planned_hours))
        found += [(hour, Step(step)) for step in sorted(set(recorded[hour]))
                  if step in STEP_PHASE and Step(step) not in planned]
    return found


def _with_makeup(missed: list[Gap], planned_hours: int, recorded: Mapping[int, Iterable[str]]) -> list[Gap]:
    available = _makeup_recordings(planned_hours, recorded)
    result = []
    for gap in missed:
        host = next(((hour, step) for hour, step in available if step is gap.step and hour > gap.hour), None)
        if host is not None:
            available.remove(host)
        result.append(dataclasses.replace(gap, made_up_in=host[0]) if host else gap)
    return result


def makeup_step(hour: int, planned_hours: int, gaps: Iterable[Gap]) -> Step | None:
    """The step `hour` plays in addition to its plan: the oldest gap of an earlier hour not yet made up,
    if `hour` plans no probe step of its own. The hook the probe run of an hour calls at its start."""
    if phase_for_hour(hour, planned_hours) not in MAKEUP_HOST_PHASES:
        return None
    open_gaps = sorted((g for g in gaps if g.made_up_in is None and g.hour < hour and g.step in STEP_PHASE),
                       key=lambda g: (g.hour, g.step.value))
    return open_gaps[0].step if open_gaps else None


def makeup_for_hour(data_root: str | Path, state: CampaignState, hour: int) -> Step | None:
    """The missed step of an earlier hour that `hour`'s probe run plays as well, from what the earlier hours
    stored (the same answer however often the hour is re-run)."""
    layout = CampaignLayout.of(data_root, state.campaign)
    frames = []
    for stored in layout.stored_hours(HOURLY_ASSET_PROBE_RECORDS):
        if stored < hour:
            with layout.hour_file(HOURLY_ASSET_PROBE_RECORDS, stored).open("rb") as handle:
                frames.append(pq.read_table(handle, schema=RECORD_SCHEMA, columns=["probe", "campaign_s"]).to_pandas())
    earlier = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"probe": [], "campaign_s": []})
    return makeup_step(hour, state.planned_hours, find_gaps(state.planned_hours, hour, recorded_steps(earlier)))


def makeup_phase(step: Step) -> Phase:
    return STEP_PHASE[step]


@dataclasses.dataclass
class ValidatorCoverage:
    """What the validator collected of what a verdict round needed, apart from what the target did."""

    due_steps: int  # probe steps due in the judged, ended hours
    ran_in_hour: int  # of those, recorded in their own hour
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
            parts.append(f"{len(self.open_gaps)} probe step(s) not run and not made up ("
                         + "; ".join(g.describe() for g in self.open_gaps[:8])
                         + ("; …" if len(self.open_gaps) > 8 else "") + ")")
        if self.telemetry_missing:
            parts.append(f"telemetry of {len(self.telemetry_missing)} hour(s) not ingested (hours "
                         + ", ".join(str(h) for h in self.telemetry_missing[:12])
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


def coverage_from_dict(payload: dict) -> ValidatorCoverage:
    """The inverse of `ValidatorCoverage.as_dict` (the decision payload carries it to the report)."""
    telemetry_missing = set(payload["telemetry_hours_missing"])
    judged = payload["judged_hours"]
    return ValidatorCoverage(
        due_steps=payload["due_steps"], ran_in_hour=payload["ran_in_hour"],
        gaps=[Gap(g["hour"], Step(g["step"]), g["cause"], g["made_up_in"]) for g in payload["gaps"]],
        judged_hours=judged, telemetry_hours=[h for h in range(judged) if h not in telemetry_missing],
        failed_reason=payload["failed_reason"])


def validator_coverage(planned_hours: int, judged_hours: int, hours_ended: int, records: pd.DataFrame,
                       telemetry_hours: Iterable[int], failed_reason: str | None = None,
                       causes: Mapping[int, str] | None = None) -> ValidatorCoverage:
    """The validator's coverage of a verdict round over hours 0..judged_hours-1 (those that have ended);
    `causes` says per hour why its probe run did not record (the clock's gap alerts)."""
    judged_ended = min(judged_hours, hours_ended)
    recorded = recorded_steps(records)
    gaps = find_gaps(planned_hours, judged_ended, recorded, causes=causes)
    due = sum(len(due_steps(hour, planned_hours)) for hour in range(judged_ended))
    return ValidatorCoverage(due_steps=due, ran_in_hour=due - len(gaps), gaps=gaps, judged_hours=judged_hours,
                             telemetry_hours=sorted({h for h in telemetry_hours if 0 <= h < judged_hours}),
                             failed_reason=failed_reason)


def consecutive_failures(outcomes: Iterable[tuple[str, bool]]) -> list[str]:
    """The keys of the trailing run of failures among (key, failed) in the order the runs ended, each key
    judged by its last run (a retry that succeeded clears its key's failure)."""
    last: dict[str, bool] = {}
    for key, failed in outcomes:
        last.pop(key, None)
        last[key] = failed
    trailing = []
    for key, failed in reversed(list(last.items())):
        if not failed:
            break
        trailing.append(key)
    return list(reversed(trailing))


def validator_failure(outcomes: Iterable[tuple[str, bool]],
                      threshold: int = CONSECUTIVE_FAILURES_TO_STOP) -> str | None:
    """The reason to stop a campaign whose own runs keep failing, or None."""
    failing = consecutive_failures(outcomes)
    if len(failing) < threshold:
        return None
    return (f"validator_failed: {len(failing)} runs of the campaign failed in a row, retries included "
            f"(last: {', '.join(failing[-threshold:])}); the validator cannot collect this campaign's evidence, "
            "so it is stopped instead of extended")
