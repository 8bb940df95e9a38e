import dagster as dg

from staging_validation.campaign.assets import HOURLY_ASSETS, VERDICT_ASSETS, monitor_alerts_asset
from staging_validation.campaign.io_managers import JsonIOManagerFactory, ParquetIOManagerFactory
from staging_validation.campaign.jobs import (
    campaign_hour_job,
    campaign_probes_job,
    campaign_reverdict_job,
    campaign_verdict_job,
    start_campaign,
)
from staging_validation.campaign.overview import (
    campaign_hours_summary_asset,
    campaigns_overview_asset,
    campaigns_overview_sensor,
)
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.sensors import campaign_clock, campaign_monitor
from staging_validation.storage import default_data_root


def build_definitions(data_root: str | None = None) -> dg.Definitions:
    root = str(data_root or default_data_root())
    return dg.Definitions(
        assets=[*HOURLY_ASSETS, *VERDICT_ASSETS, monitor_alerts_asset, campaigns_overview_asset,
                campaign_hours_summary_asset],
        jobs=[start_campaign, campaign_reverdict_job, campaign_probes_job, campaign_hour_job, campaign_verdict_job],
        sensors=[campaign_clock, campaign_monitor, campaigns_overview_sensor],
        resources={
            "store": CampaignStore(data_root=root),
            "parquet_io_manager": ParquetIOManagerFactory(data_root=root),
            "json_io_manager": JsonIOManagerFactory(data_root=root),
        },
    )


defs = build_definitions()
