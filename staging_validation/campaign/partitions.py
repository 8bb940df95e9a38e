import dagster as dg

from staging_validation.lifecycle import MAX_CAMPAIGN_HOURS
from staging_validation.schemas.timing import hour_key

campaign_partitions = dg.DynamicPartitionsDefinition(name="campaign")

hour_partitions = dg.StaticPartitionsDefinition([hour_key(h) for h in range(MAX_CAMPAIGN_HOURS)])

campaign_hour_partitions = dg.MultiPartitionsDefinition(
    {"campaign": campaign_partitions, "hour": hour_partitions}
)


def campaign_hour_key(campaign: str, hour: int) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"campaign": campaign, "hour": hour_key(hour)})


def split_campaign_hour(partition_key: str | dg.MultiPartitionKey) -> tuple[str, int]:
    if not isinstance(partition_key, dg.MultiPartitionKey):
        partition_key = campaign_hour_partitions.get_partition_key_from_str(partition_key)
    dims = partition_key.keys_by_dimension
    return dims["campaign"], int(dims["hour"])
