"""What one campaign hour does, as plain functions the Dagster assets call (no Dagster import).

An hour runs its planned probes while the hour is current, then waits for the hour to end (capturing
telemetry meanwhile), and parses exactly the lines whose time falls inside the hour. Every input comes
from the stored campaign state, so re-running an hour after a crash produces the same partition.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pydantic

from staging_validation.acceptance.policy import campaign_policy
from staging_validation.campaigns import CampaignState
from staging_validation.config_files import ConfigError, validate_model
from staging_validation.plan import STRESS_MULTIPLIER, HourPlan, Phase
from staging_validation.acceptance.notify import campaign_notification_settings
from staging_validation.probes.deploy_steps import DeploySteps, deploy_steps_result, run_deploy_steps
from staging_validation.probes.identity import determinism_check, identity_check
from staging_validation.probes.prompt_set import prompt_set
from staging_validation.probes.smoke import deploy_verification, smoke_loop
from staging_validation.probes.stress import stress
from staging_validation.probes.result import ProbeResult
from staging_validation.storage import campaign_dir
from staging_validation.target.client import TargetClient, bearer_token
from staging_validation.target.profile import TargetProfile, load_target_profile
from staging_validation.telemetry.capture import TELEMETRY_SOURCES, CaptureError
from staging_validation.telemetry.parse import ParsedTelemetry
from staging_validation.telemetry.sources import CampaignTelemetry

CAPTURE_POLL_S = 1.0  # how often an hour run drains the target's log while it waits for the hour's end


def target_profile(state: CampaignState) -> TargetProfile:
    return load_target_profile(state.settings.get("target_profile") or None)


def telemetry_store(data_root: str | Path, state: CampaignState) -> Path:
    return campaign_dir(data_root, state.campaign) / "telemetry"


def log_follower(data_root: str | Path, state: CampaignState) -> CampaignTelemetry:
    """Every telemetry source of the campaign (settings.telemetry: one source or a list), with its mapping."""
    where = f"campaign {state.campaign}: settings.telemetry"
    try:
        sources = TELEMETRY_SOURCES.validate_python(state.settings.get("telemetry"))
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{where}: {'; '.join(error['msg'] for error in exc.errors())}") from None
    try:
        return CampaignTelemetry(sources, telemetry_store(data_root, state), state.timing,
                                 target_profile(state).telemetry)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


async def _probe_hour(state: CampaignState, plan: HourPlan) -> list[ProbeResult]:
    timing = state.timing
    async with TargetClient(target_profile(state), base_url=state.settings.get("base_url")) as client:
        # Every hour starts with a cheap identity check, so an accidental merge is caught in the hour it
        # begins (the runbook's "REJECT IMMEDIATELY"), not only by the final identity test at hour 24.
        results = [await identity_check(client, timing)]
        if plan.phase is Phase.DEPLOY:
            results.append(await deploy_verification(client, timing))
        elif plan.phase is Phase.SMOKE_LOOP:
            results.append(await smoke_loop(client, timing, plan.hour))
        elif plan.phase is Phase.PROMPT_SET:
            results.append(await prompt_set(client, timing, plan.hour))
        elif plan.phase is Phase.STRESS:
            rate = float(state.settings.get("stress_baseline_rps", 5.0)) * STRESS_MULTIPLIER
            results.append(await stress(client, timing, plan.hour, rate))
        return results


def run_hour_probes(state: CampaignState, plan: HourPlan) -> list[ProbeResult]:
    """The hour's probes; an hour that is already over when its run starts probes nothing (a gap)."""
    hour_end = state.timing.hour_start_s(plan.hour + 1)
    if time.time() >= hour_end:
        return []
    return asyncio.run(_probe_hour(state, plan))


async def _final_checks(state: CampaignState) -> list[ProbeResult]:
    # As many requests per user as gate 3 judges, so a stricter policy still gets its samples.
    requests_per_user = campaign_policy(state).gates.relationship_determinism.consecutive_requests
    async with TargetClient(target_profile(state), base_url=state.settings.get("base_url")) as client:
        return [
            await identity_check(client, state.timing),
            await determinism_check(client, state.timing, requests_per_user=requests_per_user),
        ]


def run_campaign_deploy_steps(data_root: str | Path, state: CampaignState) -> ProbeResult | None:
    """Hour 0's migrate and deploy commands of the launch config (None when it names none), run once per
    campaign; the campaign's own secrets are masked in their stored output."""
    deploy = validate_model(state.settings.get("deploy") or {}, DeploySteps, f"campaign {state.campaign}: settings.deploy")
    if not deploy.steps():
        return None
    notification = campaign_notification_settings(state)
    secrets = [bearer_token(target_profile(state)) or "", notification.webhook_url() or "",
               os.environ.get(notification.smtp_password_env or "", "")]
    runs = run_deploy_steps(deploy, campaign_dir(data_root, state.campaign) / "deploy" / "steps.json", secrets)
    return deploy_steps_result(runs, state.timing)


def run_final_checks(state: CampaignState) -> list[ProbeResult]:
    """The runbook's hour-24 identity and relationship tests, run at decision time."""
    return asyncio.run(_final_checks(state))


def capture_until_hour_end(
    follower: CampaignTelemetry, state: CampaignState, hour: int, should_stop: Callable[[], bool]
) -> list[str]:
    """Drain the target's log until the hour (plus a short grace for buffered writes) is over and the
    capture has caught up with the log, however large the backlog.

    Returns the capture's problems, each once: a log that cannot be read (reported, not raised: the hour
    is then built from what was already captured, which is all a re-run after the target's log is gone
    can have) and lines the capture says are lost (a rotation whose rest could not be found).
    """
    grace_s = min(2.0, state.timing.hour_seconds * 0.05)
    deadline = state.timing.hour_start_s(hour + 1) + grace_s
    problems: list[str] = []
    while True:
        try:
            chunk = follower.poll()
        except CaptureError as exc:
            found, backlog = [str(exc)], False
        else:
            found, backlog = chunk.warnings, not chunk.caught_up
        problems += [problem for problem in found if problem not in problems]
        if backlog:
            continue  # one poll's byte budget ran out: read on at once, past the deadline if need be
        remaining = deadline - time.time()
        if remaining <= 0 or should_stop():
            return problems
        time.sleep(min(CAPTURE_POLL_S, remaining))


def hour_telemetry(data_root: str | Path, state: CampaignState, hour: int) -> ParsedTelemetry:
    """The hour's captured lines of every source, parsed and merged by time."""
    return log_follower(data_root, state).parse_hour(hour)
