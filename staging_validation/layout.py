"""Every file of a campaign, named once (no Dagster import). Nothing else builds these paths.

Under the data root (default `data/`; a `UPath` such as `memory://…` or `s3://…` works for reading):

    campaigns/<id>/campaign.json                  the lifecycle's CampaignState (`lifecycle.py`, one writer)
    campaigns/<id>/.campaign.lock                 held by every state transition (fcntl)
    campaigns/<id>/probes/<HH>/<step>.parquet     each probe step as the collector recorded it (write-once)
    campaigns/<id>/deploy/<step>.json             hour 0's migrate / deploy command, run once: argv, exit code,
                                                  duration, bounded output (+ `<step>.started` while it runs)
    campaigns/<id>/hours/<asset>/<HH>.parquet     one file per stored hour of an hourly asset
    campaigns/<id>/verdict/<asset>.(json|parquet) the verdict assets of the latest round
    campaigns/<id>/verdict/rounds/<round>/        what a verdict round keeps for good (its final checks)
    campaigns/<id>/telemetry/                     the durable capture (cursor + raw lines per hour)
    campaigns/<id>/monitor/                       the telemetry watch's cursor and open-window buffer
    campaigns/<id>/alerts.jsonl                   every alert raised, append-only
    campaigns/<id>/notifications/<batch>.json     an alert batch for the notification job, and its deliveries
    campaigns/<id>/outbox/                        every message (.eml), sent or not, with its delivery
    campaigns/<id>/STAGING_ACCEPTANCE_REPORT.md, decision.json, staging-validation-metrics.txt, charts/

The IO managers, the verdict assets, the `verdict` CLI and the reports all go through `CampaignLayout`, so
a re-judgement reads exactly what the assets wrote, wherever the data root is.
"""

from __future__ import annotations

import dataclasses
import os

from upath import UPath

from staging_validation.schemas.timing import hour_key
from staging_validation.storage import DataPath, as_data_path, validate_campaign_id, validate_file_name

CAMPAIGNS_DIR = "campaigns"
STATE_FILE = "campaign.json"
HOURLY_ASSET_PROBE_RECORDS = "probe_records"
HOURLY_ASSET_TELEMETRY_EVENTS = "telemetry_events"
FINAL_CHECKS_ASSET = "final_checks"
REPORT_NAME = "STAGING_ACCEPTANCE_REPORT.md"
DECISION_NAME = "decision.json"
METRICS_NAME = "staging-validation-metrics.txt"
CHARTS_DIR = "charts"


def campaigns_root(data_root: str | os.PathLike | UPath) -> DataPath:
    return as_data_path(data_root) / CAMPAIGNS_DIR


def registered_campaign_ids(data_root: str | os.PathLike | UPath) -> list[str]:
    """The folder names under `campaigns/` that hold a campaign.json (not yet validated as ids)."""
    root = campaigns_root(data_root)
    if not root.exists():
        return []
    return sorted(path.parent.name for path in root.glob(f"*/{STATE_FILE}"))


@dataclasses.dataclass(frozen=True)
class CampaignLayout:
    """The files of one campaign. The id is validated here, before it becomes a folder name."""

    data_root: DataPath
    campaign: str

    @classmethod
    def of(cls, data_root: str | os.PathLike | UPath, campaign: str) -> CampaignLayout:
        return cls(as_data_path(data_root), validate_campaign_id(campaign))

    @property
    def dir(self) -> DataPath:
        return campaigns_root(self.data_root) / self.campaign

    # --- registration -----------------------------------------------------------------------------
    @property
    def state_file(self) -> DataPath:
        return self.dir / STATE_FILE

    @property
    def state_lock_file(self) -> DataPath:
        return self.dir / ".campaign.lock"

    # --- stored tables ----------------------------------------------------------------------------
    def hours_dir(self, asset: str) -> DataPath:
        return self.dir / "hours" / asset

    def hour_file(self, asset: str, hour: int) -> DataPath:
        return self.hours_dir(asset) / f"{hour_key(hour)}.parquet"

    def stored_hours(self, asset: str) -> list[int]:
        folder = self.hours_dir(asset)
        if not folder.exists():
            return []
        return sorted(int(p.stem) for p in folder.glob("*.parquet") if p.stem.isdigit())

    def verdict_file(self, asset: str, extension: str) -> DataPath:
        """`extension` with its dot: `.json` or `.parquet`."""
        return self.dir / "verdict" / f"{asset}{extension}"

    def round_dir(self, round_id: str) -> DataPath:
        return self.dir / "verdict" / "rounds" / validate_file_name(round_id, "verdict round")

    def round_final_checks_file(self, round_id: str) -> DataPath:
        return self.round_dir(round_id) / f"{FINAL_CHECKS_ASSET}.parquet"

    # --- collecting --------------------------------------------------------------------------------
    @property
    def probe_steps_dir(self) -> DataPath:
        """`<HH>/<step>.parquet`: each probe step of each hour, as the collector recorded it."""
        return self.dir / "probes"

    def probe_steps_hour_dir(self, hour: int) -> DataPath:
        return self.probe_steps_dir / hour_key(hour)

    @property
    def deploy_steps_dir(self) -> DataPath:
        """Hour 0's deploy steps (the launch config's `deploy.migrate_command`, `deploy.deploy_command`)."""
        return self.dir / "deploy"

    def deploy_step_file(self, step: str) -> DataPath:
        """The step's result, written once when it ends."""
        return self.deploy_steps_dir / f"{validate_file_name(step, 'deploy step')}.json"

    def deploy_step_started_file(self, step: str) -> DataPath:
        """Created (exclusively) before the step's command starts: a step started and never finished was
        interrupted, and is never started again."""
        return self.deploy_steps_dir / f"{validate_file_name(step, 'deploy step')}.started"

    # --- watching and telling ---------------------------------------------------------------------
    @property
    def telemetry_dir(self) -> DataPath:
        return self.dir / "telemetry"

    @property
    def monitor_dir(self) -> DataPath:
        return self.dir / "monitor"

    @property
    def monitor_cursor_file(self) -> DataPath:
        return self.monitor_dir / "cursor.json"

    @property
    def alerts_file(self) -> DataPath:
        return self.dir / "alerts.jsonl"

    @property
    def notifications_dir(self) -> DataPath:
        return self.dir / "notifications"

    def alert_batch_file(self, batch: str) -> DataPath:
        return self.notifications_dir / f"{validate_file_name(batch, 'alert batch')}.json"

    def alert_batch_delivery_file(self, batch: str) -> DataPath:
        return self.notifications_dir / f"{validate_file_name(batch, 'alert batch')}.delivered.json"

    @property
    def outbox_dir(self) -> DataPath:
        return self.dir / "outbox"

    # --- the decided campaign's outputs -----------------------------------------------------------
    @property
    def report_file(self) -> DataPath:
        return self.dir / REPORT_NAME

    @property
    def decision_file(self) -> DataPath:
        return self.dir / DECISION_NAME

    @property
    def metrics_file(self) -> DataPath:
        return self.dir / METRICS_NAME

    def chart_file(self, name: str) -> DataPath:
        return self.dir / CHARTS_DIR / name
