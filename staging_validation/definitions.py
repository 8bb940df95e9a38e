import dagster as dg
from upath import UPath

from staging_validation.campaign.assets import HOURLY_ASSETS, VERDICT_ASSETS, monitor_alerts_asset
from staging_validation.campaign.io_managers import CampaignJsonIOManager, CampaignParquetIOManager
from staging_validation.campaign.jobs import (
    campaign_collector,
    campaign_hour_job,
    campaign_reverdict_job,
    campaign_verdict_job,
    start_campaign,
)
from staging_validation.campaign.notification_jobs import campaign_alert_notifications, campaign_run_failures
from staging_validation.campaign.overview import (
    campaign_hours_summary_asset,
    campaigns_overview_asset,
    campaigns_overview_sensor,
)
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.sensors import campaign_clock
from staging_validation.campaign.watch_sensor import campaign_watch
from staging_validation.storage import default_data_root


def build_definitions(data_root: str | None = None) -> dg.Definitions:
    """Every resource is bound to the data root with no run config, so the launchpad offers no `data_root`:
    where campaigns live is the deployment's choice (STAGING_VALIDATION_DATA), not a field of one run."""
    root = str(data_root or default_data_root())
    return dg.Definitions(
        assets=[*HOURLY_ASSETS, *VERDICT_ASSETS, monitor_alerts_asset, campaigns_overview_asset,
                campaign_hours_summary_asset],
        jobs=[start_campaign, campaign_reverdict_job, campaign_collector, campaign_hour_job, campaign_verdict_job,
              campaign_alert_notifications],
        sensors=[campaign_clock, campaign_watch, campaign_run_failures, campaigns_overview_sensor],
        resources={
            "store": dg.ResourceDefinition.hardcoded_resource(CampaignStore(data_root=root)),
            "parquet_io_manager": dg.IOManagerDefinition.hardcoded_io_manager(
                CampaignParquetIOManager(base_path=UPath(root))),
            "json_io_manager": dg.IOManagerDefinition.hardcoded_io_manager(
                CampaignJsonIOManager(base_path=UPath(root))),
        },
    )


defs = build_definitions()
