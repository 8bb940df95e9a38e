"""The alert rules (the runbook's monitor.sh) as a pure function over one window of new telemetry and probe rows.

Rules (thresholds from the policy's `monitor` section): more than 10 error lines → warning; any missing
ContinuityPack → critical; more than 5 requests at or over 2000 ms → warning; an identity merge seen by a
probe or in telemetry → critical. Two more that a person watching would not miss: probe requests that
could not reach the target (a gap in the campaign) and 429 responses (the deployment throttles users); a
request the validator never sent (outcome `dropped` or `not_exposed`) counts in neither. The caller
(`watch.windows`) feeds each 5-minute window once, so nothing is counted twice.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import pandas as pd

from staging_validation.acceptance.gates import event_evidence, identity_merges, merge_evidence, record_evidence
from staging_validation.acceptance.policy import Policy
from staging_validation.collection.validator_gaps import VALIDATOR_FAILED_RULE
from staging_validation.schemas.event_columns import EventKind
from staging_validation.schemas.outcome import Outcome

UNREACHABLE = (Outcome.CONNECTION_ERROR.value, Outcome.TIMEOUT.value)

Severity = Literal["warning", "critical"]


@dataclasses.dataclass
class Alert:
    time_ms: int  # when the condition was first seen in the window
    severity: Severity
    rule: str
    message: str
    count: int
    evidence: list[dict]


def _ms(value: object) -> int:
    return int(pd.Timestamp(value).value // 1_000_000)


def _severity(critical: bool) -> Severity:
    return "critical" if critical else "warning"


def window_alerts(events_window: pd.DataFrame, records_window: pd.DataFrame, policy: Policy) -> list[Alert]:
    rules = policy.monitor
    alerts = []

    errors = events_window[events_window["level"].fillna(0) >= 50].sort_values("time")
    if len(errors) > rules.errors_warning_above:
        alerts.append(Alert(
            _ms(errors["time"].iloc[0]), "warning", "monitor.errors",
            f"{len(errors)} error lines in one monitor window (alert above {rules.errors_warning_above}).",
            len(errors), event_evidence(errors)))

    missing = events_window[events_window["kind"] == EventKind.PACK_MISSING.value].sort_values("time")
    if len(missing):
        first = missing["time"].iloc[0]
        alerts.append(Alert(
            _ms(first), _severity(rules.missing_pack_critical), "monitor.missing_pack",
            f"{len(missing)} request(s) ran without a ContinuityPack; first at {first.isoformat()}.",
            len(missing), event_evidence(missing)))

    completed = events_window[events_window["kind"] == EventKind.REQUEST_COMPLETED.value]
    slow = completed[completed["duration_ms"] >= rules.slow_request_ms].sort_values("time")
    if len(slow) > rules.slow_requests_warning_above:
        alerts.append(Alert(
            _ms(slow["time"].iloc[0]), "warning", "monitor.slow_requests",
            (f"{len(slow)} requests took {rules.slow_request_ms:g} ms or more in one monitor window "
             f"(alert above {rules.slow_requests_warning_above}); slowest {slow['duration_ms'].max():.0f} ms."),
            len(slow), event_evidence(slow.sort_values("duration_ms", ascending=False), by_time=False)))

    # A request the validator never sent (stress drop) is its own shortfall, never "target unreachable";
    # `dropped` also catches rows stored before drops had their own outcome.
    sent = records_window[~records_window["dropped"].fillna(False).astype(bool)]
    unreachable = sent[sent["outcome"].isin(UNREACHABLE)].sort_values("time")
    if len(unreachable) > rules.unreachable_warning_above:
        alerts.append(Alert(
            _ms(unreachable["time"].iloc[0]), "warning", "monitor.target_unreachable",
            (f"{len(unreachable)} probe request(s) could not reach the target "
             f"({', '.join(sorted(unreachable['outcome'].unique()))}); this part of the campaign is a gap."),
            len(unreachable), record_evidence(unreachable)))

    limited_rows = records_window[records_window["outcome"] == Outcome.RATE_LIMITED.value]
    limited_lines = completed[completed["http_status"] == 429]
    limited = len(limited_rows) + len(limited_lines)
    if limited > rules.rate_limited_warning_above:
        first = min(pd.concat([limited_rows["time"], limited_lines["time"]]))
        alerts.append(Alert(
            _ms(first), "warning", "monitor.rate_limited",
            (f"{limited} requests were rate-limited (HTTP 429) in one monitor window "
             f"(alert above {rules.rate_limited_warning_above})."),
            limited, record_evidence(limited_rows) + event_evidence(limited_lines)))

    merges = identity_merges(records_window, events_window).sort_values("time")
    if len(merges):
        alerts.append(Alert(
            _ms(merges["time"].iloc[0]), _severity(rules.identity_merge_critical), "monitor.identity_merge",
            f"Accidental identity merge: {merges['detail'].iloc[0]}.", len(merges), merge_evidence(merges)))
    return alerts


def validator_failed_alert(reason: str, now_ms: int) -> Alert:
    """The critical alert of a campaign stopped as validator_failed: it is not judged."""
    return Alert(time_ms=now_ms, severity="critical", rule=VALIDATOR_FAILED_RULE,
                 message=f"Campaign stopped, not judged: {reason}. The validator cannot serve it; nothing is said "
                         "about the target. Fix the validator, then run the campaign again.",
                 count=1, evidence=[])
