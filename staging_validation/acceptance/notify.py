"""The decision and alert messages, and their delivery: SMTP, an optional JSON webhook, and always an
`.eml` copy in the campaign's outbox recording what happened to it, so no message is ever lost.

Delivery problems are retried, then recorded; they never raise, because a failed email must not lose
the verdict it carries. The SMTP password and the webhook URL (which often embeds a token) are read
from the environment variables the settings name, and a webhook failure is recorded by status code or
exception class only, because httpx's error text quotes the URL.
"""

from __future__ import annotations

import dataclasses
import os
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from copy import deepcopy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import httpx

from staging_validation.acceptance.alert_rules import Alert
from staging_validation.acceptance.decision import Decision
from staging_validation.acceptance.gates import GateResult
from staging_validation.acceptance.policy import Policy
from staging_validation.lifecycle import Delivery, NotificationSettings
from staging_validation.storage import atomic_write_bytes

SMTP_TIMEOUT_S = 10.0
WEBHOOK_TIMEOUT_S = 10.0
TO_BE_SCHEDULED = "on a date to be scheduled"


@dataclasses.dataclass
class Message:
    subject: str
    body: str


# --- composing ----------------------------------------------------------------------------------


def _hours_text(observed_hours: list[int]) -> str:
    if not observed_hours:
        return "no hour had data"
    return f"{len(observed_hours)} hour(s) with data, hours {min(observed_hours)}–{max(observed_hours)}"


def _date_text(value: object) -> str:
    return f"on {value}" if value is not None else TO_BE_SCHEDULED


def _gate_lines(gates: list[GateResult]) -> list[str]:
    return [f"  gate {g.gate} {g.name}{' (critical)' if g.critical else ''}: {g.status} [{g.rule}] — {g.reason}"
            for g in gates]


def _headline(decision: Decision, gates: list[GateResult], policy: Policy, observed_hours: list[int]) -> str:
    deciding = [g for g in gates if g.gate in decision.deciding_gates]
    if decision.decision == "ACCEPT":
        return f"Staging passed. Releasing to production {_date_text(policy.release_date)}."
    if decision.decision == "INCONCLUSIVE":
        return ("Staging not judged: the validator failed to collect the evidence; nothing stands against the "
                "target. Run the campaign again once the validator is fixed.")
    if decision.decision == "EXTEND":
        what = (" ".join(f"{g.name}: {g.reason}" for g in deciding)
                or f"over more hours of data. {decision.reason}")
        if decision.extend_hours:
            return f"Staging extended {decision.extend_hours} hours. Will re-measure {what}"
        return (f"Staging extended once already ({_hours_text(observed_hours)}); a person must decide whether "
                f"to extend again. Will re-measure {what}")
    if deciding:
        where = ", ".join(f"gate {g.gate} ({g.name})" for g in deciding)
        cause = " ".join(g.reason for g in deciding)
    else:
        where, cause = "deploy verification", decision.reason
    return f"Staging failed at {where}. Root cause: {cause} Redeploying {_date_text(policy.redeploy_date)}."


def compose_decision_message(decision: Decision, gates: list[GateResult], policy: Policy, campaign: str,
                             observed_hours: list[int]) -> Message:
    lines = [_headline(decision, gates, policy, observed_hours), "",
             f"Campaign: {campaign}", f"Decision: {decision.decision} (rule {decision.rule})",
             f"Why: {decision.reason}", f"Observed: {_hours_text(observed_hours)}", "", "Gates:",
             *_gate_lines(gates)]
    if decision.action_items:
        lines += ["", "Action items:", *(f"  - {item}" for item in decision.action_items)]
    return Message(subject=f"[staging-validation] {campaign}: {decision.decision} ({decision.rule})",
                   body="\n".join(lines) + "\n")


def compose_alert_message(alert: Alert, campaign: str) -> Message:
    seen = formatdate(alert.time_ms / 1000, usegmt=True)
    lines = [alert.message, "", f"Campaign: {campaign}", f"Severity: {alert.severity}", f"Rule: {alert.rule}",
             f"First seen: {seen}", f"Count in window: {alert.count}", "", "Evidence:"]
    lines += [f"  {item.get('time')}: {item.get('line', item.get('row'))}" for item in alert.evidence]
    return Message(subject=f"[staging-validation] {campaign}: {alert.severity.upper()} {alert.rule}",
                   body="\n".join(lines) + "\n")


# --- delivering ---------------------------------------------------------------------------------


def _failure_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]


def _webhook_failure(exc: Exception) -> str:
    """Status code or exception class only: httpx's messages quote the URL, which may carry a secret."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTPStatusError: HTTP {exc.response.status_code}"
    return type(exc).__name__


class Notifier:
    def __init__(self, settings: NotificationSettings, outbox_dir: str | Path):
        self.settings = settings
        self.outbox_dir = Path(outbox_dir)

    def send(self, message: Message) -> Delivery:
        email = self._email(message)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", message.subject).strip("-")[:60]
        eml_path = self.outbox_dir / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{time.time_ns()}-{slug}.eml"
        # Written before any attempt, so a crash mid-send still leaves the message in the outbox.
        self._write(eml_path, email, {"X-Delivery-Status": "pending"})

        channels = {
            "smtp": self._with_retries(lambda: self._send_smtp(email)) if self.settings.smtp_host
            else "not-configured",
            "webhook": self._send_webhook(message) if self.settings.webhook_url_env else "not-configured",
        }
        attempted = {name: result for name, result in channels.items() if result != "not-configured"}
        failures = [f"{name} {result}" for name, result in attempted.items() if result != "sent"]
        if not attempted:
            status = "not-configured"
        elif failures:
            status = "failed: " + "; ".join(failures)
        else:
            status = "sent"
        self._write(eml_path, email, {"X-Delivery-Status": status,
                                      **{f"X-Delivery-{name.title()}": r for name, r in channels.items()}})
        return Delivery(status=status, channels=channels, eml=str(eml_path), sent_at_ms=int(time.time() * 1000))

    def _email(self, message: Message) -> EmailMessage:
        email = EmailMessage()
        email["Subject"] = message.subject
        email["From"] = self.settings.sender
        email["To"] = ", ".join(self.settings.recipients) or self.settings.sender
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = make_msgid(domain="staging-validation")
        email.set_content(message.body)
        return email

    @staticmethod
    def _write(path: Path, email: EmailMessage, headers: dict[str, str]) -> None:
        """The outbox copy: the sent message plus delivery headers (never added to the sent message)."""
        copy = deepcopy(email)
        for name, value in headers.items():
            copy[name] = value
        atomic_write_bytes(path, copy.as_bytes())

    def _with_retries(self, attempt: Callable[[], None],
                      describe_failure: Callable[[Exception], str] = _failure_text) -> str:
        reason = ""
        for number in range(self.settings.retries + 1):
            if number:
                time.sleep(self.settings.retry_backoff_s * number)
            try:
                attempt()
                return "sent"
            except (OSError, smtplib.SMTPException, httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                reason = describe_failure(exc)
        return f"failed: {reason} (after {self.settings.retries + 1} attempts)"

    def _send_smtp(self, email: EmailMessage) -> None:
        settings = self.settings
        with smtplib.SMTP(settings.smtp_host or "", settings.smtp_port, timeout=SMTP_TIMEOUT_S) as client:
            if settings.smtp_starttls:
                client.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                password = os.environ.get(settings.smtp_password_env or "")
                if password is None:
                    raise ValueError(f"SMTP password variable {settings.smtp_password_env!r} is not set")
                client.login(settings.smtp_username, password)
            client.send_message(email, to_addrs=settings.recipients)

    def _send_webhook(self, message: Message) -> str:
        url = self.settings.webhook_url()
        if url is None:
            return f"failed: webhook URL variable {self.settings.webhook_url_env!r} is not set"

        def post() -> None:
            response = httpx.post(url, json={"subject": message.subject, "body": message.body},
                                  timeout=WEBHOOK_TIMEOUT_S)
            response.raise_for_status()

        return self._with_retries(post, _webhook_failure)
