"""Alerts waiting to be sent, in batches (no Dagster import): a sensor stores a batch and requests a run of
the notification job, which sends it. Sending never happens in a sensor tick, so a slow mail server
delays its messages only, never the watch of any campaign.

A batch file lists its alerts; its delivery file records each alert's delivery as soon as it is made, so a
re-run of the job for the same batch sends only what was not delivered yet (an alert whose send was under
way when its run died is sent again: better twice than never). Every message also has its outbox copy.
"""

from __future__ import annotations

import dataclasses
import json
import time

from staging_validation.acceptance.alert_rules import Alert
from staging_validation.acceptance.notify import Notifier, compose_alert_message
from staging_validation.config_files import ConfigError
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import Delivery, NotificationSettings
from staging_validation.storage import atomic_write_text, local_path


def record_alerts(layout: CampaignLayout, alerts: list[Alert]) -> tuple[list[dict], str]:
    """Append the alerts to the campaign's list, then store them as a new batch to send: (the alerts as
    dicts, the batch id, also its run key's suffix)."""
    raised = [dataclasses.asdict(alert) for alert in alerts]
    layout.alerts_file.parent.mkdir(parents=True, exist_ok=True)
    with layout.alerts_file.open("a", encoding="utf-8") as handle:
        for alert in raised:
            handle.write(json.dumps(alert, sort_keys=True, default=str) + "\n")
    batch = str(time.time_ns())
    payload = {"campaign": layout.campaign, "batch": batch, "alerts": raised}
    atomic_write_text(layout.alert_batch_file(batch), json.dumps(payload, sort_keys=True, default=str))
    return raised, batch


def _read_json(path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable {what} (truncated or edited): {exc}") from None


def batch_alerts(layout: CampaignLayout, batch: str) -> list[Alert]:
    path = layout.alert_batch_file(batch)
    if not path.exists():
        raise ConfigError(f"campaign {layout.campaign}: no alert batch {batch} at {path}")
    return [Alert(**alert) for alert in _read_json(path, "alert batch")["alerts"]]


def batch_deliveries(layout: CampaignLayout, batch: str) -> dict[int, Delivery]:
    """The deliveries made so far, by the alert's position in the batch."""
    path = layout.alert_batch_delivery_file(batch)
    if not path.exists():
        return {}
    return {int(index): Delivery.model_validate(d) for index, d in _read_json(path, "delivery record").items()}


def undelivered_batches(layout: CampaignLayout) -> list[str]:
    """Batches with an alert not yet delivered, oldest first."""
    folder = layout.notifications_dir
    if not folder.exists():
        return []
    batches = sorted((p.stem for p in folder.glob("*.json") if p.stem.isdigit()), key=int)
    return [batch for batch in batches
            if len(batch_deliveries(layout, batch)) < len(batch_alerts(layout, batch))]


def deliver_alert_batch(layout: CampaignLayout, settings: NotificationSettings, batch: str) -> list[Delivery]:
    """Send every alert of the batch not delivered yet; returns the deliveries of the whole batch in order."""
    alerts = batch_alerts(layout, batch)
    delivered = batch_deliveries(layout, batch)
    notifier = Notifier(settings, local_path(layout.outbox_dir))
    for index, alert in enumerate(alerts):
        if index in delivered:
            continue
        delivered[index] = notifier.send(compose_alert_message(alert, layout.campaign))
        atomic_write_text(layout.alert_batch_delivery_file(batch), json.dumps(
            {str(i): d.model_dump(mode="json") for i, d in sorted(delivered.items())}, sort_keys=True))
    return [delivered[index] for index in range(len(alerts))]
