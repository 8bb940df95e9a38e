"""Simulator fault profiles: a baseline of behaviour knobs plus fault windows in campaign time.

A profile is `knobs` (overrides of the healthy baseline) and `faults`, each a window
`[at_hour, at_hour + duration_hours)` of campaign hours during which some knobs take other values.
Every named fault of the issue is such a window (an outage is `refuse_connections: true`, log rotation
is `rotate_every_hours`), so a user composes new scenarios by editing YAML, not code.
The shipped file is `profiles.yaml` beside this module; `--profile-file` loads an edited copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pydantic

from staging_validation.config_files import (
    ConfigError,
    StrictModel,
    load_yaml_model,
    validate_model,
)

DEFAULT_PROFILE_FILE = Path(__file__).resolve().parent / "profiles.yaml"

Probability = Annotated[float, pydantic.Field(ge=0.0, le=1.0)]


class MsRange(StrictModel):
    """A latency drawn uniformly from [low, high] milliseconds."""

    low: float = pydantic.Field(ge=0)
    high: float = pydantic.Field(ge=0)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> MsRange:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


class Knobs(StrictModel):
    """How the simulated service behaves at one moment; the defaults are the healthy baseline."""

    organic_ambiguity_rate: Probability = 0.02
    organic_identity_share: Probability = 0.05
    organic_users: int = pydantic.Field(default=200, ge=1)
    pack_ms: MsRange = MsRange(low=6, high=25)
    pack_size_kb: MsRange = MsRange(low=18, high=90)
    ambiguity_check_ms: MsRange = MsRange(low=4, high=15)
    clarification_ms: MsRange = MsRange(low=8, high=20)
    relationship_ms: MsRange = MsRange(low=2, high=12)
    llm_ms: MsRange = MsRange(low=150, high=600)
    first_attempt_pass_rate: Probability = 0.92
    regen_pass_rate: Probability = 0.75
    max_attempts: int = pydantic.Field(default=5, ge=1)
    regen_ms_median: float = pydantic.Field(default=320, gt=0)
    regen_ms_sigma: float = pydantic.Field(default=0.35, ge=0)
    missing_pack_rate: Probability = 0.0
    missing_pack_max: int | None = pydantic.Field(default=None, ge=1)
    fallback_rate: Probability = 0.0
    fallback_reason: str = "pack_store_timeout"
    relationship_flap_share: Probability = 0.0
    identity_merge: bool = False
    error_rate: Probability = 0.0
    slow_share: Probability = 0.0
    slow_ms: MsRange = MsRange(low=2000, high=3500)
    rate_limit_rps: float | None = pydantic.Field(default=None, gt=0)
    refuse_connections: bool = False
    noise_rate: Probability = 0.0
    rotate_every_hours: float | None = pydantic.Field(default=None, gt=0)


class FaultWindow(StrictModel):
    name: str = pydantic.Field(min_length=1)
    at_hour: float = pydantic.Field(ge=0)
    duration_hours: float | None = pydantic.Field(default=None, gt=0)  # None: until the campaign ends
    set: dict[str, object] = pydantic.Field(min_length=1)

    @pydantic.field_validator("set")
    @classmethod
    def _known_knobs(cls, value: dict[str, object]) -> dict[str, object]:
        unknown = sorted(set(value) - set(Knobs.model_fields))
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(unknown)}")
        return value

    def end_hour(self) -> float:
        return float("inf") if self.duration_hours is None else self.at_hour + self.duration_hours


class SimProfile(StrictModel):
    description: str = ""
    knobs: dict[str, object] = pydantic.Field(default_factory=dict)
    faults: list[FaultWindow] = pydantic.Field(default_factory=list)


class ProfileFile(StrictModel):
    profiles: dict[str, SimProfile] = pydantic.Field(min_length=1)


class ResolvedProfile:
    """A profile with its knobs validated: `knobs_at(hour)` applies the windows open at that hour."""

    def __init__(self, name: str, profile: SimProfile, source: str):
        self.name = name
        self.faults = profile.faults
        self.baseline = validate_model(profile.knobs, Knobs, f"{source}: profiles.{name}.knobs")
        self._knobs_by_open_set: dict[tuple[int, ...], Knobs] = {}
        for index, fault in enumerate(self.faults):
            # Validate every window's values now, so a bad value fails at startup, not at hour 12.
            validate_model(
                {**self.baseline.model_dump(), **fault.set},
                Knobs,
                f"{source}: profiles.{name}.faults.{index}.set",
            )

    def open_faults(self, hour: float) -> tuple[int, ...]:
        return tuple(i for i, f in enumerate(self.faults) if f.at_hour <= hour < f.end_hour())

    def knobs_at(self, hour: float) -> Knobs:
        open_set = self.open_faults(hour)
        knobs = self._knobs_by_open_set.get(open_set)
        if knobs is None:
            merged = self.baseline.model_dump()
            for index in open_set:  # later windows win where two set the same knob
                merged.update(self.faults[index].set)
            knobs = Knobs.model_validate(merged)
            self._knobs_by_open_set[open_set] = knobs
        return knobs


def load_profile(name: str, path: str | Path | None = None) -> ResolvedProfile:
    source_path = Path(path) if path is not None else DEFAULT_PROFILE_FILE
    profile_file = load_yaml_model(source_path, ProfileFile)
    if name not in profile_file.profiles:
        known = ", ".join(sorted(profile_file.profiles))
        raise ConfigError(f"{source_path}: unknown profile {name!r} (known: {known})")
    return ResolvedProfile(name, profile_file.profiles[name], str(source_path))
