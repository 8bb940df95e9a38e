"""`staging-validation`: one entry point, one subcommand per concern.

Subcommands are imported only when invoked, so `simulate` starts without importing Dagster and a
broken optional piece never stops the others from running.
"""

from __future__ import annotations

import importlib

import click

SUBCOMMANDS = {
    "simulate": "staging_validation.simulator.cli:simulate",
    "probe": "staging_validation.probes.cli:probe",
    "analyze": "staging_validation.telemetry.cli:analyze",
    "verdict": "staging_validation.acceptance.cli:verdict",
    "rehearse": "staging_validation.campaign.cli:rehearse_command",
    "campaign": "staging_validation.campaign.campaign_cli:campaign",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup)
def main() -> None:
    """Measured 24-hour acceptance of a staging LLM chat service."""


if __name__ == "__main__":
    main()
