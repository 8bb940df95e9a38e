from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console

from staging_validation.acceptance.cli import EXIT_CODES
from staging_validation.campaign.rehearsal import DIALECT_PROFILES, print_outcome, rehearse
from staging_validation.config_files import ConfigError
from staging_validation.plan import MIN_HOUR_SECONDS, hour_seconds_problem
from staging_validation.storage import default_data_root


def _servable_hour_seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    problem = hour_seconds_problem(value)
    if problem:
        raise click.BadParameter(problem)
    return value


@click.command(name="rehearse")
@click.option("--profile", default="healthy", show_default=True, help="Simulator fault profile.")
@click.option("--hour-seconds", type=float, default=3.0, show_default=True, callback=_servable_hour_seconds,
              help=f"Length of a campaign hour in seconds, at least {MIN_HOUR_SECONDS:g} (3600 for real time).")
@click.option("--hours", type=click.IntRange(1, 24), default=24, show_default=True, help="Planned campaign hours.")
@click.option("--campaign", help="Campaign id (default: rehearsal-<profile>-<time>).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--organic-rps", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Background traffic of the simulator's own users.")
@click.option("--dialect", type=click.Choice(list(DIALECT_PROFILES)), default="documented", show_default=True,
              help="The simulator's dialect; the campaign uses its shipped target profile and telemetry files.")
@click.option("--first-verdict-only", is_flag=True,
              help="End the campaign at its first verdict: an EXTEND is decided and notified, its hours not played.")
def rehearse_command(profile: str, hour_seconds: float, hours: int, campaign: str | None, seed: int,
                     organic_rps: float, first_verdict_only: bool, dialect: str) -> None:
    """Start the simulator with a fault profile and run a whole campaign through Dagster.

    Exit code: 0 ACCEPT, 3 EXTEND, 4 REJECT, 5 INCONCLUSIVE (the validator missed the evidence), 1 error,
    2 a bad option (e.g. an hour shorter than the validator can serve).
    """
    console = Console()
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise click.UsageError("DAGSTER_HOME is not set: run `make demo`, or export DAGSTER_HOME=<a folder holding "
                               "a copy of the checkout's dagster.yaml>")
    if not (Path(home) / "dagster.yaml").is_file():
        # Without it Dagster would run an instance without the run queue's lane limits, silently.
        raise click.UsageError(f"{Path(home) / 'dagster.yaml'} does not exist: copy (or link) the checkout's "
                               "dagster.yaml into DAGSTER_HOME")
    try:
        outcome = rehearse(Path(home), Path(default_data_root()), profile=profile, hours=hours,
                           hour_seconds=hour_seconds, campaign=campaign, seed=seed,
                           organic_rps=organic_rps, console=console, first_verdict_only=first_verdict_only,
                           dialect=dialect)
    except (ConfigError, RuntimeError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    print_outcome(console, outcome)
    sys.exit(1 if outcome.failed_runs else EXIT_CODES[outcome.decision["decision"]])

