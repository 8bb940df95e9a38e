from __future__ import annotations

import json

import dagster as dg

from staging_validation.config_files import ConfigError
from staging_validation.layout import CampaignLayout, registered_campaign_ids
from staging_validation.lifecycle import CampaignState, load_campaign_state
from staging_validation.storage import default_data_root


class CampaignStore(dg.ConfigurableResource):
    """The data root where campaigns live: registrations, captured telemetry, alerts and outputs.

    It reads; every change of a campaign's state goes through a `staging_validation.lifecycle` transition.
    """

    data_root: str = str(default_data_root())

    def layout(self, campaign: str) -> CampaignLayout:
        return CampaignLayout.of(self.data_root, campaign)

    def load(self, campaign: str) -> CampaignState:
        return load_campaign_state(self.data_root, campaign)

    def campaigns(self) -> tuple[list[CampaignState], list[str]]:
        """Every registered campaign that can be read, and why each other campaign folder was skipped: one
        bad registration must not keep the sensors from serving the others."""
        states, skipped = [], []
        for campaign in registered_campaign_ids(self.data_root):
            try:
                states.append(self.load(campaign))
            except (ConfigError, OSError) as exc:
                skipped.append(f"campaign folder {campaign!r} skipped: {exc}")
        return states, skipped

    def read_alerts(self, campaign: str) -> list[dict]:
        path = self.layout(campaign).alerts_file
        if not path.exists():
            return []
        alerts = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                alerts.append(json.loads(line))
            except ValueError:
                raise ConfigError(f"{path}: line {number} is not JSON (truncated?)") from None
        return alerts
