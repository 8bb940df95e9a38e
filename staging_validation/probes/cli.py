"""`staging-validation probe …`: run one probe by hand against a target, before or during a campaign.

Exit status: 0 the probe passed, 1 it failed, 2 bad arguments or an unreadable profile / prompt set.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.config_files import ConfigError
from staging_validation.probes.identity import determinism_check, identity_check
from staging_validation.probes.prompt_set import load_prompt_set, prompt_set
from staging_validation.probes.result import ProbeResult
from staging_validation.probes.runner import run_probe
from staging_validation.probes.smoke import deploy_verification, smoke_tests
from staging_validation.probes.stress import stress
from staging_validation.target.profile import load_target_profile

RECORD_ROWS_SHOWN = 50  # a stress run has thousands of rows; the table shows the first ones


@click.group()
def probe() -> None:
    """Run one probe against the target and print what it saw (exit 1 if it fails)."""


_TARGET_OPTIONS = (
    click.option("--profile", "profile_path", type=click.Path(dir_okay=False), default=None,
                 help="Target profile YAML (default: the documented contract)."),
    click.option("--base-url", default=None, help="Override the profile's base URL."),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    click.option("--hour-seconds", type=click.FloatRange(min=0, min_open=True), default=3600.0,
                 show_default=True, help="Campaign hour length; runbook cadences scale with it."),
)


def _target_options(command: Callable) -> Callable:
    for option in reversed(_TARGET_OPTIONS):
        command = option(command)
    return command


def _run(options: dict, make_probe: Callable[[CampaignTiming], Callable]) -> None:
    try:
        profile = load_target_profile(options["profile_path"])
        timing = CampaignTiming(start_ms=int(time.time() * 1000), hour_seconds=options["hour_seconds"])
        result = run_probe(profile, make_probe(timing), base_url=options["base_url"])
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    if options["as_json"]:
        click.echo(json.dumps(_as_json(result), indent=2, default=str))
    else:
        _print(result)
    sys.exit(0 if result.passed else 1)


def _as_json(result: ProbeResult) -> dict:
    return {
        "probe": result.probe,
        "passed": result.passed,
        "failures": result.failures,
        "notes": result.notes,
        "summary": result.summary,
        "records": [dataclasses.asdict(r) for r in result.records],
    }


def _print(result: ProbeResult) -> None:
    console = Console(width=max(Console().width, 140))
    table = Table(title=f"probe {result.probe}", show_lines=False)
    for column in ("case", "route", "status", "outcome", "ms", "ok"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for record in result.records[:RECORD_ROWS_SHOWN]:
        detail = record.error or record.answer or (f"not exposed: {record.not_exposed}" if record.not_exposed else "")
        if record.sse_events is not None and not record.error:
            detail = f"{record.sse_events} stream events"
        table.add_row(
            record.case,
            f"{record.method} {record.route}",
            "" if record.http_status is None else str(record.http_status),
            record.outcome,
            "" if record.latency_ms is None else f"{record.latency_ms:.0f}",
            {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]?[/]" if record.not_exposed else ""}[
                record.passed],
            escape(detail[:120]),
        )
    console.print(table)
    if len(result.records) > RECORD_ROWS_SHOWN:
        console.print(f"… {len(result.records) - RECORD_ROWS_SHOWN} more records (use --json for all)")
    for key, value in result.summary.items():
        console.print(f"  {key}: {escape(str(value))}")
    for failure in result.failures:
        console.print(f"[red]✗[/] {escape(failure)}", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]?[/] {escape(note)}", highlight=False)
    console.print("[bold green]PASS[/]" if result.passed else "[bold red]FAIL[/]")


@probe.command()
@_target_options
def deploy(**options: object) -> None:
    """Health with the four features enabled, then the four smoke tests."""
    _run(options, lambda timing: lambda client: deploy_verification(client, timing))


@probe.command()
@_target_options
def smoke(**options: object) -> None:
    """The four documented smoke tests, once."""
    _run(options, lambda timing: lambda client: smoke_tests(client, timing))


@probe.command("prompt-set")
@_target_options
@click.option("--prompts", "prompts_path", type=click.Path(dir_okay=False), default=None,
              help="Prompt set YAML (default: the profile's prompts.prompt_set, else the shipped runbook set).")
def prompt_set_command(prompts_path: str | None, **options: object) -> None:
    """The labelled prompt set; reports the AmbiguityGate's false-positive / false-negative rates."""
    try:
        prompts = load_prompt_set(prompts_path) if prompts_path is not None else None
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    _run(options, lambda timing: lambda client: prompt_set(client, timing, 0, prompts))


@probe.command("stress")
@_target_options
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Arrival rate, requests per second.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds of load.")
def stress_command(rate: float, duration: float, **options: object) -> None:
    """Open-model load at a constant rate; latency from intended send times."""
    _run(options, lambda timing: lambda client: stress(client, timing, 0, rate, duration))


@probe.command()
@_target_options
def identity(**options: object) -> None:
    """New discord and sovereign identities get different ids; lookups and linking work."""
    _run(options, lambda timing: lambda client: identity_check(client, timing))


@probe.command()
@_target_options
def determinism(**options: object) -> None:
    """Ten stable users send five consecutive requests each; every user must keep one relationship context."""
    _run(options, lambda timing: lambda client: determinism_check(client, timing))
