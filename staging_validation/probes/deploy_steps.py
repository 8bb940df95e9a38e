"""The runbook's hour-0 steps 1-2, before the smoke tests: migrate the database, deploy the code (no
Dagster import).

Each step is an argv list from the launch config (`deploy.migrate_command`, `deploy.deploy_command`), run
without a shell, in that order, the first failure ending the sequence. A step is killed, with its whole
process group (a deploy script starts children), at `deploy.timeout_s`. Its output (stdout and stderr
together) goes to a temporary file, never a pipe, so a chatty command can neither block nor fill the
validator's memory; what is stored is its first and last bytes. The child inherits the environment (a
migration needs its credentials), but the campaign's secrets are masked in what is stored.

Each step runs once per campaign. Its result (argv, exit code, duration, bounded output) is written to
`deploy/<step>.json` (through `CampaignLayout`) when it ends, and a later call (a collector re-run or
retry, a make-up of the deploy verification) reads it instead of deploying again. Before the command
starts, `deploy/<step>.started` is created exclusively: a step started and never finished (the
validator was killed while it ran) is `interrupted` and never started again, since a half-run migration
may not be safe to repeat.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import pydantic
from upath import UPath

from staging_validation.config_files import ConfigError, StrictModel
from staging_validation.layout import CampaignLayout
from staging_validation.storage import NEW_FILE_MODE, atomic_write_text, local_path

STEP_ORDER = ("migrate", "deploy")
MAX_OUTPUT_BYTES = 16_384  # per step: its first and its last half of this when it printed more
DEFAULT_TIMEOUT_S = 1800.0  # the runbook gives migration 10 minutes and the deploy 5; a margin for slow ones
REDACTED = b"[redacted]"


def argv_problem(argv: list[str] | None) -> str | None:
    """Why `argv` cannot be run, or None (None itself: the step is not configured)."""
    if argv is None:
        return None
    if not argv:
        return "an empty argv names no program (leave the field out for no such step)"
    if not argv[0].strip():
        return "the program (argv[0]) is empty"
    if any("\x00" in arg for arg in argv):
        return "an argument holds a NUL byte"
    return None


def timeout_problem(timeout_s: float) -> str | None:
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        return f"{timeout_s:g} must be a positive number of seconds"
    return None


class DeploySettings(StrictModel):
    """A campaign's hour-0 deploy steps (stored in its settings); a step left None is not run."""

    migrate_command: list[str] | None = None
    deploy_command: list[str] | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S  # each step's

    @pydantic.field_validator("migrate_command", "deploy_command")
    @classmethod
    def _runnable(cls, value: list[str] | None) -> list[str] | None:
        problem = argv_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @pydantic.field_validator("timeout_s")
    @classmethod
    def _positive(cls, value: float) -> float:
        problem = timeout_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def steps(self) -> list[tuple[str, list[str]]]:
        """(step, argv) in the runbook's order, the configured ones only."""
        commands = {"migrate": self.migrate_command, "deploy": self.deploy_command}
        return [(step, argv) for step in STEP_ORDER if (argv := commands[step]) is not None]


class DeployStepRun(StrictModel):
    """One step as it ran (or could not)."""

    step: str  # migrate | deploy
    argv: list[str]
    started_at_ms: int
    duration_s: float
    exit_code: int | None  # None: it could not start, was killed at its timeout, or was interrupted
    output: str  # stdout and stderr, bounded (head and tail), secrets masked
    output_bytes: int  # how much it printed in all
    timed_out: bool = False
    interrupted: bool = False  # the validator stopped while it ran: it is never run again
    error: str | None = None  # why it failed; None when it exited 0

    @property
    def passed(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        """deploy step `migrate` (alembic upgrade head): exit code 3"""
        return f"deploy step `{self.step}` ({shlex.join(self.argv)}): {self.error or 'exit code 0'}"

    def summary(self) -> dict:
        return {"step": self.step, "argv": self.argv, "exit_code": self.exit_code, "duration_s": self.duration_s,
                "output_bytes": self.output_bytes, "error": self.error}


# --- one command ----------------------------------------------------------------------------------


def _occurrences(data: bytes, secret: bytes) -> list[tuple[int, int]]:
    found, start = [], data.find(secret)
    while start >= 0:
        found.append((start, start + len(secret)))
        start = data.find(secret, start + 1)
    return found


def _mask(data: bytes, secrets: Sequence[bytes]) -> bytes:
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: one secret may hold another
        data = data.replace(secret, REDACTED)
    return data


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def bounded_output(handle: IO[bytes], size: int, max_bytes: int, secrets: Sequence[bytes]) -> str:
    """The first and last `max_bytes // 2` bytes of what `handle` holds, secrets masked. A cut never splits
    a secret: the head is read on past its end, the tail from before its start, and a cut that falls inside
    a secret moves to keep the secret whole (and so masked)."""
    longest = max((len(s) for s in secrets), default=1)
    handle.seek(0)
    if size <= max_bytes + 2 * longest:
        return _decode(_mask(handle.read(), secrets))
    half, reach = max_bytes // 2, longest - 1
    head = handle.read(half + reach)
    cut = half
    for secret in secrets:
        for start, end in _occurrences(head, secret):
            if start < cut < end:
                cut = max(cut, end)
    head = head[:cut]
    handle.seek(size - half - reach)
    tail = handle.read()
    cut = reach
    for secret in secrets:
        for start, end in _occurrences(tail, secret):
            if start < cut < end:
                cut = min(cut, start)
    tail = tail[cut:]
    omitted = size - len(head) - len(tail)
    return f"{_decode(_mask(head, secrets))}\n[... {omitted} bytes omitted ...]\n{_decode(_mask(tail, secrets))}"


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the command and every child it started
    process.wait()


def run_command(step: str, argv: list[str], timeout_s: float, secrets: Sequence[str] = (),
                max_output_bytes: int = MAX_OUTPUT_BYTES) -> DeployStepRun:
    """Run one step's command to its end or its timeout, without a shell."""
    masked = [s.encode("utf-8") for s in secrets if s]
    started_at_ms = int(time.time() * 1000)
    started = time.monotonic()
    exit_code: int | None = None
    timed_out = False
    error: str | None = None
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        except OSError as exc:
            error = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
        else:
            try:
                exit_code = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                timed_out = True
                error = f"timed out after {timeout_s:g} s; its process group was killed"
            finally:
                if process.returncode is None:  # interrupted while waiting: leave nothing running
                    _kill_group(process)
            if exit_code is not None and exit_code != 0:
                error = (f"killed by signal {-exit_code}" if exit_code < 0 else f"exit code {exit_code}")
        size = output.seek(0, os.SEEK_END)
        text = bounded_output(output, size, max_output_bytes, masked)
    return DeployStepRun(step=step, argv=list(argv), started_at_ms=started_at_ms,
                         duration_s=round(time.monotonic() - started, 3), exit_code=exit_code, output=text,
                         output_bytes=size, timed_out=timed_out, error=error)


# --- a campaign's steps, once ----------------------------------------------------------------------


def _read(path: Path | UPath) -> DeployStepRun:
    try:
        return DeployStepRun.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable deploy step result: {exc}") from None


def stored_deploy_steps(data_root: str | os.PathLike | UPath, campaign: str) -> list[DeployStepRun]:
    """The campaign's recorded deploy steps, in the runbook's order (what the report shows)."""
    layout = CampaignLayout.of(data_root, campaign)
    return [_read(path) for step in STEP_ORDER if (path := layout.deploy_step_file(step)).exists()]


def _claim(path: Path) -> bool:
    """Create the started mark; False if it exists (the step was started before)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(str(int(time.time() * 1000)))
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _interrupted(step: str, argv: list[str], mark: Path) -> DeployStepRun:
    try:
        started_at_ms = int(mark.read_text().strip() or 0)
    except (OSError, ValueError):
        started_at_ms = 0
    return DeployStepRun(step=step, argv=argv, started_at_ms=started_at_ms, duration_s=0.0, exit_code=None,
                         output="", output_bytes=0, interrupted=True,
                         error=("interrupted: the validator stopped while it ran, so its result is unknown; it is "
                                "not run again (check the deployment by hand)"))


def run_deploy_steps(data_root: str | os.PathLike | UPath, campaign: str, deploy: DeploySettings,
                     secrets: Sequence[str] = (), max_output_bytes: int = MAX_OUTPUT_BYTES) -> list[DeployStepRun]:
    """The campaign's deploy steps in order, each run at most once (a recorded one is read back), up to
    and including the first that failed or was interrupted."""
    layout = CampaignLayout.of(data_root, campaign)
    runs: list[DeployStepRun] = []
    for step, argv in deploy.steps():
        result = local_path(layout.deploy_step_file(step))
        mark = local_path(layout.deploy_step_started_file(step))
        if result.exists():
            run = _read(result)
        elif _claim(mark):
            run = run_command(step, argv, deploy.timeout_s, secrets, max_output_bytes)
            atomic_write_text(result, run.model_dump_json(indent=1))
        else:
            run = _read(result) if result.exists() else _interrupted(step, argv, mark)
        runs.append(run)
        if not run.passed:
            break
    return runs
