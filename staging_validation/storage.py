"""The rules every writer of a campaign's files follows.

1. A campaign id comes from a user and becomes a folder name, so it is validated here and nowhere else.
2. Files a person or another process reads (reports, decision.json, cursors, Parquet) are written
   atomically: written beside the target, flushed, then renamed over it, so a crash never leaves half a
   file. They get the permissions of any new file (0666 less the umask, e.g. 0644), so a reviewer group or
   another service account can read them.

A data root may be a `UPath` (e.g. `memory://` or an object store): such paths are written whole in one
put, which those stores make atomic; only local paths take the rename route.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from upath import UPath

from staging_validation.config_files import ConfigError

CAMPAIGN_ID_MAX_LENGTH = 64
_CAMPAIGN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
NEW_FILE_MODE = 0o666  # the kernel takes the umask off, as for any file a program creates

DATA_ROOT_ENV = "STAGING_VALIDATION_DATA"

# A data root: a local path, or a UPath of any fsspec filesystem.
DataPath = Path | UPath


def validate_file_name(value: str, what: str) -> str:
    """`value`, if it is safe as one file or folder name; else a ConfigError that calls it `what`."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what}: must be a non-empty string")
    if len(value) > CAMPAIGN_ID_MAX_LENGTH:
        raise ConfigError(f"{what} {value[:20]!r}...: longer than {CAMPAIGN_ID_MAX_LENGTH} characters")
    if not _CAMPAIGN_ID_PATTERN.match(value):
        raise ConfigError(
            f"{what} {value!r}: only letters, digits, '-' and '_' are allowed, starting with "
            "a letter or digit (no path separators, no '..')"
        )
    return value


def validate_campaign_id(campaign_id: str) -> str:
    return validate_file_name(campaign_id, "campaign id")


def default_data_root() -> Path:
    """`data/` of the checkout, unless STAGING_VALIDATION_DATA points elsewhere (tests use a tmp dir)."""
    configured = os.environ.get(DATA_ROOT_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent / "data"


def as_data_path(path: str | os.PathLike | UPath) -> DataPath:
    """A local `Path` for a plain or `file://` path (locks and renames need one), else the UPath."""
    if isinstance(path, UPath):
        if path.protocol in ("", "file", "local"):
            return Path(path.path)
        return path
    text = os.fspath(path)
    if "://" in text:
        return as_data_path(UPath(text))
    return Path(text)


def is_local(path: DataPath) -> bool:
    return not isinstance(path, UPath) or path.protocol in ("", "file", "local")


def local_path(path: str | os.PathLike | UPath) -> Path:
    """The local `Path` of what must live on the local disk (locks, cursors, the outbox); a ConfigError
    naming the path if it is on another filesystem."""
    data_path = as_data_path(path)
    if isinstance(data_path, Path):
        return data_path
    raise ConfigError(f"{data_path}: must be on the local filesystem (locks and the live campaign files are)")


def atomic_write_bytes(path: str | os.PathLike | UPath, payload: bytes) -> None:
    data_path = as_data_path(path)
    if not isinstance(data_path, Path):
        data_path.parent.mkdir(parents=True, exist_ok=True)
        data_path.write_bytes(payload)
        return
    path = data_path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: it creates 0600 files, which nobody but this account could read.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike | UPath, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
