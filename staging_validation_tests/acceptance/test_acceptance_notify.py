"""The decision email through a real SMTP server on loopback, the webhook through a real HTTP server,
and the outbox copy that records every delivery outcome."""

from __future__ import annotations

import email
import email.policy
import socket
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from staging_validation.acceptance.decision import decide
from staging_validation.acceptance.gates import evaluate_gates
from staging_validation.acceptance.alert_rules import Alert
from staging_validation.acceptance.notify import (
    NotificationSettings,
    Notifier,
    compose_alert_message,
    compose_decision_message,
)
from staging_validation.acceptance.policy import Policy
from staging_validation.config_files import ConfigError, validate_model
from staging_validation_tests.acceptance.acceptance_tables import chat_events, events, healthy_campaign

SMTP_PASSWORD = "s3cret-smtp-password"


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mailbox:
    """aiosmtpd handler: keeps what it receives, or refuses every message when `refuse` is set."""

    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.received: list[tuple[list[str], email.message.EmailMessage]] = []
        self.attempts = 0

    async def handle_DATA(self, server, session, envelope):
        self.attempts += 1
        if self.refuse:
            return "554 5.3.0 mailbox unavailable for testing"
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.received.append((list(envelope.rcpt_tos), message))
        return "250 OK"


class LoopbackSMTP(Controller):
    """aiosmtpd's threaded server on a port the kernel picks, so parallel test runs never collide."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def check_password(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=auth_data.login == b"ops" and auth_data.password == SMTP_PASSWORD.encode())


@pytest.fixture
def smtp_server():
    started = []

    def start(refuse: bool = False) -> tuple[Mailbox, int]:
        mailbox = Mailbox(refuse)
        controller = LoopbackSMTP(mailbox, hostname="127.0.0.1", port=0, authenticator=check_password,
                                  auth_require_tls=False)
        controller.start()
        started.append(controller)
        return mailbox, controller.port

    yield start
    for controller in started:
        controller.stop()


def outbox_copy(path):
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def reject_message():
    record_frame, _ = healthy_campaign(hours=3)
    rows = [line for n in range(120) for line in chat_events(n, n // 40)]
    rows.append({"kind": "pack_missing", "level": 50, "user_hash": "u-9", "hour": 2,
                 "time": "2026-11-20T02:17:00Z"})
    policy = Policy.model_validate({"redeploy_date": "2026-12-03"})
    gates = evaluate_gates(record_frame, events(rows), policy)
    decision = decide(gates, 1.0, policy)
    return compose_decision_message(decision, gates, policy, "camp-7", [0, 1, 2])


def test_decision_email_is_delivered_through_smtp_with_login(smtp_server, tmp_path, monkeypatch):
    mailbox, port = smtp_server()
    monkeypatch.setenv("SV_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    settings = NotificationSettings(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False,
                                    smtp_username="ops", smtp_password_env="SV_TEST_SMTP_PASSWORD",
                                    sender="validator@example.test",
                                    recipients=["ops-lead@example.test", "release@example.test"])
    message = reject_message()
    delivery = Notifier(settings, tmp_path / "outbox").send(message)

    assert delivery.status == "sent" and delivery.channels == {"smtp": "sent", "webhook": "not-configured"}
    ((recipients, received),) = mailbox.received
    assert recipients == ["ops-lead@example.test", "release@example.test"]
    assert received["Subject"] == "[staging-validation] camp-7: REJECT (reject.critical_fail)"
    body = received.get_content()
    assert body.startswith("Staging failed at gate 1 (ContinuityPack integrity). Root cause: 1 missing-pack event")
    assert "2026-11-20T02:17:00" in body and "Redeploying on 2026-12-03." in body
    assert "X-Delivery-Status" not in received
    copy = outbox_copy(Path(delivery.eml))
    assert copy["X-Delivery-Status"] == "sent" and copy["Subject"] == received["Subject"]
    assert SMTP_PASSWORD not in Path(delivery.eml).read_text()


def test_refusing_server_is_retried_then_the_outbox_copy_is_marked_failed(smtp_server, tmp_path):
    mailbox, port = smtp_server(refuse=True)
    settings = NotificationSettings(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False,
                                    recipients=["ops-lead@example.test"], retries=2, retry_backoff_s=0)
    delivery = Notifier(settings, tmp_path / "outbox").send(reject_message())

    assert mailbox.attempts == 3 and mailbox.received == []
    assert delivery.status.startswith("failed: smtp failed: SMTPDataError")
    copy = outbox_copy(Path(delivery.eml))
    assert copy["X-Delivery-Status"].startswith("failed:") and "554" in copy["X-Delivery-Smtp"]
    assert copy.get_content().startswith("Staging failed at gate 1")
    assert list((tmp_path / "outbox").iterdir()) == [Path(delivery.eml)]


def test_starttls_required_but_not_offered_fails_without_raising(smtp_server, tmp_path):
    _, port = smtp_server()
    settings = NotificationSettings(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=True,
                                    recipients=["ops-lead@example.test"], retries=0)
    delivery = Notifier(settings, tmp_path / "outbox").send(reject_message())
    assert delivery.status.startswith("failed:") and "STARTTLS" in delivery.status


def test_unreachable_server_is_recorded_failed(tmp_path):
    settings = NotificationSettings(smtp_host="127.0.0.1", smtp_port=closed_port(), smtp_starttls=False,
                                    recipients=["ops-lead@example.test"], retries=1, retry_backoff_s=0)
    delivery = Notifier(settings, tmp_path / "outbox").send(reject_message())
    assert "ConnectionRefusedError" in delivery.status and "after 2 attempts" in delivery.status
    assert outbox_copy(Path(delivery.eml))["X-Delivery-Status"] == delivery.status


def test_nothing_configured_still_leaves_the_message_in_the_outbox(tmp_path):
    delivery = Notifier(NotificationSettings(), tmp_path / "outbox").send(reject_message())
    assert delivery.status == "not-configured"
    copy = outbox_copy(Path(delivery.eml))
    assert copy["X-Delivery-Status"] == "not-configured" and "Root cause" in copy.get_content()


def test_webhook_receives_the_message_as_json(webhook_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SV_TEST_WEBHOOK_URL", webhook_server.url())
    message = reject_message()
    delivery = Notifier(NotificationSettings(webhook_url_env="SV_TEST_WEBHOOK_URL"), tmp_path / "outbox").send(message)
    assert delivery.channels == {"smtp": "not-configured", "webhook": "sent"} and delivery.status == "sent"
    assert webhook_server.received == [{"subject": message.subject, "body": message.body}]


def test_webhook_error_status_is_retried_and_recorded_without_the_url(webhook_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SV_TEST_WEBHOOK_URL", webhook_server.url())
    webhook_server.status = 500
    settings = NotificationSettings(webhook_url_env="SV_TEST_WEBHOOK_URL", retries=1, retry_backoff_s=0)
    delivery = Notifier(settings, tmp_path / "outbox").send(reject_message())
    assert len(webhook_server.received) == 2
    assert delivery.status == "failed: webhook failed: HTTPStatusError: HTTP 500 (after 2 attempts)"
    assert webhook_server.url() not in Path(delivery.eml).read_text()


def test_webhook_variable_unset_is_recorded_failed_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("SV_TEST_WEBHOOK_URL", raising=False)
    delivery = Notifier(NotificationSettings(webhook_url_env="SV_TEST_WEBHOOK_URL"), tmp_path / "outbox").send(
        reject_message())
    assert delivery.channels["webhook"] == "failed: webhook URL variable 'SV_TEST_WEBHOOK_URL' is not set"
    assert "'SV_TEST_WEBHOOK_URL' is not set" in outbox_copy(Path(delivery.eml))["X-Delivery-Webhook"]


def test_unreachable_webhook_is_recorded_by_error_class_only(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/hooks/secret-path"
    monkeypatch.setenv("SV_TEST_WEBHOOK_URL", url)
    settings = NotificationSettings(webhook_url_env="SV_TEST_WEBHOOK_URL", retries=0)
    delivery = Notifier(settings, tmp_path / "outbox").send(reject_message())
    assert delivery.channels["webhook"] == "failed: ConnectError (after 1 attempts)"
    assert "secret-path" not in Path(delivery.eml).read_text()


def test_the_runbook_texts_with_generated_reasons_and_dates():
    policy = Policy.model_validate({"release_date": "2026-12-01"})
    accept_records, accept_events = healthy_campaign()
    gates = evaluate_gates(accept_records, accept_events, policy)
    accepted = compose_decision_message(decide(gates, 1.0, policy), gates, policy, "c1", list(range(24)))
    assert accepted.body.startswith("Staging passed. Releasing to production on 2026-12-01.")

    slow_records, slow_events = healthy_campaign(requests_per_hour=30, regen_ms=3500.0)
    gates = evaluate_gates(slow_records, slow_events, policy)
    extended = compose_decision_message(decide(gates, 1.0, policy), gates, policy, "c1", list(range(24)))
    assert extended.body.startswith("Staging extended 48 hours. Will re-measure Governor regen health: ")
    assert "3500 ms" in extended.body.splitlines()[0] and "3000 ms" in extended.body.splitlines()[0]

    rejected = reject_message()
    assert "Redeploying on 2026-12-03." in rejected.body
    default = Policy()
    gates = evaluate_gates(accept_records, events([{"kind": "pack_fallback", "level": 40}]), default)
    unscheduled = compose_decision_message(decide(gates, 1.0, default), gates, default, "c1", [0])
    assert "Redeploying on a date to be scheduled." in unscheduled.body.splitlines()[0]


def test_alert_message_names_severity_rule_and_evidence():
    alert = Alert(time_ms=1_795_161_660_000, severity="critical", rule="monitor.missing_pack",
                  message="1 request(s) ran without a ContinuityPack.", count=1,
                  evidence=[{"time": "2026-11-20T08:01:00+00:00", "hour": 8, "line": '{"msg": "missing"}'}])
    message = compose_alert_message(alert, "camp-7")
    assert message.subject == "[staging-validation] camp-7: CRITICAL monitor.missing_pack"
    assert message.body.startswith("1 request(s) ran without a ContinuityPack.")
    assert '{"msg": "missing"}' in message.body and "Fri, 20 Nov 2026 08:01:00 GMT" in message.body


def test_after_an_extension_the_message_says_a_person_must_decide_not_extended_0_hours():
    policy = Policy()
    slow_records, slow_events = healthy_campaign(requests_per_hour=30, regen_ms=3500.0)
    gates = evaluate_gates(slow_records, slow_events, policy)
    decision = decide(gates, 1.0, policy, extension_count=1)
    message = compose_decision_message(decision, gates, policy, "c1", list(range(72)))
    headline = message.body.splitlines()[0]
    assert headline.startswith(
        "Staging extended once already (72 hour(s) with data, hours 0–71); a person must decide")
    assert "0 hours" not in headline and "3500 ms" in headline


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"smtp_host": "mail.example.test"}, "recipients"),
     ({"smtp_host": "mail.example.test", "recipients": ["a@example.test"], "smtp_username": "ops"},
      "smtp_password_env"),
     ({"smtp_port": 0}, "smtp_port"),
     ({"smtp_password": "inline"}, "smtp_password")],
)
def test_incomplete_notification_settings_are_a_config_error_naming_the_field(settings, field):
    with pytest.raises(ConfigError) as error:
        validate_model(settings, NotificationSettings, "notification")
    assert field in str(error.value)


def test_extend_for_low_coverage_says_what_will_be_re_measured():
    policy = Policy()
    record_frame, event_frame = healthy_campaign()
    gates = evaluate_gates(record_frame, event_frame, policy)
    decision = decide(gates, 0.5, policy)
    headline = compose_decision_message(decision, gates, policy, "c1", list(range(12))).body.splitlines()[0]
    assert headline.startswith("Staging extended 48 hours. Will re-measure over more hours of data.")
    assert "only 50% of the campaign's hours have data (minimum 90%)" in headline
