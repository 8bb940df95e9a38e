"""Campaign-relative time, shared by every layer (simulator, probes, telemetry, acceptance, engine)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pydantic

from staging_validation.config_files import StrictModel

# 24 planned hours plus the longest extension the policy allows (72): hours are 0..95. Here, at the bottom,
# because the telemetry capture bounds the times a line may carry by it (the lifecycle re-exports it).
MAX_CAMPAIGN_HOURS = 96


def hour_key(hour: int) -> str:
    return f"{hour:02d}"


class CampaignTiming(StrictModel):
    """Campaign-relative time: hour N spans [start + N*hour_seconds, start + (N+1)*hour_seconds)."""

    start_ms: int
    hour_seconds: float = pydantic.Field(gt=0)

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ms / 1000, tz=UTC)

    def campaign_seconds(self, epoch_s: float | None = None) -> float:
        """Campaign-relative seconds in real hours (3600 per campaign hour), for cadences in the runbook."""
        now = time.time() if epoch_s is None else epoch_s
        return (now - self.start_ms / 1000) * 3600.0 / self.hour_seconds

    def hour_of_ms(self, epoch_ms):
        """The campaign hour of an epoch-ms time, or of each time of a pandas Series or numpy array."""
        hour = (epoch_ms - self.start_ms) // (self.hour_seconds * 1000)
        return int(hour) if isinstance(hour, float) else hour.astype("int64")

    def hour_start_s(self, hour: int) -> float:
        return self.start_ms / 1000 + hour * self.hour_seconds

    def scale(self, campaign_seconds: float) -> float:
        """Wall seconds that a runbook duration (in real seconds) lasts in this campaign."""
        return campaign_seconds * self.hour_seconds / 3600.0
