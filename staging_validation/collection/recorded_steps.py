"""The probe steps a campaign recorded: one write-once file per step per hour (no Dagster import).

    campaigns/<id>/probes/<HH>/<step>.parquet

A file holds the step's RECORD_SCHEMA rows (their own send times) and, in its schema metadata, the
step's `StepOutcome`: whether it ran (or why not), when it started and ended, whether it passed. It is
written once, when the step ends, to a temporary file that is fsynced and then hard-linked into place
(the link fails if the step is already recorded, so a second writer can never replace the first), and
never rewritten: whoever reads an hour, any number of times, gets the same rows.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import time
from enum import StrEnum
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
from upath import UPath

from staging_validation.config_files import ConfigError, StrictModel
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignState
from staging_validation.plan import ProbeStep, plan_for_hour
from staging_validation.schemas.probe_records import RECORD_SCHEMA, ProbeRecord, records_to_table
from staging_validation.storage import DataPath, local_path

OUTCOME_METADATA_KEY = b"staging_validation.step_outcome"


class StepStatus(StrEnum):
    RAN = "ran"
    NOT_RUN = "not_run"  # the validator could not run it in its hour: a gap of ours, never the target's


class StepOutcome(StrictModel):
    hour: int
    step: ProbeStep
    status: StepStatus
    ended_ms: int  # when the outcome was recorded
    started_ms: int | None = None  # None when the step did not run
    passed: bool | None = None
    failures: list[str] = pydantic.Field(default_factory=list)
    summary: dict = pydantic.Field(default_factory=dict)  # the probe's figures (rates, counts, percentiles)
    reason: str = ""  # why a step did not run
    makeup_of: int | None = None  # a make-up: the earlier hour whose missed step this plays again


def probe_steps_dir(data_root: str | Path, campaign: str) -> Path:
    """Local: recording needs a local filesystem's fsync and hard links."""
    return local_path(CampaignLayout.of(data_root, campaign).probe_steps_dir)


def _hour_dir(data_root: str | os.PathLike | UPath, campaign: str, hour: int) -> DataPath:
    """Read through the layout, so a verdict over a `UPath` data root reads the records too."""
    return CampaignLayout.of(data_root, campaign).probe_steps_hour_dir(hour)


def step_path(data_root: str | Path, campaign: str, hour: int, step: ProbeStep) -> Path:
    """Local: recording needs a local filesystem's fsync and hard links."""
    return local_path(_hour_dir(data_root, campaign, hour)) / f"{step.value}.parquet"


def record_step(data_root: str | Path, campaign: str, outcome: StepOutcome, records: list[ProbeRecord]) -> bool:
    """Store the step durably, once. False (and nothing written) if the step of that hour is already recorded."""
    path = step_path(data_root, campaign, outcome.hour, outcome.step)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    table = records_to_table(records)
    metadata = {OUTCOME_METADATA_KEY: outcome.model_dump_json().encode("utf-8")}
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(metadata), buffer)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # readable by a reviewer group, like the rest of the campaign folder
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return False
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the new name survives a crash too
    finally:
        os.close(directory)
    return True


def _step_files(folder: DataPath) -> list[DataPath]:
    """The hour's step files, in name order."""
    files: list[DataPath] = list(folder.glob("*.parquet"))
    return sorted(files, key=lambda path: path.name)


def _read_outcome(path: DataPath) -> StepOutcome:
    try:
        with path.open("rb") as handle:
            metadata = pq.read_schema(handle).metadata or {}
        return StepOutcome.model_validate_json(metadata[OUTCOME_METADATA_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise ConfigError(f"{path}: unreadable probe step record: {exc}") from None


def hour_outcomes(data_root: str | os.PathLike | UPath, campaign: str, hour: int) -> dict[ProbeStep, StepOutcome]:
    """The recorded steps of one hour, by step."""
    folder = _hour_dir(data_root, campaign, hour)
    outcomes = {}
    for path in _step_files(folder):
        outcome = _read_outcome(path)
        outcomes[outcome.step] = outcome
    return outcomes


def _read_rows(path: DataPath) -> pa.Table:
    with path.open("rb") as handle:
        return pq.read_table(handle, schema=RECORD_SCHEMA)


def hour_records(data_root: str | os.PathLike | UPath, campaign: str, hour: int) -> pa.Table:
    """Every probe row the hour's recorded steps hold (RECORD_SCHEMA), step files in name order."""
    folder = _hour_dir(data_root, campaign, hour)
    tables = [_read_rows(path) for path in _step_files(folder)]
    if not tables:
        return RECORD_SCHEMA.empty_table()
    return pa.concat_tables(tables)


@dataclasses.dataclass(frozen=True)
class HourCollection:
    """What the plan asked of one campaign hour that has started, and what was recorded of it."""

    hour: int
    planned: tuple[ProbeStep, ...]
    recorded: dict[ProbeStep, StepOutcome]  # the records of its own planned steps, ran or not
    makeups: dict[ProbeStep, StepOutcome]  # steps of earlier hours played again in this one, ran or not
    over: bool  # the hour has ended

    @property
    def ran(self) -> tuple[ProbeStep, ...]:
        return tuple(step for step, o in self.recorded.items() if o.status is StepStatus.RAN)

    @property
    def not_run(self) -> dict[ProbeStep, str]:
        """Planned steps recorded as not run, with the reason."""
        return {step: o.reason for step, o in self.recorded.items() if o.status is StepStatus.NOT_RUN}

    @property
    def unrecorded(self) -> tuple[ProbeStep, ...]:
        """Planned steps with no record at all (the collector was not running, or is still at it)."""
        return tuple(step for step in self.planned if step not in self.recorded)


def collection_by_hour(data_root: str | os.PathLike | UPath, state: CampaignState,
                       now_s: float | None = None) -> list[HourCollection]:
    """Per campaign hour that has started (up to an early stop's hour), its planned and recorded steps."""
    now_s = time.time() if now_s is None else now_s
    last = state.stopped_at_hour if state.stopped_at_hour is not None else state.total_hours - 1
    hours = []
    for hour in range(last + 1):
        if state.timing.hour_start_s(hour) > now_s:
            break
        outcomes = hour_outcomes(data_root, state.campaign, hour)
        hours.append(HourCollection(
            hour=hour,
            planned=plan_for_hour(hour, state.planned_hours).steps,
            recorded={step: o for step, o in outcomes.items() if o.makeup_of is None},
            makeups={step: o for step, o in outcomes.items() if o.makeup_of is not None},
            over=state.timing.hour_start_s(hour + 1) <= now_s,
        ))
    return hours
