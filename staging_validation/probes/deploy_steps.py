"""The runbook's hour-0 steps 1-2 before the smoke tests: run the database migration, deploy the code.

Each step is a command from the launch config (`deploy.migrate_command`, `deploy.deploy_command`), split
like a shell command line and run without a shell (as the telemetry command is), with a timeout. What is
stored per step: the command, its exit code, its duration and its output (stdout and stderr together),
bounded to its first and last bytes. The child inherits the environment (a migration needs its database
credentials), but only what it prints is stored, and the campaign's own secrets (target token, SMTP
password, webhook URL) are masked in that too.

A step runs once per campaign: its result is written to `deploy/steps.json` in the campaign folder as
soon as it ends, so a re-run of hour 0 (a crash, a re-materialization) reads the stored results instead of
migrating or deploying again. The first failing step ends the sequence.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pydantic

from staging_validation.config_files import ConfigError, StrictModel
from staging_validation.probes.result import ProbeResult
from staging_validation.schemas.outcome import Outcome
from staging_validation.schemas.probe_records import ProbeRecord
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.storage import atomic_write_text

PROBE_NAME = "deploy_step"
MAX_OUTPUT_BYTES = 16_384  # per step: the first and the last half of it when the output is longer
DEFAULT_TIMEOUT_S = 1800.0
REDACTED = "[redacted]"


class DeploySteps(StrictModel):
    """The launch config's `deploy` section; empty commands are skipped."""

    migrate_command: str = ""
    deploy_command: str = ""
    timeout_s: float = pydantic.Field(default=DEFAULT_TIMEOUT_S, gt=0)

    @pydantic.field_validator("migrate_command", "deploy_command")
    @classmethod
    def _a_command_line(cls, value: str) -> str:
        if value:
            try:
                argv = shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"cannot be split like a shell command line: {exc}") from None
            if not argv:
                raise ValueError("names no program")
        return value

    def steps(self) -> list[tuple[str, str]]:
        """(step, command) in the runbook's order: migrate, then deploy."""
        return [(step, command) for step, command in (("migrate", self.migrate_command),
                                                      ("deploy", self.deploy_command)) if command]


@dataclasses.dataclass(frozen=True)
class StepRun:
    step: str  # migrate | deploy
    command: str
    started_at_ms: int
    exit_code: int | None  # None: it could not start or was killed at its timeout
    duration_s: float
    output: str  # bounded, secrets masked
    output_bytes: int  # how much it printed in all
    timed_out: bool
    error: str | None  # why it failed, None when it exited 0

    @property
    def passed(self) -> bool:
        return self.error is None


def _masked(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):  # longest first: one may hold another
        text = text.replace(secret, REDACTED)
    return text


def run_step(step: str, command: str, timeout_s: float, secrets: Sequence[str] = (),
             max_output_bytes: int = MAX_OUTPUT_BYTES, cwd: str | Path | None = None) -> StepRun:
    """Run one command to its end or its timeout (then its whole process group is killed)."""
    started_at_ms = int(time.time() * 1000)
    started = time.monotonic()
    exit_code: int | None = None
    timed_out = False
    error: str | None = None
    # A file, not a pipe: a chatty command can neither block on a full pipe nor fill the validator's memory.
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(shlex.split(command), stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        except OSError as exc:
            error = f"cannot start: {exc.strerror or exc} ({shlex.split(command)[0]})"
        else:
            try:
                exit_code = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its children too: a deploy script starts many
                process.wait()
                timed_out = True
                error = f"timed out after {timeout_s:g} s and was killed"
            else:
                if exit_code != 0:
                    error = f"exit code {exit_code}"
        size = output.tell()
        output.seek(0)
        if size <= max_output_bytes:
            text = output.read().decode("utf-8", errors="replace")
        else:
            half = max_output_bytes // 2
            head = output.read(half)
            output.seek(size - half)
            text = (head.decode("utf-8", errors="replace") + f"\n[... {size - 2 * half} bytes omitted ...]\n"
                    + output.read().decode("utf-8", errors="replace"))
    return StepRun(step, command, started_at_ms, exit_code, round(time.monotonic() - started, 3),
                   _masked(text, secrets), size, timed_out, error)


def _load(path: Path) -> list[StepRun]:
    try:
        return [StepRun(**entry) for entry in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: stored deploy step results cannot be read: {exc}") from None


def run_deploy_steps(deploy: DeploySteps, results_path: Path, secrets: Sequence[str] = (),
                     cwd: str | Path | None = None) -> list[StepRun]:
    """The campaign's deploy steps: those already stored, then the others in order until one fails."""
    runs = _load(results_path) if results_path.exists() else []
    done = {run.step for run in runs}
    for step, command in deploy.steps():
        if any(not run.passed for run in runs):
            break
        if step in done:
            continue
        runs.append(run_step(step, command, deploy.timeout_s, secrets, cwd=cwd))
        atomic_write_text(results_path, json.dumps([dataclasses.asdict(run) for run in runs], indent=1))
    return runs


def deploy_steps_result(runs: list[StepRun], timing: CampaignTiming) -> ProbeResult:
    """The steps as probe records (probe `deploy_step`, case = step, route = the command, latency = duration,
    answer = the bounded output), so the report's deployment section shows them beside the smoke tests."""
    records = []
    for run in runs:
        at = datetime.fromtimestamp(run.started_at_ms / 1000, UTC)
        records.append(ProbeRecord(
            time=at, campaign_s=(run.started_at_ms - timing.start_ms) / 1000, probe=PROBE_NAME, case=run.step,
            user="", route=run.command, method="RUN",
            outcome=Outcome.OK if run.passed else Outcome.TIMEOUT if run.timed_out else Outcome.SERVER_ERROR,
            latency_ms=round(run.duration_s * 1000, 1), passed=run.passed, answer=run.output, error=run.error,
        ))
    failures = [f"{run.step} step `{run.command}`: {run.error}" for run in runs if not run.passed]
    return ProbeResult(probe=PROBE_NAME, passed=not failures, records=records, failures=failures,
                       summary={run.step: {"exit_code": run.exit_code, "duration_s": run.duration_s,
                                           "output_bytes": run.output_bytes} for run in runs})
