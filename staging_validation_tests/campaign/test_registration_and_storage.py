"""Launch validation, partition keys from users, and the Parquet layout of stored hours."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
import yaml

from staging_validation.acceptance.notify import Message, Notifier
from staging_validation.campaign.jobs import CampaignLaunchConfig, NotificationConfig
from staging_validation.campaign.partitions import campaign_partitions
from staging_validation.lifecycle import load_campaign_state
from staging_validation.definitions import build_definitions
from staging_validation.target.profile import DOCUMENTED_PROFILE
from staging_validation.telemetry.capture import TelemetrySource

LAUNCH = "register_campaign_op"


def launch(defs: dg.Definitions, instance: dg.DagsterInstance, **config) -> dg.ExecuteInProcessResult:
    return defs.get_job_def("start_campaign").execute_in_process(
        instance=instance, run_config={"ops": {LAUNCH: {"config": {"telemetry_path": "/nonexistent/log", **config}}}},
        raise_on_error=False,
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(str(e.event_specific_data.error.message if hasattr(e.event_specific_data, "error") else e.message)
                    for e in result.all_events if e.is_step_failure)


def test_start_campaign_registers_the_campaign_and_its_partition(tmp_path):
    defs = build_definitions(str(tmp_path))
    with dg.instance_for_test() as instance:
        result = launch(defs, instance, campaign="night-1", hours=12, hour_seconds=60)
        assert result.success
        assert instance.get_dynamic_partitions(campaign_partitions.name) == ["night-1"]
        state = load_campaign_state(tmp_path, "night-1")
        assert (state.planned_hours, state.timing.hour_seconds, state.status) == (12, 60, "registered")
        assert state.settings.telemetry == TelemetrySource(path="/nonexistent/log")
        # A second launch with the same id would mix two campaigns' data: refused, first one intact.
        again = launch(defs, instance, campaign="night-1")
        assert not again.success and "already registered" in failure_text(again)
        assert load_campaign_state(tmp_path, "night-1").planned_hours == 12


@pytest.mark.parametrize(
    ("config", "named"),
    [({"campaign": "../escape"}, "campaign id '../escape'"),
     ({"campaign": "a/b"}, "campaign id 'a/b'"),
     ({"campaign": "x" * 65}, "longer than 64"),
     ({"campaign": "ok", "policy": "/no/such/policy.yaml"}, "/no/such/policy.yaml"),
     ({"campaign": "ok", "target_profile": "/no/such/profile.yaml"}, "/no/such/profile.yaml"),
     ({"campaign": "ok", "base_url": "localhost:8765"}, "base_url 'localhost:8765'"),
     ({"campaign": "ok", "base_url": "ftp://staging.example"}, "base_url 'ftp://staging.example'"),
     ({"campaign": "ok", "base_url": "http://"}, "base_url 'http://'"),
     ({"campaign": "ok", "base_url": "http://staging.example:port"}, "base_url 'http://staging.example:port'"),
     ({"campaign": "ok", "notification": {"webhook_url_env": "SV_TEST_UNSET_WEBHOOK_URL"}},
      "SV_TEST_UNSET_WEBHOOK_URL")],
)
def test_bad_launch_config_fails_with_the_problem_named_and_registers_nothing(tmp_path, monkeypatch, config,
                                                                              named):
    monkeypatch.delenv("SV_TEST_UNSET_WEBHOOK_URL", raising=False)
    defs = build_definitions(str(tmp_path))
    with dg.instance_for_test() as instance:
        result = launch(defs, instance, **config)
        assert not result.success
        assert named in failure_text(result)
        assert instance.get_dynamic_partitions(campaign_partitions.name) == []
    assert not (tmp_path / "campaigns").exists() or not any((tmp_path / "campaigns").glob("*/campaign.json"))


def test_launch_config_never_holds_a_secret():
    fields = CampaignLaunchConfig.model_fields.keys() | NotificationConfig.model_fields.keys()
    assert not {name for name in fields if "password" in name and not name.endswith("_env")}
    assert not {name for name in fields if "token" in name}
    assert not {name for name in fields if "webhook" in name and not name.endswith("_env")}


def token_required_profile(tmp_path, variable: str) -> str:
    data = yaml.safe_load(DOCUMENTED_PROFILE.read_text())
    data.update(token_env=variable, token_required=True)
    path = tmp_path / "token-profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_launch_refuses_a_profile_whose_required_token_is_unset_naming_the_variable(tmp_path, monkeypatch):
    profile = token_required_profile(tmp_path, "SV_TEST_LAUNCH_TOKEN")
    defs = build_definitions(str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        monkeypatch.delenv("SV_TEST_LAUNCH_TOKEN", raising=False)
        refused = launch(defs, instance, campaign="needs-token", target_profile=profile)
        assert not refused.success and "$SV_TEST_LAUNCH_TOKEN" in failure_text(refused)
        assert instance.get_dynamic_partitions(campaign_partitions.name) == []

        monkeypatch.setenv("SV_TEST_LAUNCH_TOKEN", "launch-token-value-91")
        accepted = launch(defs, instance, campaign="needs-token", target_profile=profile)
        assert accepted.success
    stored = (tmp_path / "data" / "campaigns" / "needs-token" / "campaign.json").read_text()
    assert "launch-token-value-91" not in stored


def test_webhook_url_comes_from_the_environment_and_is_never_recorded(tmp_path, monkeypatch, webhook_server):
    # The token in the path is what makes a webhook URL a secret (Slack- and Teams-style hooks).
    webhook_url = webhook_server.url("/hooks/T0KEN-in-the-url-5b2e")
    webhook_server.status = 500
    monkeypatch.setenv("SV_TEST_WEBHOOK_URL", webhook_url)
    defs = build_definitions(str(tmp_path))
    with dg.instance_for_test() as instance:
        result = launch(defs, instance, campaign="hooked",
                        notification={"webhook_url_env": "SV_TEST_WEBHOOK_URL"})
        assert result.success
    state = load_campaign_state(tmp_path, "hooked")
    assert state.settings.notification.webhook_url_env == "SV_TEST_WEBHOOK_URL"

    settings = state.settings.notification.model_copy(update={"retry_backoff_s": 0})
    delivery = Notifier(settings, tmp_path / "outbox").send(Message(subject="decision", body="REJECT\n"))

    assert len(webhook_server.received) == settings.retries + 1  # the URL was read and used
    assert delivery.channels["webhook"].startswith("failed: HTTPStatusError: HTTP 500")
    recorded = [(tmp_path / "campaigns" / "hooked" / "campaign.json").read_text(),
                Path(delivery.eml).read_text(), delivery.status, *delivery.channels.values()]
    assert not [text for text in recorded if "T0KEN-in-the-url-5b2e" in text or webhook_url in text]


def test_hourly_partitions_are_stored_as_parquet_per_campaign_hour_and_reject_traversal(tmp_path):
    from staging_validation.campaign.io_managers import CampaignParquetIOManager
    from upath import UPath

    manager = CampaignParquetIOManager(base_path=UPath(tmp_path))
    path = manager.get_path_for_partition(None, UPath(tmp_path) / "probe_records", "night-1/07")
    assert path == UPath(tmp_path) / "campaigns" / "night-1" / "hours" / "probe_records" / "07"
    with pytest.raises(ValueError, match="campaign id"):
        manager.get_path_for_partition(None, UPath(tmp_path) / "probe_records", "../../etc/07")
    table = pa.table({"x": [1, 2]})
    target = UPath(str(path) + ".parquet")
    manager.dump_to_path(None, table, target)
    assert manager.load_from_path(None, target).equals(table)
