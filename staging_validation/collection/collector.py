"""The collector: runs a campaign's planned probe steps on the campaign clock and records each one as it
ends (no Dagster import).

One collector serves one campaign for a whole verdict round, in one process. It starts the campaign
clock when it is ready (hour 0 begins then); each hour's steps start together at the hour's start from a
timer of their own (an hour whose previous step overran still starts on time), so when a probe runs
depends on the campaign clock only, never on how fast a run is launched. A step that starts late (a
collector started again mid-hour) runs late and its rows keep their true send times; a step whose hour
is over before it could start is recorded as not run, with the reason, and is never run after its hour.
A collector started again after a crash skips what is recorded and records the steps of the hours it
missed as not run.

Hour 0's deploy verification is preceded by the launch config's deploy steps (`deploy.migrate_command`,
then `deploy.deploy_command`; `probes/deploy_steps.py`), each run once per campaign: a failing step stops
the campaign (`early_stop.deploy_step_failed`, naming the step; policy switch
`early_stop.deploy_step_failed`) and the smoke tests are not run against what did not deploy. A step the
validator itself interrupted (killed while it ran) is never run again: the campaign is then the
validator's failure (`validator_failed`), nothing is said about the target.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from staging_validation.campaign_target import campaign_secrets, target_client
from staging_validation.collection.recorded_steps import StepOutcome, StepStatus, hour_outcomes, record_step
from staging_validation.collection.validator_gaps import makeup_for_hour
from staging_validation.lifecycle import (
    CampaignState,
    CampaignStatus,
    EarlyStop,
    fail_validator,
    load_campaign_state,
    mark_running,
    stop_early,
)
from staging_validation.plan import STRESS_MULTIPLIER, ProbeStep, plan_for_hour
from staging_validation.probes.deploy_steps import DeployStepRun, run_deploy_steps
from staging_validation.probes.identity import identity_check
from staging_validation.probes.prompt_set import prompt_set
from staging_validation.probes.result import ProbeResult
from staging_validation.probes.smoke import deploy_verification, smoke_loop
from staging_validation.probes.stress import stress
from staging_validation.target.client import TargetClient

STATE_POLL_S = 1.0  # how often a waiting collector looks for an early stop


@dataclasses.dataclass
class CollectionSummary:
    ran: int = 0
    not_run: int = 0
    already_recorded: int = 0


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _run_step(client: TargetClient, state: CampaignState, hour: int, step: ProbeStep) -> ProbeResult:
    timing = state.timing
    if step is ProbeStep.IDENTITY_WATCH:
        # Every hour starts with a cheap identity check, so an accidental merge is caught in the hour it
        # begins (the runbook's "REJECT IMMEDIATELY"), not only by the final identity test at hour 24.
        return await identity_check(client, timing)
    if step is ProbeStep.DEPLOY_VERIFICATION:
        return await deploy_verification(client, timing)
    if step is ProbeStep.SMOKE_LOOP:
        return await smoke_loop(client, timing, hour)
    if step is ProbeStep.PROMPT_SET:
        return await prompt_set(client, timing, hour)
    rate = state.settings.stress_baseline_rps * STRESS_MULTIPLIER
    return await stress(client, timing, hour, rate)


def stop_after_failed_deploy(data_root: str | Path, campaign: str, deploy: ProbeResult, hour: int) -> None:
    """The runbook: "Tests should pass 4/4. If not, something is broken. Stop." (`hour`: 0, or the hour
    that made up a missed deploy verification)"""
    failed = [r for r in deploy.records if r.passed is False]
    first = min((r.time for r in failed), default=pd.Timestamp.now(tz="UTC"))
    stop_early(data_root, campaign, EarlyStop(
        gate=0, rule="early_stop.deploy_verification_failed", first_seen=str(first), hour=hour,
        reason="deploy verification failed: " + "; ".join(deploy.failures),
        evidence=[{"time": str(r.time), "row": f"{r.case} {r.route} -> {r.outcome}: {r.error}"} for r in failed[:5]],
    ))


def stop_after_failed_deploy_step(data_root: str | Path, campaign: str, failed: DeployStepRun, hour: int) -> None:
    """The runbook's hour 0: migrate, deploy, then the smoke tests; a step that failed is a failed deployment."""
    first = pd.Timestamp(failed.started_at_ms + int(failed.duration_s * 1000), unit="ms", tz="UTC")
    stop_early(data_root, campaign, EarlyStop(
        gate=0, rule="early_stop.deploy_step_failed", first_seen=first.isoformat(), hour=hour,
        reason=f"{failed.describe()}; the smoke tests were not run",
        evidence=[{"time": first.isoformat(), "row": f"{failed.step}: {shlex.join(failed.argv)} -> "
                   f"{failed.error} after {failed.duration_s:g} s"}],
    ))


class DeployStepInterrupted(Exception):
    """A deploy step the validator started before and never saw end: it is not run again."""


def _collecting(state: CampaignState) -> bool:
    """Its clock runs and its hours are collected (not registered, stopped or ended)."""
    return state.status in (CampaignStatus.RUNNING, CampaignStatus.EXTENDED)


class Collector:
    """`log` receives one line per recorded step."""

    def __init__(self, data_root: str | Path, campaign: str, log: Callable[[str], None] = lambda line: None,
                 stop_on_failed_deploy_step: bool = True):
        self.data_root = data_root
        self.campaign = campaign
        self.log = log
        # The policy's `early_stop.deploy_step_failed` (the policy is read above this layer).
        self.stop_on_failed_deploy_step = stop_on_failed_deploy_step
        self.summary = CollectionSummary()

    def _state(self) -> CampaignState:
        return load_campaign_state(self.data_root, self.campaign)

    def _record(self, outcome: StepOutcome, result: ProbeResult | None = None) -> None:
        if record_step(self.data_root, self.campaign, outcome, result.records if result else []):
            if outcome.status is StepStatus.RAN:
                self.summary.ran += 1
            else:
                self.summary.not_run += 1
            detail = f"{len(result.records)} rows, passed={outcome.passed}" if result else outcome.reason
            self.log(f"hour {outcome.hour:02d} {outcome.step}: {outcome.status} ({detail})")
        else:
            self.summary.already_recorded += 1

    def _not_run(self, hour: int, step: ProbeStep, reason: str, makeup_of: int | None = None) -> None:
        self._record(StepOutcome(hour=hour, step=step, status=StepStatus.NOT_RUN, ended_ms=_now_ms(), reason=reason,
                                 makeup_of=makeup_of))

    async def _deploy_then_verify(self, client: TargetClient,
                                  state: CampaignState) -> tuple[ProbeResult, DeployStepRun | None]:
        """The deploy steps (run once per campaign, read back after that), then the deploy verification
        unless a step failed and the policy stops for it: (result, the failed step or None)."""
        deploy = state.settings.deploy
        runs = await asyncio.to_thread(run_deploy_steps, self.data_root, self.campaign, deploy,
                                       campaign_secrets(state)) if deploy.steps() else []
        for run in runs:
            self.log(f"deploy step {run.step}: {run.error or 'exit code 0'} after {run.duration_s:g} s")
        failed = next((run for run in runs if not run.passed), None)
        if failed is not None and failed.interrupted:
            raise DeployStepInterrupted(failed.describe())
        summary = {"deploy_steps": [run.summary() for run in runs]} if runs else {}
        if failed is not None and self.stop_on_failed_deploy_step:
            return ProbeResult(probe="deploy", passed=False, records=[], failures=[failed.describe()],
                               summary=summary), failed
        result = await deploy_verification(client, state.timing)
        result.summary.update(summary)
        return result, failed

    async def _collect_hour(self, client: TargetClient, hour: int) -> None:
        """The hour's steps and its make-up, all started at the hour's start: none waits for another to end."""
        state = self._state()
        await client.sleep_until(state.timing.hour_start_s(hour))
        planned = plan_for_hour(hour, state.planned_hours).steps
        steps: list[tuple[ProbeStep, int | None]] = [(step, None) for step in planned]
        makeup = makeup_for_hour(self.data_root, self._state(), hour)
        if makeup is not None:
            self.log(f"hour {hour:02d}: makes up {makeup.describe()}")
            steps.append((makeup.step, makeup.hour))
        await asyncio.gather(*(self._collect_step(client, hour, step, makeup_of) for step, makeup_of in steps))

    async def _collect_step(self, client: TargetClient, hour: int, step: ProbeStep, makeup_of: int | None) -> None:
        state = self._state()
        if not _collecting(state):
            return  # an early stop ends the plan: later steps are not planned any more
        if step in hour_outcomes(self.data_root, self.campaign, hour):
            self.summary.already_recorded += 1
            return
        if client.now() >= state.timing.hour_start_s(hour + 1):
            self._not_run(hour, step, "the hour ended before the step could start", makeup_of)
            return
        started = _now_ms()
        failed_deploy_step = None
        try:
            if step is ProbeStep.DEPLOY_VERIFICATION:
                result, failed_deploy_step = await self._deploy_then_verify(client, state)
            else:
                result = await _run_step(client, state, hour, step)
        except DeployStepInterrupted as exc:
            reason = f"{exc}; the validator cannot tell what was deployed"
            self._not_run(hour, step, reason, makeup_of)
            fail_validator(self.data_root, self.campaign, reason)  # the collector job alerts it
            return
        except Exception as exc:  # a probe that raises is the validator's fault, never the target's
            self._not_run(hour, step, f"the probe raised {type(exc).__name__}: {exc}", makeup_of)
            return
        self._record(StepOutcome(
            hour=hour, step=step, status=StepStatus.RAN, started_ms=started, ended_ms=_now_ms(),
            passed=result.passed, failures=result.failures,
            summary=json.loads(json.dumps(result.summary, default=str)), makeup_of=makeup_of,
        ), result)
        if step is ProbeStep.DEPLOY_VERIFICATION:
            if failed_deploy_step is not None and self.stop_on_failed_deploy_step:
                stop_after_failed_deploy_step(self.data_root, self.campaign, failed_deploy_step, hour)
            elif not result.passed:
                stop_after_failed_deploy(self.data_root, self.campaign, result, hour)

    def _record_missed_hours(self, state: CampaignState, current_hour: int) -> None:
        """The steps of hours that ended before this collector started: not run, and never run late."""
        for hour in range(min(current_hour, state.total_hours)):
            recorded = hour_outcomes(self.data_root, self.campaign, hour)
            for step in plan_for_hour(hour, state.planned_hours).steps:
                if step not in recorded:
                    self._not_run(hour, step, "no collector was running during the hour")

    async def _wait_for_hour(self, client: TargetClient, hour: int) -> bool:
        """Wait for the hour's start; False, at once, when the round has no such hour or the campaign stops."""
        while True:
            state = self._state()
            if not _collecting(state) or hour >= state.total_hours:
                return False
            start = state.timing.hour_start_s(hour)
            if client.now() >= start:
                return True
            # An early stop (stored by the monitor) must end the collector soon, not at the next hour.
            await client.sleep_until(min(start, client.now() + STATE_POLL_S))

    async def collect(self) -> CollectionSummary:
        """Every hour of the current verdict round, from the current one to the last, then return."""
        state = mark_running(self.data_root, self.campaign)  # the campaign clock starts once we are ready
        self.log(f"campaign clock: hour 0 began at {state.timing.start.isoformat()}")
        current = max(0, math.floor(state.timing.campaign_seconds() / 3600))
        self._record_missed_hours(state, current)
        hours: list[asyncio.Task] = []
        async with target_client(state) as client:
            hour = current
            while await self._wait_for_hour(client, hour):
                hours.append(asyncio.create_task(self._collect_hour(client, hour)))
                hour += 1
            await asyncio.gather(*hours)
        return self.summary


def run_collector(data_root: str | Path, campaign: str, log: Callable[[str], None] = lambda line: None,
                  stop_on_failed_deploy_step: bool = True) -> CollectionSummary:
    """Collect the campaign's current verdict round: returns when its last hour's steps are recorded or
    the campaign is no longer active. `stop_on_failed_deploy_step`: the policy's switch of that early stop."""
    return asyncio.run(Collector(data_root, campaign, log, stop_on_failed_deploy_step).collect())
