"""Parquet and JSON per partition, at the paths `staging_validation.layout` gives them."""

from __future__ import annotations

import io
import json
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from staging_validation.layout import CampaignLayout
from staging_validation.storage import atomic_write_bytes


class CampaignPathsMixin:
    """An hourly asset's partition "<campaign>/<HH>" is the layout's hour file, a campaign asset's its
    verdict file (UPathIOManager adds the extension). The layout validates the campaign id."""

    def get_path_for_partition(self, context, path: UPath, partition: str) -> UPath:
        asset_name = path.name
        parts = partition.split("/")
        layout = CampaignLayout.of(path.parent, parts[0])
        if len(parts) == 2:
            return UPath(layout.hour_file(asset_name, int(parts[1])).with_suffix(""))
        return UPath(layout.verdict_file(asset_name, ""))


class CampaignParquetIOManager(CampaignPathsMixin, dg.UPathIOManager):
    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: pa.Table | pd.DataFrame, path: UPath) -> None:
        table = obj if isinstance(obj, pa.Table) else pa.Table.from_pandas(obj, preserve_index=False)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        atomic_write_bytes(path, sink.getvalue())

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pa.Table:
        with path.open("rb") as handle:
            return pq.read_table(handle)


class CampaignJsonIOManager(CampaignPathsMixin, dg.UPathIOManager):
    extension = ".json"

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        return json.loads(path.read_text())


class ParquetIOManagerFactory(dg.ConfigurableIOManagerFactory):
    data_root: str

    def create_io_manager(self, context) -> CampaignParquetIOManager:
        return CampaignParquetIOManager(base_path=UPath(self.data_root))


class JsonIOManagerFactory(dg.ConfigurableIOManagerFactory):
    data_root: str

    def create_io_manager(self, context) -> CampaignJsonIOManager:
        return CampaignJsonIOManager(base_path=UPath(self.data_root))
