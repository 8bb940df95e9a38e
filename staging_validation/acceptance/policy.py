"""The acceptance policy: every threshold the gates, the decision and the monitor apply.

The defaults reconcile the ops document with the report template (docs: shared/spec/acceptance-policy.md);
the shipped `policy.yaml` spells them out so a user can tighten a threshold and re-judge a stored campaign.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydantic

from staging_validation.config_files import StrictModel, load_yaml_model
from staging_validation.lifecycle import CampaignState
from staging_validation.probes.identity import DEFAULT_CONSECUTIVE_REQUESTS

DEFAULT_POLICY_PATH = Path(__file__).with_name("policy.yaml")

# Gate number -> policy key; the order is the report's and the ops document's.
GATE_KEYS = {
    1: "continuity_pack",
    2: "ambiguity",
    3: "relationship_determinism",
    4: "governor",
    5: "identity",
}


class ContinuityPackGate(StrictModel):
    name: str = "ContinuityPack integrity"
    critical: bool = True
    build_p50_review_ms: float = pydantic.Field(default=200.0, gt=0)
    size_p50_review_bytes: int = pydantic.Field(default=120 * 1024, gt=0)


class AmbiguityGate(StrictModel):
    name: str = "AmbiguityGate rate"
    critical: bool = True
    rate_review: float = pydantic.Field(default=0.05, gt=0, lt=1)
    rate_extend: float = pydantic.Field(default=0.10, gt=0, lt=1)
    false_positive_review: float = pydantic.Field(default=0.01, ge=0, lt=1)
    false_negative_review: float = pydantic.Field(default=0.01, ge=0, lt=1)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> AmbiguityGate:
        if self.rate_review >= self.rate_extend:
            raise ValueError(
                f"rate_review ({self.rate_review}) must be below rate_extend ({self.rate_extend})"
            )
        return self


class DeterminismGate(StrictModel):
    name: str = "Relationship determinism"
    critical: bool = True
    consecutive_requests: int = pydantic.Field(default=DEFAULT_CONSECUTIVE_REQUESTS, ge=2)


class GovernorGate(StrictModel):
    name: str = "Governor regen health"
    critical: bool = False
    zero_regen_pass_above: float = pydantic.Field(default=0.85, gt=0, lt=1)
    zero_regen_fail_below: float = pydantic.Field(default=0.70, gt=0, lt=1)
    regen_p99_extend_ms: float = pydantic.Field(default=3000.0, gt=0)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> GovernorGate:
        if self.zero_regen_fail_below >= self.zero_regen_pass_above:
            raise ValueError(
                f"zero_regen_fail_below ({self.zero_regen_fail_below}) must be below "
                f"zero_regen_pass_above ({self.zero_regen_pass_above})"
            )
        return self


class IdentityGate(StrictModel):
    name: str = "Identity correctness"
    critical: bool = True


class Gates(StrictModel):
    """One entry per gate; an unknown gate name is an error (StrictModel forbids extra keys)."""

    continuity_pack: ContinuityPackGate = ContinuityPackGate()
    ambiguity: AmbiguityGate = AmbiguityGate()
    relationship_determinism: DeterminismGate = DeterminismGate()
    governor: GovernorGate = GovernorGate()
    identity: IdentityGate = IdentityGate()


class EarlyStopRules(StrictModel):
    missing_pack: bool = True
    identity_merge: bool = True
    deploy_step_failed: bool = True  # hour 0's migrate or deploy command failed (the collector applies it)


class MonitorRules(StrictModel):
    window_seconds: float = pydantic.Field(default=300.0, gt=0)
    errors_warning_above: int = pydantic.Field(default=10, ge=0)
    slow_request_ms: float = pydantic.Field(default=2000.0, gt=0)
    slow_requests_warning_above: int = pydantic.Field(default=5, ge=0)
    missing_pack_critical: bool = True
    identity_merge_critical: bool = True
    unreachable_warning_above: int = pydantic.Field(default=0, ge=0)
    rate_limited_warning_above: int = pydantic.Field(default=5, ge=0)


class StressValidity(StrictModel):
    """When the stress hour measures the target's limiter or failures instead of its behaviour under load."""

    # More than this share of the sent stress requests answered 429: the stress result is invalid.
    rate_limited_share_max: float = pydantic.Field(default=0.10, ge=0, le=1)
    # More than this share answered with any other error (4xx, 5xx, timeout, connection error): invalid.
    error_share_max: float = pydantic.Field(default=0.10, ge=0, le=1)


GateConfig = ContinuityPackGate | AmbiguityGate | DeterminismGate | GovernorGate | IdentityGate


class Policy(StrictModel):
    min_samples: int = pydantic.Field(default=50, ge=1)
    coverage_minimum: float = pydantic.Field(default=0.9, gt=0, le=1)
    extension_hours: int = pydantic.Field(default=48, ge=48, le=72)
    gates: Gates = Gates()
    early_stop: EarlyStopRules = EarlyStopRules()
    monitor: MonitorRules = MonitorRules()
    stress: StressValidity = StressValidity()
    release_date: dt.date | None = None
    redeploy_date: dt.date | None = None

    def gate(self, number: int) -> GateConfig:
        return getattr(self.gates, GATE_KEYS[number])


def load_policy(path: str | Path | None = None) -> Policy:
    return load_yaml_model(DEFAULT_POLICY_PATH if path is None else path, Policy)


def campaign_policy(state: CampaignState) -> Policy:
    """The policy a campaign was launched with (the shipped one unless its settings name a file)."""
    return load_policy(state.settings.policy)
