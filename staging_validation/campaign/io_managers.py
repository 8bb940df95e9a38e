"""Parquet and JSON per partition, in the campaign folder layout of `staging_validation.campaigns`."""

from __future__ import annotations

import io
import json
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from staging_validation.storage import atomic_write_bytes, validate_campaign_id


class CampaignPathsMixin:
    """campaigns/<id>/hours/<asset>/<HH> for hourly assets, campaigns/<id>/verdict/<asset> otherwise.

    The campaign key comes from a user, so it is validated before it touches the filesystem.
    """

    def get_path_for_partition(self, context, path: UPath, partition: str) -> UPath:
        asset_name = path.name
        base = path.parent
        parts = partition.split("/")
        campaign = validate_campaign_id(parts[0])
        if len(parts) == 2:
            return base / "campaigns" / campaign / "hours" / asset_name / parts[1]
        return base / "campaigns" / campaign / "verdict" / asset_name


class CampaignParquetIOManager(CampaignPathsMixin, dg.UPathIOManager):
    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: pa.Table | pd.DataFrame, path: UPath) -> None:
        table = obj if isinstance(obj, pa.Table) else pa.Table.from_pandas(obj, preserve_index=False)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        atomic_write_bytes(path, sink.getvalue())

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pa.Table:
        return pq.read_table(str(path))


class CampaignJsonIOManager(CampaignPathsMixin, dg.UPathIOManager):
    extension = ".json"

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        return json.loads(path.read_text())
