import dagster as dg

from staging_validation.campaign.assets import HOURLY_ASSETS, VERDICT_ASSETS, monitor_alerts_asset
from staging_validation.campaign.io_managers import JsonIOManagerFactory, ParquetIOManagerFactory
from staging_validation.campaign.jobs import campaign_hour_job, campaign_probes_job, campaign_verdict_job, start_campaign
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.notification_jobs import campaign_alert_notifications, campaign_run_failures
from staging_validation.campaign.sensors import campaign_clock
from staging_validation.campaign.watch_sensor import campaign_watch
from staging_validation.storage import default_data_root


def build_definitions(data_root: str | None = None) -> dg.Definitions:
    root = str(data_root or default_data_root())
    return dg.Definitions(
        assets=[*HOURLY_ASSETS, *VERDICT_ASSETS, monitor_alerts_asset],
        jobs=[start_campaign, campaign_probes_job, campaign_hour_job, campaign_verdict_job,
              campaign_alert_notifications],
        sensors=[campaign_clock, campaign_watch, campaign_run_failures],
        resources={
            "store": CampaignStore(data_root=root),
            "parquet_io_manager": ParquetIOManagerFactory(data_root=root),
            "json_io_manager": JsonIOManagerFactory(data_root=root),
        },
    )


defs = build_definitions()
