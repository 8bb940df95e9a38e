"""`staging-validation verdict`: re-judge a stored campaign, e.g. after tightening a threshold."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from staging_validation.acceptance.judge import judge_campaign
from staging_validation.acceptance.policy import load_policy
from staging_validation.config_files import ConfigError
from staging_validation.storage import as_data_path, default_data_root

# 5: the validator failed to collect the evidence (a rule `inconclusive.*`): nothing is known against the target.
EXIT_CODES = {"ACCEPT": 0, "EXTEND": 3, "REJECT": 4, "INCONCLUSIVE": 5}
STATUS_STYLE = {"PASS": "green", "REVIEW": "yellow", "FAIL": "bold red", "NO_DATA": "magenta"}
DECISION_STYLE = {"ACCEPT": "bold green", "EXTEND": "bold yellow", "REJECT": "bold red",
                  "INCONCLUSIVE": "bold magenta"}


@click.command()
@click.option("--campaign", "campaign_id", required=True, help="Id of a stored campaign.")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Policy YAML to judge with (default: the campaign's own, else the shipped one).")
@click.option("--data-root", help="Where campaigns are stored: a folder or a URL such as s3://bucket/data "
              "(default: data/ or $STAGING_VALIDATION_DATA).")
@click.option("--round", "round_id", help="The verdict round to re-judge, e.g. 24 or early (default: the latest).")
def verdict(campaign_id: str, policy_path: Path | None, data_root: str | None, round_id: str | None) -> None:
    """Recompute the five gates and the decision from stored data; exit 0 ACCEPT, 3 EXTEND, 4 REJECT,
    5 INCONCLUSIVE (the validator missed the evidence)."""
    root = as_data_path(data_root) if data_root else default_data_root()
    try:
        evidence = judge_campaign(root, campaign_id, load_policy(policy_path) if policy_path else None,
                                  round_id=round_id)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None

    console = Console()
    validator = evidence.validator
    probes = f"probe coverage {validator.probe_coverage:.0%}, " if validator else ""
    table = Table(title=f"Campaign {evidence.campaign}: {len(evidence.hours_observed)} observed hour(s), "
                        f"{probes}coverage {evidence.coverage:.0%}")
    table.add_column("#")
    table.add_column("Gate", no_wrap=True)
    table.add_column("Crit.")
    table.add_column("Status", no_wrap=True, min_width=7)
    table.add_column("Rule", overflow="fold")
    table.add_column("Samples", justify="right")
    for gate in evidence.gates:
        table.add_row(str(gate.gate), gate.name, "yes" if gate.critical else "no",
                      f"[{STATUS_STYLE[gate.status]}]{gate.status}[/]", gate.rule, str(gate.samples))
    console.print(table)
    # Reasons below the table: full sentences stay readable on an 80-column terminal.
    for gate in evidence.gates:
        console.print(f"gate {gate.gate}: {gate.reason}", highlight=False, markup=False)
    decision = evidence.decision
    console.print(f"Decision: [{DECISION_STYLE[decision.decision]}]{decision.decision}[/] (rule {decision.rule})",
                  highlight=False)
    console.print(decision.reason, highlight=False, markup=False)
    for item in decision.action_items:
        console.print(f"- {item}", highlight=False, markup=False)
    raise SystemExit(EXIT_CODES[decision.decision])
