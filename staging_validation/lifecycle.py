"""One campaign's lifecycle: its registration, typed settings, status and verdict rounds (no Dagster import).

    registered ─► running ─► extended ─► decided         (the verdict of each round; EXTEND adds hours)
        │            │           │    ╲
        │            │           │     ► stopped ─► decided   (an early stop; its verdict follows)
        └────────────┴───────────┴─────► validator_failed    (the validator's own runs kept failing)

`campaign.json` has one writer: the transition functions below (`register_campaign_state`, `mark_running`,
`stop_early`, `record_verdict`, `record_notification`, `fail_validator`, `close_campaign`). Each runs its
read-modify-write under an exclusive fcntl lock on the campaign's lock file, re-reading the state inside
the lock, so the monitor, the probes and the verdict never overwrite each other's change; a transition the
status does not allow raises `IllegalTransition`. Readers use `load_campaign_state`. A state file that
cannot be read or validated is a ConfigError naming the file, and affects only its own campaign.

A verdict round is identified by `round_id`: the hours it judges ("24", "72" after a 48-hour extension)
or "early" after an early stop. A round is recorded once (`record_verdict`): a second record of the same
round returns the first and changes nothing, so re-judging a round never extends or ends the campaign
twice; its notification is recorded once too (`record_notification`).

Settings are typed (`CampaignSettings`, one default each); secrets are never stored, only the names of
the environment variables that hold them.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pydantic
from upath import UPath

from staging_validation.config_files import ConfigError, StrictModel, validate_model
from staging_validation.layout import CampaignLayout
from staging_validation.probes.deploy_steps import DeploySettings
from staging_validation.schemas.timing import MAX_CAMPAIGN_HOURS, CampaignTiming
from staging_validation.storage import atomic_write_text, local_path, validate_campaign_id
from staging_validation.telemetry.capture import TelemetrySource, TelemetrySources

EARLY_ROUND = "early"
DEFAULT_TELEMETRY_PATH = "data/simulator/staging.log"  # where `make simulator` writes its log


# --- settings -------------------------------------------------------------------------------------


class NotificationSettings(StrictModel):
    smtp_host: str | None = None  # no host: email is only written to the outbox
    smtp_port: int = pydantic.Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password_env: str | None = None  # the NAME of the environment variable holding the password
    sender: str = "staging-validation@localhost"
    recipients: list[str] = pydantic.Field(default_factory=list)
    webhook_url_env: str | None = None  # the NAME of the environment variable holding the webhook URL
    retries: int = pydantic.Field(default=2, ge=0, le=10)
    retry_backoff_s: float = pydantic.Field(default=2.0, ge=0)

    def webhook_url(self) -> str | None:
        """The URL from the variable `webhook_url_env` names; None when none is named or it is unset."""
        return (os.environ.get(self.webhook_url_env) or None) if self.webhook_url_env else None

    @pydantic.model_validator(mode="after")
    def _complete(self) -> NotificationSettings:
        if self.smtp_host and not self.recipients:
            raise ValueError("recipients: an SMTP host is configured but nobody would receive the email")
        if self.smtp_username and not self.smtp_password_env:
            raise ValueError("smtp_password_env: name the environment variable that holds the SMTP password")
        return self


class CampaignSettings(StrictModel):
    """What a campaign was launched with (the launch config, secrets excluded)."""

    target_profile: str | None = None  # a target profile YAML; None: the documented contract
    base_url: str | None = None  # overrides the profile's base URL
    # One source (the form older campaigns stored) or several, the main one first.
    telemetry: TelemetrySources = (TelemetrySource(path=DEFAULT_TELEMETRY_PATH),)
    policy: str | None = None  # an acceptance policy YAML; None: the shipped policy
    stress_baseline_rps: float = pydantic.Field(default=5.0, gt=0)  # hour 7 sends twice this rate
    notification: NotificationSettings = NotificationSettings()
    first_verdict_only: bool = False  # the campaign ends at its first verdict: an EXTEND's hours are not run
    deploy: DeploySettings = DeploySettings()  # hour 0's migrate and deploy commands, before the smoke tests


# --- status and records ---------------------------------------------------------------------------


class CampaignStatus(enum.StrEnum):
    REGISTERED = "registered"  # launched; its collector has not started the campaign clock yet
    RUNNING = "running"  # its collector started the clock: hour 0 began
    EXTENDED = "extended"  # a verdict round asked for more hours, which are being run
    STOPPED = "stopped"  # a critical failure ended it early; its verdict follows
    DECIDED = "decided"  # a verdict ended it
    VALIDATOR_FAILED = "validator_failed"  # the validator could not run it; nothing is said about the target

    @property
    def collecting(self) -> bool:
        """Its hours are still due (probes and telemetry are collected)."""
        return self in (CampaignStatus.REGISTERED, CampaignStatus.RUNNING, CampaignStatus.EXTENDED)

    @property
    def final(self) -> bool:
        """Nothing more happens to it: no hour, no verdict."""
        return self in (CampaignStatus.DECIDED, CampaignStatus.VALIDATOR_FAILED)


_NEXT_STATUSES: dict[CampaignStatus, set[CampaignStatus]] = {
    CampaignStatus.REGISTERED: {CampaignStatus.RUNNING, CampaignStatus.EXTENDED, CampaignStatus.STOPPED,
                                CampaignStatus.DECIDED, CampaignStatus.VALIDATOR_FAILED},
    CampaignStatus.RUNNING: {CampaignStatus.EXTENDED, CampaignStatus.STOPPED, CampaignStatus.DECIDED,
                             CampaignStatus.VALIDATOR_FAILED},
    CampaignStatus.EXTENDED: {CampaignStatus.EXTENDED, CampaignStatus.STOPPED, CampaignStatus.DECIDED,
                              CampaignStatus.VALIDATOR_FAILED},
    CampaignStatus.STOPPED: {CampaignStatus.DECIDED, CampaignStatus.VALIDATOR_FAILED},
    CampaignStatus.DECIDED: set(),
    CampaignStatus.VALIDATOR_FAILED: set(),
}


class IllegalTransition(RuntimeError):
    """A transition the campaign's current status does not allow (e.g. extending a decided campaign)."""


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class EarlyStop(StrictModel):
    """A critical failure that ends a campaign before its planned end."""

    gate: int  # 0: deploy verification
    rule: str  # e.g. early_stop.missing_pack
    first_seen: str  # ISO time of the first offending line or probe row
    hour: int
    reason: str
    evidence: list[dict] = pydantic.Field(default_factory=list)

    @pydantic.field_validator("evidence", mode="before")
    @classmethod
    def _stored_as_json(cls, value: Any) -> Any:
        return _json_safe(value)  # evidence quotes timestamps and numpy numbers


class ValidatorFailure(StrictModel):
    reason: str
    at_ms: int


class Delivery(StrictModel):
    """What happened to a message: overall and per channel, and its outbox copy."""

    status: str  # "sent" | "failed: <reason>" | "not-configured"
    channels: dict[str, str]
    eml: str
    sent_at_ms: int


class RoundSpec(StrictModel):
    """What a verdict round judges: everything its decision depends on besides the stored data."""

    round_id: str
    judged_hours: int  # hours 0..judged_hours-1
    extension_count: int  # extensions that ran before this round
    early_stop: EarlyStop | None = None


class VerdictRound(StrictModel):
    round_id: str
    judged_hours: int
    extension_count: int
    decision: str  # the acceptance layer's decision (ACCEPT | EXTEND | REJECT)
    rule: str
    extend_hours: int = 0  # hours this decision adds to the campaign
    decided_at_ms: int
    notified: Delivery | None = None  # set once, when its message has been delivered (or tried)


class CampaignState(StrictModel):
    campaign: str  # a folder name under the data root, so validated like every campaign id
    created_at_ms: int
    timing: CampaignTiming
    planned_hours: int = pydantic.Field(default=24, ge=1, le=MAX_CAMPAIGN_HOURS)
    status: CampaignStatus = CampaignStatus.REGISTERED
    extension_count: int = 0
    extension_hours: int = 0  # hours added by extensions so far
    early_stop: EarlyStop | None = None
    validator_failure: ValidatorFailure | None = None
    rounds: list[VerdictRound] = pydantic.Field(default_factory=list)
    settings: CampaignSettings = CampaignSettings()

    @pydantic.field_validator("campaign")
    @classmethod
    def _valid_campaign_id(cls, value: str) -> str:
        return validate_campaign_id(value)

    @property
    def total_hours(self) -> int:
        return self.planned_hours + self.extension_hours

    @property
    def stopped_at_hour(self) -> int | None:
        return None if self.early_stop is None else self.early_stop.hour

    def verdict_round(self, round_id: str) -> VerdictRound | None:
        return next((r for r in self.rounds if r.round_id == round_id), None)

    def current_round(self) -> RoundSpec:
        """The round the campaign is in: up to its early stop, else over its planned plus extension hours."""
        if self.early_stop is not None:
            return RoundSpec(round_id=EARLY_ROUND, judged_hours=self.early_stop.hour + 1,
                             extension_count=self.extension_count, early_stop=self.early_stop)
        return RoundSpec(round_id=str(self.total_hours), judged_hours=self.total_hours,
                         extension_count=self.extension_count)

    def current_round_due(self, now_s: float | None = None) -> bool:
        """An early stop is judged at once; a round over hours, once its last hour has ended."""
        return self.early_stop is not None or self.timing.campaign_seconds(now_s) >= self.total_hours * 3600

    def round_to_judge(self, requested: str | None = None, now_s: float | None = None) -> RoundSpec:
        """The round a verdict run judges: the one it names (a recorded round, or the current one once
        due), else the current round once due, else the latest recorded round (re-judging during an
        extension re-judges the round that asked for it). ConfigError when no such round is due."""
        current = self.current_round()
        if requested is None and self.status.final and self.rounds:
            requested = self.rounds[-1].round_id  # an ended campaign has no round after its last
        if requested is None:
            if self.current_round_due(now_s):
                return current
            if not self.rounds:
                hour = int(self.timing.campaign_seconds(now_s) // 3600)
                raise ConfigError(f"campaign {self.campaign}: no verdict round is due yet (hour {hour} of "
                                  f"{self.total_hours}); the first verdict runs after hour {self.total_hours - 1}")
            requested = self.rounds[-1].round_id
        recorded = self.verdict_round(requested)
        if recorded is not None:
            return RoundSpec(round_id=recorded.round_id, judged_hours=recorded.judged_hours,
                             extension_count=recorded.extension_count,
                             early_stop=self.early_stop if recorded.round_id == EARLY_ROUND else None)
        if requested == current.round_id:
            if not self.current_round_due(now_s):
                raise ConfigError(f"campaign {self.campaign}: verdict round {requested} is not due yet (it "
                                  f"judges hours 0-{current.judged_hours - 1})")
            return current
        if self.early_stop is not None and requested == str(self.total_hours):
            # An early stop came while this round's verdict run waited: the run judges the early round
            # (recorded once, like any re-run), rather than fail for the validator's timing.
            return current
        known = ", ".join([r.round_id for r in self.rounds] + [current.round_id])
        raise ConfigError(f"campaign {self.campaign}: no verdict round {requested!r} (rounds: {known})")


# --- reading --------------------------------------------------------------------------------------


def load_campaign_state(data_root: str | os.PathLike | UPath, campaign_id: str) -> CampaignState:
    """The stored state; ConfigError naming the file if it is missing, unreadable or invalid."""
    path = CampaignLayout.of(data_root, campaign_id).state_file
    if not path.exists():
        raise ConfigError(f"campaign {campaign_id!r}: no campaign registered at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable campaign state (truncated or not JSON): {exc}") from None
    state = validate_model(data, CampaignState, f"{path}: invalid campaign state")
    if state.campaign != campaign_id:
        # An edited file would otherwise make every reader work in another campaign's folder.
        raise ConfigError(f"{path}: names campaign {state.campaign!r}, but is the registration of {campaign_id!r}")
    return state


# --- writing: the transitions ---------------------------------------------------------------------


@contextlib.contextmanager
def _locked(layout: CampaignLayout) -> Iterator[None]:
    lock_path = local_path(layout.state_lock_file)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_edge(state: CampaignState, new: CampaignStatus, what: str) -> None:
    if new != state.status and new not in _NEXT_STATUSES[state.status]:
        raise IllegalTransition(f"campaign {state.campaign}: cannot {what}: it is {state.status.value}")


def transition(data_root: str | os.PathLike | UPath, campaign_id: str,
               change: Callable[[CampaignState], CampaignState], what: str) -> CampaignState:
    """Apply `change` to the current state under the campaign's lock and store the result; `what` names
    the change in an IllegalTransition. Returns the stored state (unchanged if `change` returns it)."""
    layout = CampaignLayout.of(data_root, campaign_id)
    with _locked(layout):
        state = load_campaign_state(data_root, campaign_id)
        changed = change(state)
        if changed is state:
            return state
        _check_edge(state, changed.status, what)
        if changed.campaign != state.campaign:
            raise IllegalTransition(f"campaign {state.campaign}: cannot {what}: it would rename the campaign")
        atomic_write_text(layout.state_file, changed.model_dump_json(indent=2))
        return changed


def register_campaign_state(data_root: str | os.PathLike | UPath, state: CampaignState) -> CampaignState:
    """Write a new campaign's registration; ConfigError if the id is already registered."""
    layout = CampaignLayout.of(data_root, state.campaign)
    if state.status != CampaignStatus.REGISTERED or state.rounds:
        raise IllegalTransition(f"campaign {state.campaign}: a new registration must be registered, with no round")
    with _locked(layout):
        if layout.state_file.exists():
            raise ConfigError(f"campaign {state.campaign!r}: already registered; choose a new id")
        atomic_write_text(layout.state_file, state.model_dump_json(indent=2))
    return state


def mark_running(data_root: str | os.PathLike | UPath, campaign_id: str, now_ms: int | None = None) -> CampaignState:
    """registered → running, hour 0 beginning now (its collector calls it once ready, so the first hour
    never depends on how long launching the collector took); any later status is left as it is."""
    def change(state: CampaignState) -> CampaignState:
        if state.status != CampaignStatus.REGISTERED:
            return state
        start_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        return state.model_copy(update={"status": CampaignStatus.RUNNING,
                                        "timing": state.timing.model_copy(update={"start_ms": start_ms})})
    return transition(data_root, campaign_id, change, "mark it running")


def stop_early(data_root: str | os.PathLike | UPath, campaign_id: str, stop: EarlyStop) -> CampaignState:
    """A collecting campaign → stopped with `stop`. The first stop wins: a stopped campaign keeps its
    stop; a decided or validator-failed one raises IllegalTransition."""
    def change(state: CampaignState) -> CampaignState:
        if state.status == CampaignStatus.STOPPED:
            return state
        return state.model_copy(update={"status": CampaignStatus.STOPPED, "early_stop": stop})
    return transition(data_root, campaign_id, change, f"stop it early ({stop.rule})")


def record_verdict(data_root: str | os.PathLike | UPath, campaign_id: str,
                   verdict: VerdictRound) -> tuple[CampaignState, VerdictRound]:
    """Record a round's decision once and apply it: an EXTEND that adds hours lengthens the campaign
    (→ extended), any other decision ends it (→ decided; a validator-failed campaign stays so).

    A round already recorded is returned as it was, and nothing changes: (state, the round as recorded)."""
    def change(state: CampaignState) -> CampaignState:
        if state.verdict_round(verdict.round_id) is not None:
            return state
        if state.status == CampaignStatus.DECIDED:
            raise IllegalTransition(f"campaign {state.campaign}: cannot record round {verdict.round_id}: it was "
                                    f"decided in round {state.rounds[-1].round_id if state.rounds else '?'}")
        update: dict[str, Any] = {"rounds": [*state.rounds, verdict]}
        if state.status == CampaignStatus.VALIDATOR_FAILED:
            pass
        elif verdict.extend_hours > 0:
            update |= {"status": CampaignStatus.EXTENDED, "extension_count": state.extension_count + 1,
                       "extension_hours": state.extension_hours + verdict.extend_hours}
            if state.total_hours + verdict.extend_hours > MAX_CAMPAIGN_HOURS:
                raise IllegalTransition(f"campaign {state.campaign}: cannot extend past {MAX_CAMPAIGN_HOURS} hours")
        else:
            update["status"] = CampaignStatus.DECIDED
        return state.model_copy(update=update)
    what = f"record round {verdict.round_id} ({verdict.decision}, {verdict.rule})"
    state = transition(data_root, campaign_id, change, what)
    recorded = state.verdict_round(verdict.round_id)
    assert recorded is not None  # the change above adds it unless it was there
    return state, recorded


def record_notification(data_root: str | os.PathLike | UPath, campaign_id: str, round_id: str,
                        delivery: Delivery) -> VerdictRound:
    """Record the delivery of a round's message once; a round already notified keeps its first record."""
    def change(state: CampaignState) -> CampaignState:
        recorded = state.verdict_round(round_id)
        if recorded is None:
            raise IllegalTransition(f"campaign {state.campaign}: round {round_id} has no recorded verdict to notify")
        if recorded.notified is not None:
            return state
        rounds = [r.model_copy(update={"notified": delivery}) if r.round_id == round_id else r
                  for r in state.rounds]
        return state.model_copy(update={"rounds": rounds})
    state = transition(data_root, campaign_id, change, f"record the notification of round {round_id}")
    recorded = state.verdict_round(round_id)
    assert recorded is not None
    return recorded


def fail_validator(data_root: str | os.PathLike | UPath, campaign_id: str, reason: str,
                   now_ms: int | None = None) -> CampaignState:
    """→ validator_failed: the validator's own faults ended the campaign; the first reason is kept."""
    def change(state: CampaignState) -> CampaignState:
        if state.status == CampaignStatus.VALIDATOR_FAILED:
            return state
        failure = ValidatorFailure(reason=reason, at_ms=now_ms if now_ms is not None else int(time.time() * 1000))
        return state.model_copy(update={"status": CampaignStatus.VALIDATOR_FAILED, "validator_failure": failure})
    return transition(data_root, campaign_id, change, "mark the validator failed")


def close_campaign(data_root: str | os.PathLike | UPath, campaign_id: str) -> CampaignState:
    """→ decided after its latest recorded round, even if that round extended it (the rehearsal's
    `first_verdict_only`: the extension hours are not played). A campaign with no round raises."""
    def change(state: CampaignState) -> CampaignState:
        if not state.rounds:
            raise IllegalTransition(f"campaign {state.campaign}: cannot close it before its first verdict")
        if state.status == CampaignStatus.DECIDED:
            return state
        return state.model_copy(update={"status": CampaignStatus.DECIDED})
    return transition(data_root, campaign_id, change, "close it after its verdict")
