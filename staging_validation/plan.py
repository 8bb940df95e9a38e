"""The runbook's 24-hour plan as data: what each campaign hour does (no Dagster import)."""

from __future__ import annotations

import dataclasses
import math
from enum import StrEnum

SNAPSHOT_EVERY_CAMPAIGN_S = 30 * 60  # metrics-snapshot.sh every 30 minutes
STRESS_MULTIPLIER = 2.0  # stress-test.sh: "double the load for 1 hour"


class Phase(StrEnum):
    DEPLOY = "deploy"  # hour 0: deploy verification and the first smoke tests
    SMOKE_LOOP = "smoke-loop"  # hour 1: the four smoke tests every 5 minutes
    PROMPT_SET = "prompt-set"  # hours 2-6: the labelled prompt set
    STRESS = "stress"  # hour 7: twice the baseline load
    OBSERVATION = "observation"  # hours 8-23: passive watch with hourly reports
    EXTENSION = "extension"  # hours added by an EXTEND decision: passive watch


class ProbeStep(StrEnum):
    """One probe of an hour's plan; the collector starts an hour's steps together and records each, once."""

    IDENTITY_WATCH = "identity"  # every hour: two fresh identities must not merge (caught in its hour)
    DEPLOY_VERIFICATION = "deploy"
    SMOKE_LOOP = "smoke_loop"
    PROMPT_SET = "prompt_set"
    STRESS = "stress"


_PHASE_STEP = {Phase.DEPLOY: ProbeStep.DEPLOY_VERIFICATION, Phase.SMOKE_LOOP: ProbeStep.SMOKE_LOOP,
               Phase.PROMPT_SET: ProbeStep.PROMPT_SET, Phase.STRESS: ProbeStep.STRESS}


@dataclasses.dataclass(frozen=True)
class HourPlan:
    hour: int
    phase: Phase
    runs_smoke_tests: bool

    @property
    def steps(self) -> tuple[ProbeStep, ...]:
        """The hour's probe steps: the identity watch, and the phase's probe if it has one."""
        phase_step = _PHASE_STEP.get(self.phase)
        return (ProbeStep.IDENTITY_WATCH,) if phase_step is None else (ProbeStep.IDENTITY_WATCH, phase_step)


def phase_for_hour(hour: int, planned_hours: int = 24) -> Phase:
    if hour < 0:
        raise ValueError(f"hour {hour}: campaign hours start at 0")
    if hour >= planned_hours:
        return Phase.EXTENSION
    if hour == 0:
        return Phase.DEPLOY
    if hour == 1:
        return Phase.SMOKE_LOOP
    if hour <= 6:
        return Phase.PROMPT_SET
    if hour == 7:
        return Phase.STRESS
    return Phase.OBSERVATION


def plan_for_hour(hour: int, planned_hours: int = 24) -> HourPlan:
    phase = phase_for_hour(hour, planned_hours)
    return HourPlan(hour=hour, phase=phase, runs_smoke_tests=phase in (Phase.DEPLOY, Phase.SMOKE_LOOP))


# The shortest campaign hour the validator can serve: an hour's steps all start at its start, so its
# longest step (the prompt set beside the identity check) must fit inside it. Measured with
# benchmarks/bench_hour_floor.py on this project's 2-CPU machine; 3 s leaves head-room for a busy one.
MIN_HOUR_SECONDS = 3.0
RUNBOOK_HOUR_SECONDS = 3600.0  # a real hour: a longer campaign hour would stretch the runbook, not rehearse it


def hour_seconds_problem(hour_seconds: float) -> str | None:
    """Why a campaign cannot run with hours this long, or None (the launch and `rehearse` refuse it)."""
    if not math.isfinite(hour_seconds) or hour_seconds < MIN_HOUR_SECONDS:
        return (f"{hour_seconds:g} s is shorter than the validator can serve: the floor is {MIN_HOUR_SECONDS:g} s "
                "(an hour's longest probe step, measured by benchmarks/bench_hour_floor.py)")
    if hour_seconds > RUNBOOK_HOUR_SECONDS:
        return f"{hour_seconds:g} s is longer than the runbook's real hour ({RUNBOOK_HOUR_SECONDS:g} s)"
    return None
