"""The one telemetry parser: log lines → EVENT_SCHEMA rows (Arrow), by structured fields.

Used by the campaign's hourly ingestion and the monitor. The classification itself is
`telemetry.classify` (DuckDB's JSON reader and the mapping's rules in SQL), which `analyze` aggregates
over directly instead of materializing every line.

The reader skips whitespace-only lines (the same set of characters as `bytes.strip()`); they are still
lines of the log, so `lines_total` counts them and they count as unparsed. `parse_log` removes them
before handing the data to DuckDB, so reader rows line up one-to-one with the remaining lines, which is
how `raw` (kept for lines at or above `evidence_level`) and the unparsed samples are recovered.

Hostile lines never fail the parse and never become events by accident; each is counted by why:
- `not_json`: not a JSON object with a level or a msg (plain text, stack traces, truncated JSON);
- `oversize`: longer than the mapping's `max_line_bytes` (not read at all);
- `bad_time`: a JSON record whose time is missing, not a number/ISO string, infinite, NaN, negative or
  past year 9999;
- `out_of_window`: a JSON record whose time lies outside the window (before the campaign start by more
  than the mapping allows, or after the campaign's last possible hour);
- `invalid_utf8`: lines whose invalid bytes were replaced by U+FFFD before reading; such a line is then
  classified like any other (a level-50 line with bad bytes is still an error line), so this count is
  not part of the unparsed ones.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from staging_validation.schemas.events import EVENT_SCHEMA
from staging_validation.schemas.telemetry_mapping import TelemetryMapping
from staging_validation.telemetry.classify import TimeWindow, classification_sql, connect, reader_sql

UNPARSED_SAMPLE_LIMIT = 10
UNPARSED_SAMPLE_CHARS = 300
# What an oversize line is replaced by for the reader: valid JSON that is no record, so it is unparsed.
_OVERSIZE_PLACEHOLDER = b'"staging-validation: line over max_line_bytes"'
REJECTION_REASONS = ("not_json", "oversize", "bad_time", "out_of_window")


@dataclasses.dataclass
class ParsedTelemetry:
    events: pa.Table  # EVENT_SCHEMA, in log order
    lines_total: int
    unparsed_lines: int
    unparsed_samples: list[str]
    # Unparsed lines by REJECTION_REASONS (blank lines are not JSON), and repaired lines (`invalid_utf8`).
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    invalid_utf8_lines: int = 0
    # Several sources merged (`telemetry.sources.merge_parsed`): name → lines, readable_lines, events.
    by_source: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    @property
    def readable_lines(self) -> int:
        """Lines that are JSON log records, whatever their time: what the readable share counts."""
        return self.lines_total - self.rejected.get("not_json", 0) - self.rejected.get("oversize", 0)


def _split_lines(data: bytes) -> tuple[list[bytes], int]:
    """Non-blank lines (without their newline) and the total line count (an unterminated tail counts)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line for line in lines if line.strip()], len(lines)


def _decode(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r")


def _readable(lines: list[bytes], data: bytes, max_line_bytes: int) -> tuple[list[bytes], int, int]:
    """The lines as the reader gets them: invalid UTF-8 replaced (the reader would reject the whole
    line), oversize lines replaced by a placeholder. (lines, repaired, oversize); the common case — valid
    UTF-8, no long line — is checked on the whole data at once and copies nothing."""
    oversize = sum(len(line) > max_line_bytes for line in lines) if len(data) > max_line_bytes else 0
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    if valid and not oversize:
        return lines, 0, 0
    repaired, out = 0, []
    for line in lines:
        if len(line) > max_line_bytes:
            out.append(_OVERSIZE_PLACEHOLDER)
            continue
        if not valid:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                line = line.decode("utf-8", errors="replace").encode("utf-8")
                repaired += 1
        out.append(line)
    return out, repaired, oversize


def parse_log(
    source: str | Path | bytes, mapping: TelemetryMapping | None = None, window: TimeWindow = TimeWindow()
) -> ParsedTelemetry:
    """Classify every line of `source` (a log file path, or the log bytes themselves); a line is an event
    only when its time is inside `window` (a campaign's: `telemetry.capture.campaign_window`).

    Raises OSError when a path cannot be read; never fails on the content.
    """
    mapping = mapping or TelemetryMapping()
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    lines, lines_total = _split_lines(data)
    if not lines:
        return ParsedTelemetry(EVENT_SCHEMA.empty_table(), lines_total, lines_total, [],
                               {"not_json": lines_total} if lines_total else {})
    readable, repaired, oversize = _readable(lines, data, mapping.max_line_bytes)
    with tempfile.TemporaryDirectory(prefix="sv-parse-") as folder:
        # The reader gets exactly the lines split here, never the source again: a raw hour file may
        # still be growing while it is parsed.
        path = Path(folder) / "lines.ndjson"
        path.write_bytes(data if readable is lines and len(lines) == lines_total else b"\n".join(readable) + b"\n")
        con = connect()
        try:
            table = con.sql(classification_sql(reader_sql(path, mapping), mapping, window)).to_arrow_table()
        finally:
            con.close()
    if table.num_rows != len(lines):  # the reader's line splitting is the contract this module relies on
        raise RuntimeError(f"telemetry reader returned {table.num_rows} rows for {len(lines)} lines")
    parsed_mask = table.column("parsed").combine_chunks()
    record_mask = table.column("record").combine_chunks()
    records = pc.sum(record_mask).as_py() or 0
    unparsed_positions = pc.indices_nonzero(pc.invert(parsed_mask)).to_pylist()
    samples = [_decode(lines[i])[:UNPARSED_SAMPLE_CHARS] for i in unparsed_positions[:UNPARSED_SAMPLE_LIMIT]]
    positions = pc.indices_nonzero(parsed_mask).to_pylist()
    events = table.filter(parsed_mask).drop_columns(["parsed", "record"])
    raw: list[str | None] = [None] * events.num_rows
    evidence = pc.fill_null(pc.greater_equal(events.column("level"), mapping.evidence_level), False)
    for row in pc.indices_nonzero(evidence.combine_chunks()).to_pylist():
        raw[row] = _decode(lines[positions[row]])
    events = events.append_column("raw", pa.array(raw, type=pa.string()))
    events = events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA, safe=False)
    # `time` is null on a row exactly when the record's time is no real moment (see classify).
    timed_json_records = pc.sum(pc.and_(record_mask, pc.is_valid(table.column("time")))).as_py() or 0
    rejected = {
        "not_json": lines_total - records - oversize,
        "oversize": oversize,
        "bad_time": records - timed_json_records,
        "out_of_window": timed_json_records - events.num_rows,
    }
    return ParsedTelemetry(events, lines_total, lines_total - events.num_rows, samples,
                           {reason: n for reason, n in rejected.items() if n}, repaired)
