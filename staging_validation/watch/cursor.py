"""Where a campaign's telemetry watch resumes: its cursor file, read with an error naming campaign and file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from staging_validation.config_files import ConfigError
from staging_validation.storage import atomic_write_text


@dataclasses.dataclass
class WatchCursor:
    raw_offsets: dict[str, int] = dataclasses.field(default_factory=dict)  # raw hour file -> bytes read
    record_mtimes: dict[str, float] = dataclasses.field(default_factory=dict)  # probe partition -> mtime seen
    alerted: list[str] = dataclasses.field(default_factory=list)  # "<rule>@<window>" already raised
    # The open-window buffer that goes with these offsets: each commit writes a new one, then the cursor.
    open_windows: str = "open_windows.parquet"


def load_watch_cursor(path: Path, campaign: str) -> WatchCursor:
    """The stored cursor (a fresh one if there is none); a truncated or edited file is a ConfigError naming
    the campaign and the file: that campaign is not watched until it is repaired, the others are."""
    if not path.exists():
        return WatchCursor()
    try:
        return WatchCursor(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"campaign {campaign}: watch cursor {path} is unreadable (truncated or edited): "
                          f"{exc}; move it aside to watch the campaign's telemetry again from its start") from None


def save_watch_cursor(path: Path, cursor: WatchCursor) -> None:
    atomic_write_text(path, json.dumps(dataclasses.asdict(cursor)))
