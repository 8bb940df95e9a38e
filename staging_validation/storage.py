"""Where a campaign's files live, and the two rules every writer follows.

1. A campaign id comes from a user and becomes a folder name, so it is validated here and nowhere else.
2. Files a person or another process reads (reports, decision.json, cursors) are written atomically:
   written beside the target, flushed, then renamed over it, so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from staging_validation.config_files import ConfigError

CAMPAIGN_ID_MAX_LENGTH = 64
_CAMPAIGN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

DATA_ROOT_ENV = "STAGING_VALIDATION_DATA"


def validate_campaign_id(campaign_id: str) -> str:
    if not isinstance(campaign_id, str) or not campaign_id:
        raise ConfigError("campaign id: must be a non-empty string")
    if len(campaign_id) > CAMPAIGN_ID_MAX_LENGTH:
        raise ConfigError(
            f"campaign id {campaign_id[:20]!r}...: longer than {CAMPAIGN_ID_MAX_LENGTH} characters"
        )
    if not _CAMPAIGN_ID_PATTERN.match(campaign_id):
        raise ConfigError(
            f"campaign id {campaign_id!r}: only letters, digits, '-' and '_' are allowed, starting with "
            "a letter or digit (no path separators, no '..')"
        )
    return campaign_id


def default_data_root() -> Path:
    """`data/` of the checkout, unless STAGING_VALIDATION_DATA points elsewhere (tests use a tmp dir)."""
    configured = os.environ.get(DATA_ROOT_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent / "data"


def campaign_dir(data_root: str | Path, campaign_id: str) -> Path:
    return Path(data_root) / "campaigns" / validate_campaign_id(campaign_id)


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
