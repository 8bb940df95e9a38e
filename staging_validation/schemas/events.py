"""The telemetry event as an Arrow schema: how parsed and stored events are typed.

The columns, their meaning and the event kinds are defined once, without Arrow, in
`telemetry.event_columns`; the parser (`telemetry.parse`) fills this schema from the target's log using
the field mapping of the target profile.
"""

from __future__ import annotations

import pyarrow as pa

from staging_validation.schemas.event_columns import EVENT_COLUMNS, NOT_NULL_COLUMNS

_ARROW_TYPES = {
    "TIMESTAMPTZ": pa.timestamp("ms", tz="UTC"),
    "VARCHAR": pa.string(),
    "SMALLINT": pa.int16(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
}

EVENT_SCHEMA = pa.schema(
    [
        pa.field(name, _ARROW_TYPES[sql_type], nullable=name not in NOT_NULL_COLUMNS)
        for name, sql_type in EVENT_COLUMNS.items()
    ]
)
