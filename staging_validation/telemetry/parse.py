"""The one telemetry parser: log lines → EVENT_SCHEMA rows (Arrow), by structured fields.

Used by the campaign's hourly ingestion and the monitor. The classification itself is
`telemetry.classify` (DuckDB's JSON reader and the mapping's rules in SQL), which `analyze` aggregates
over directly instead of materializing every line.

The reader skips whitespace-only lines (the same set of characters as `bytes.strip()`); they are still
lines of the log, so `lines_total` counts them and they count as unparsed. `parse_log` removes them
before handing the data to DuckDB, so reader rows line up one-to-one with the remaining lines, which is
how `raw` (kept for lines at or above `evidence_level`) and the unparsed samples are recovered.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from staging_validation.telemetry.classify import classification_sql, connect, reader_sql
from staging_validation.schemas.events import EVENT_SCHEMA
from staging_validation.schemas.telemetry_mapping import TelemetryMapping

UNPARSED_SAMPLE_LIMIT = 10
UNPARSED_SAMPLE_CHARS = 300


@dataclasses.dataclass
class ParsedTelemetry:
    events: pa.Table  # EVENT_SCHEMA, in log order
    lines_total: int
    unparsed_lines: int
    unparsed_samples: list[str]


def _split_lines(data: bytes) -> tuple[list[bytes], int]:
    """Non-blank lines (without their newline) and the total line count (an unterminated tail counts)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line for line in lines if line.strip()], len(lines)


def _decode(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r")


def parse_log(source: str | Path | bytes, mapping: TelemetryMapping | None = None) -> ParsedTelemetry:
    """Classify every line of `source` (a log file path, or the log bytes themselves).

    Raises OSError when a path cannot be read; never fails on the content.
    """
    mapping = mapping or TelemetryMapping()
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    lines, lines_total = _split_lines(data)
    if not lines:
        return ParsedTelemetry(EVENT_SCHEMA.empty_table(), lines_total, lines_total, [])
    with tempfile.TemporaryDirectory(prefix="sv-parse-") as folder:
        # The reader gets exactly the lines split here, never the source again: a raw hour file may
        # still be growing while it is parsed.
        path = Path(folder) / "lines.ndjson"
        path.write_bytes(data if len(lines) == lines_total else b"\n".join(lines) + b"\n")
        con = connect()
        try:
            table = con.sql(classification_sql(reader_sql(path, mapping), mapping)).to_arrow_table()
        finally:
            con.close()
    if table.num_rows != len(lines):  # the reader's line splitting is the contract this module relies on
        raise RuntimeError(f"telemetry reader returned {table.num_rows} rows for {len(lines)} lines")
    parsed_mask = table.column("parsed").combine_chunks()
    unparsed_positions = pc.indices_nonzero(pc.invert(parsed_mask)).to_pylist()
    samples = [_decode(lines[i])[:UNPARSED_SAMPLE_CHARS] for i in unparsed_positions[:UNPARSED_SAMPLE_LIMIT]]
    positions = pc.indices_nonzero(parsed_mask).to_pylist()
    events = table.filter(parsed_mask).drop_columns(["parsed"])
    raw: list[str | None] = [None] * events.num_rows
    evidence = pc.fill_null(pc.greater_equal(events.column("level"), mapping.evidence_level), False)
    for row in pc.indices_nonzero(evidence.combine_chunks()).to_pylist():
        raw[row] = _decode(lines[positions[row]])
    events = events.append_column("raw", pa.array(raw, type=pa.string()))
    events = events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA, safe=False)
    return ParsedTelemetry(events, lines_total, lines_total - events.num_rows, samples)
