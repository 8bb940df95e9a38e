from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from staging_validation.campaigns import (
    CampaignState,
    load_campaign_state,
    save_campaign_state,
)
from staging_validation.config_files import ConfigError
from staging_validation.storage import campaign_dir, default_data_root


class CampaignStore(dg.ConfigurableResource):
    """The data root where campaigns live: registrations, captured telemetry, alerts and outputs."""

    data_root: str = str(default_data_root())

    def campaign_dir(self, campaign: str) -> Path:
        return campaign_dir(self.data_root, campaign)

    def load(self, campaign: str) -> CampaignState:
        return load_campaign_state(self.data_root, campaign)

    def save(self, state: CampaignState) -> None:
        save_campaign_state(self.data_root, state)

    def campaigns(self) -> tuple[list[CampaignState], list[str]]:
        """Every registered campaign that can be read, and why each other campaign folder was skipped: one
        bad registration must not keep the sensors from serving the others."""
        root = Path(self.data_root) / "campaigns"
        states, skipped = [], []
        for state_file in sorted(root.glob("*/campaign.json")):
            try:
                states.append(self.load(state_file.parent.name))
            except (ConfigError, OSError) as exc:
                skipped.append(f"campaign folder {state_file.parent.name!r} skipped: {exc}")
        return states, skipped

    def alerts_path(self, campaign: str) -> Path:
        return self.campaign_dir(campaign) / "alerts.jsonl"

    def read_alerts(self, campaign: str) -> list[dict]:
        path = self.alerts_path(campaign)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def append_alerts(self, campaign: str, alerts: list[dict]) -> None:
        path = self.alerts_path(campaign)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            for alert in alerts:
                handle.write(json.dumps(alert, sort_keys=True, default=str) + "\n")
