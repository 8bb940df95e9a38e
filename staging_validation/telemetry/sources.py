"""A campaign's telemetry: every source of the target's logs, each captured into its own store with its
own mapping, read back as one stream of events in time order.

The first source is the main one, stored where a single source always was (`<store>/raw/<HH>.log`,
`<store>/cursor.json`); each further source has `<store>/sources/<name>/`. A source's lines are filed by
hour and parsed with its own mapping (level names, time field and format, rules with constants), so
an hour's events are those of every source, merged by time (a stable sort: within one time, sources keep
their order and each source its log order).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from staging_validation.config_files import ConfigError
from staging_validation.schemas.events import EVENT_SCHEMA
from staging_validation.schemas.telemetry_mapping import TelemetryMapping
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.telemetry.aggregates import LineCounts
from staging_validation.telemetry.capture import (
    MAX_POLL_BYTES,
    CapturedChunk,
    CaptureError,
    CaptureLoss,
    LogFollower,
    TelemetrySource,
    campaign_window,
    raw_dir,
    raw_hour_path,
    source_store_dir,
)
from staging_validation.telemetry.classify import TimeWindow
from staging_validation.telemetry.parse import (
    UNPARSED_SAMPLE_LIMIT,
    ParsedTelemetry,
    parse_log,
)


def source_mappings(sources: tuple[TelemetrySource, ...], mapping: TelemetryMapping) -> list[TelemetryMapping]:
    """Each source's mapping from the profile's telemetry section; ConfigError naming the source."""
    found = []
    for source in sources:
        try:
            found.append(mapping.for_source(source.mapping))
        except ValueError as exc:
            raise ConfigError(f"telemetry source {source.name!r}: {exc}") from None
    return found


@dataclasses.dataclass
class _Source:
    source: TelemetrySource
    mapping: TelemetryMapping
    window: TimeWindow
    follower: LogFollower
    key_prefix: str  # of its raw files in a reader's offsets: "" for the main source


def merge_parsed(parts: dict[str, ParsedTelemetry]) -> ParsedTelemetry:
    """One ParsedTelemetry of several sources' (name → parsed): events merged by time, counts summed,
    and `by_source` giving each source's lines and readable share."""
    tables = [part.events for part in parts.values() if part.events.num_rows]
    events = pa.concat_tables(tables) if tables else EVENT_SCHEMA.empty_table()
    if len(tables) > 1:
        events = events.take(pc.sort_indices(events, [("time", "ascending")]))  # Arrow's sort is stable
    rejected: dict[str, int] = {}
    for part in parts.values():
        for reason, n in part.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + n
    return ParsedTelemetry(
        events,
        sum(part.lines_total for part in parts.values()),
        sum(part.unparsed_lines for part in parts.values()),
        [sample for part in parts.values() for sample in part.unparsed_samples][:UNPARSED_SAMPLE_LIMIT],
        rejected,
        sum(part.invalid_utf8_lines for part in parts.values()),
        {name: {"lines": part.lines_total, "readable_lines": part.readable_lines, "events": part.events.num_rows}
         for name, part in parts.items()},
    )


class CampaignTelemetry:
    """The capture and reading of every telemetry source of one campaign (see the module docstring)."""

    def __init__(
        self,
        sources: tuple[TelemetrySource, ...],
        store_dir: str | Path,
        timing: CampaignTiming,
        mapping: TelemetryMapping | None = None,
        *,
        max_poll_bytes: int = MAX_POLL_BYTES,
    ):
        """`mapping` is the target profile's telemetry section (default: the documented one); raises
        ConfigError when a source names a mapping the section does not have."""
        self.store_dir = Path(store_dir)
        self.timing = timing
        self._sources = []
        mappings = source_mappings(sources, mapping or TelemetryMapping())
        for source, source_mapping in zip(sources, mappings, strict=True):
            window = campaign_window(timing, source_mapping)
            store = source_store_dir(store_dir, sources, source)
            follower = LogFollower(source, store, timing, mapping=source_mapping, window=window,
                                   max_poll_bytes=max_poll_bytes)
            prefix = "" if store == self.store_dir else f"sources/{source.name}/"
            self._sources.append(_Source(source, source_mapping, window, follower, prefix))

    @property
    def followers(self) -> list[LogFollower]:
        return [part.follower for part in self._sources]

    @property
    def mappings(self) -> list[TelemetryMapping]:
        """Each source's mapping, the main one first: what `telemetry.aggregates` takes as `mappings`."""
        return [part.mapping for part in self._sources]

    def line_counts(self) -> LineCounts:
        """The lines captured so far of every source, counted as the hourly parse counts them: what a
        campaign's readable share is (`final_metrics(..., lines=...)`)."""
        total = unparsed = readable = 0
        for part in self._sources:
            for raw_file in sorted(raw_dir(part.follower.store_dir).glob("*.log")):
                counts = parse_log(raw_file, part.mapping, part.window).line_counts()
                total, unparsed, readable = total + counts.total, unparsed + counts.unparsed, readable + counts.readable
        return LineCounts(total, unparsed, readable)

    def poll(self) -> CapturedChunk:
        """Capture what every source's log gained. A source that cannot be read does not keep the others
        from being captured; its problem is then raised (CaptureError) once all have been polled."""
        data, lines, hours, warnings, caught_up, errors = [], 0, set(), [], True, []
        label = len(self._sources) > 1
        for part in self._sources:
            prefix = f"telemetry source {part.source.name!r}: " if label else ""
            try:
                chunk = part.follower.poll()
            except CaptureError as exc:
                errors.append(f"{prefix}{exc}")
                continue
            data.append(chunk.data)
            lines += chunk.lines
            hours |= chunk.hours
            warnings += [f"{prefix}{warning}" for warning in chunk.warnings]
            caught_up = caught_up and chunk.caught_up
        if errors:
            raise CaptureError("; ".join(errors + warnings))
        return CapturedChunk(b"".join(data), lines, hours, warnings, caught_up)

    def losses(self) -> list[CaptureLoss]:
        """Every source's recorded losses, each once; with several sources each names its own."""
        label = len(self._sources) > 1
        found = []
        for part in self._sources:
            for loss in part.follower.losses():
                if label:
                    loss = loss.model_copy(update={"key": f"{part.source.name}:{loss.key}",
                                                   "message": f"telemetry source {part.source.name!r}: {loss.message}"})
                found.append(loss)
        return sorted(found, key=lambda loss: loss.time_ms)

    def parse_hour(self, hour: int) -> ParsedTelemetry:
        """The hour's lines of every source, parsed with the source's mapping, merged by time."""
        parts = {}
        for part in self._sources:
            path = raw_hour_path(part.follower.store_dir, hour)
            parts[part.source.name] = parse_log(path if path.exists() else b"", part.mapping, part.window)
        return merge_parsed(parts)

    def read_new(self, offsets: dict[str, int]) -> ParsedTelemetry:
        """What was captured beyond `offsets` (raw file key → bytes already read; updated in place), of
        every source, parsed and merged. The main source's keys are its raw file names, as they always
        were; another source's are prefixed `sources/<name>/`."""
        parts = {}
        for part in self._sources:
            pieces = []
            for raw_file in sorted(raw_dir(part.follower.store_dir).glob("*.log")):
                key = part.key_prefix + raw_file.name
                start, size = offsets.get(key, 0), raw_file.stat().st_size
                if size <= start:
                    continue
                with raw_file.open("rb") as handle:
                    handle.seek(start)
                    pieces.append(handle.read(size - start))
                offsets[key] = size
            parts[part.source.name] = parse_log(b"".join(pieces), part.mapping, part.window)
        return merge_parsed(parts)
