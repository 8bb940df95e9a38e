"""The campaign_monitor and campaign_clock sensors evaluated against a real instance and real log files."""

from __future__ import annotations

import json
import socket
import threading
import time

import dagster as dg
import pandas as pd
import pytest

from staging_validation.acceptance.policy import load_policy
from staging_validation.campaign.jobs import CampaignLaunchConfig, register_campaign
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.sensors import (
    SENSOR_INTERVAL_ENV,
    campaign_clock,
    campaign_monitor,
    monitor_campaign,
    sensor_interval_s,
)
from staging_validation.campaigns import load_campaign_state
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.config_files import ConfigError
from staging_validation.definitions import build_definitions
from staging_validation.hour_runner import log_follower
from staging_validation.watch import CampaignMonitor, with_hour

HOUR_SECONDS = 600.0  # long hours: the whole test happens inside hour 0
MISSING_PACK = "[Staging] ContinuityPack missing: no continuity pack for request"


def pino(msg: str, level: int = 30, **fields) -> str:
    return json.dumps({"level": level, "time": int(time.time() * 1000), "pid": 1, "hostname": "stg", "msg": msg,
                       **fields}) + "\n"


def tick(sensor, instance, defs, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      instance_ref=instance.get_ref(), resources=defs.resources)
    return sensor.evaluate_tick(context)


def watched_campaign(tmp_path, campaign: str = "watched"):
    """A registered campaign whose log holds one line: (store, its state, the log path)."""
    log = tmp_path / "staging.log"
    log.write_text(pino("server listening"))
    store = CampaignStore(data_root=str(tmp_path / "data"))
    state = register_campaign(store, CampaignLaunchConfig(campaign=campaign, telemetry_path=str(log),
                                                          hour_seconds=HOUR_SECONDS))
    return store, state, log


def test_monitor_alerts_once_on_new_lines_and_a_missing_pack_stops_the_campaign(tmp_path):
    store, _, log = watched_campaign(tmp_path)
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("campaign", ["watched"])
        assert tick(campaign_monitor, instance, defs).skip_message

        with log.open("a") as handle:
            handle.writelines(pino("Unhandled error in chat handler", level=50, reqId=f"req-{n}") for n in range(11))
        first = tick(campaign_monitor, instance, defs)
        (observation,) = first.asset_events
        assert observation.asset_key == dg.AssetKey("monitor_alerts") and observation.partition == "watched"
        assert [a["rule"] for a in store.read_alerts("watched")] == ["monitor.errors"]
        outbox = list((store.campaign_dir("watched") / "outbox").glob("*.eml"))
        assert len(outbox) == 1 and "monitor.errors" in outbox[0].read_text()

        # The same window again, nothing new: no second alert for what was already reported.
        assert tick(campaign_monitor, instance, defs).skip_message
        assert len(store.read_alerts("watched")) == 1

        with log.open("a") as handle:
            handle.write(pino(MISSING_PACK, level=50, reqId="req-99", hashedUserId="u1"))
        tick(campaign_monitor, instance, defs)
        alerts = store.read_alerts("watched")
        assert [(a["severity"], a["rule"]) for a in alerts][-1] == ("critical", "monitor.missing_pack")
        state = load_campaign_state(tmp_path / "data", "watched")
        assert state.status == "stopped"
        assert (state.early_stop["rule"], state.early_stop["hour"], state.early_stop["gate"]) == (
            "early_stop.missing_pack", 0, 1)

        # A stopped campaign is no longer watched; the clock ingests hour 0 and requests the verdict.
        assert tick(campaign_monitor, instance, defs).skip_message
        requests = tick(campaign_clock, instance, defs).run_requests
        assert [r.run_key for r in requests] == ["watched:hour:00", "watched:verdict:early"]


def test_an_unreadable_log_is_one_warning_not_a_failing_sensor(tmp_path):
    defs = build_definitions(str(tmp_path / "data"))
    store = CampaignStore(data_root=str(tmp_path / "data"))
    register_campaign(store, CampaignLaunchConfig(campaign="blind", telemetry_path=str(tmp_path / "absent.log"),
                                                  hour_seconds=HOUR_SECONDS))
    with dg.instance_for_test() as instance:
        tick(campaign_monitor, instance, defs)
        tick(campaign_monitor, instance, defs)
    alerts = store.read_alerts("blind")
    assert [(a["severity"], a["rule"]) for a in alerts] == [("warning", "monitor.telemetry_unavailable")]
    assert "absent.log" in alerts[0]["message"]


def test_an_early_stop_and_its_alert_are_stored_before_a_silent_smtp_server_is_answered(tmp_path):
    store, state, log = watched_campaign(tmp_path, "stopping")
    with socket.socket() as silent:  # accepts connections and never greets: the send waits on it
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(20)
        notification = {"smtp_host": "127.0.0.1", "smtp_port": silent.getsockname()[1], "smtp_starttls": False,
                        "recipients": ["ops@example.com"], "retries": 0}
        state = state.model_copy(update={"settings": {**state.settings, "notification": notification}})
        store.save(state)
        with log.open("a") as handle:
            handle.write(pino(MISSING_PACK, level=50, reqId="req-1", hashedUserId="u1"))
        stepping = threading.Thread(target=monitor_campaign, args=(store, state))
        stepping.start()
        connection, _ = silent.accept()  # the step is sending now, and stays there until we hang up
        assert store.load("stopping").status == "stopped"
        assert [a["rule"] for a in store.read_alerts("stopping")] == ["monitor.missing_pack"]
        # The step is not committed while it sends; an evaluation meanwhile (a tick after a timed-out
        # one) leaves the campaign to it instead of raising the same alert again.
        monitor = CampaignMonitor(store.data_root, state, log_follower(store.data_root, state), load_policy())
        with monitor.exclusive() as alone:
            assert not alone
        assert monitor_campaign(store, state) == []
        connection.close()
        stepping.join(timeout=30)
        assert not stepping.is_alive()
    (message,) = (store.campaign_dir("stopping") / "outbox").glob("*.eml")
    assert "X-Delivery-Status: failed: smtp failed: SMTPServerDisconnected" in message.read_text()
    assert monitor_campaign(store, state) == []  # committed: nothing is raised twice
    assert len(store.read_alerts("stopping")) == 1


def test_a_step_cut_short_before_its_commit_is_judged_again_without_counting_twice(tmp_path):
    store, state, log = watched_campaign(tmp_path)
    with log.open("a") as handle:
        handle.writelines(pino("Unhandled error in chat handler", level=50, reqId=f"req-{n}") for n in range(11))
    monitor = CampaignMonitor(store.data_root, state, log_follower(store.data_root, state), load_policy(None))
    (first,) = monitor.step().alerts
    (again,) = monitor.step().alerts
    assert (first.rule, first.count) == (again.rule, again.count) == ("monitor.errors", 11)
    committed = monitor.step()
    monitor.commit(committed)
    with log.open("a") as handle:
        handle.write(pino("Unhandled error in chat handler", level=50, reqId="req-11"))
    # The committed open-window buffer and the new line make one window of 12 errors, already alerted.
    assert monitor.step().alerts == []


def test_lines_lost_to_a_log_truncated_between_ticks_raise_a_warning(tmp_path):
    store, _, log = watched_campaign(tmp_path)
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        tick(campaign_monitor, instance, defs)
        log.write_text(pino("written after a truncation that nothing copied"))
        tick(campaign_monitor, instance, defs)
    alerts = store.read_alerts("watched")
    assert [(a["severity"], a["rule"]) for a in alerts] == [("warning", "monitor.telemetry_lost")]
    assert "lost" in alerts[0]["message"]


def test_rows_get_the_campaign_hour_their_time_falls_in():
    timing = CampaignTiming(start_ms=1_700_000_000_000, hour_seconds=0.0015)  # 1.5 ms hours
    times = pd.to_datetime([timing.start_ms + offset for offset in range(5)], unit="ms", utc=True)
    assert with_hour(pd.DataFrame({"time": times}), timing)["hour"].tolist() == [0, 0, 1, 2, 2]


def test_one_unreadable_campaign_is_logged_and_skipped_while_the_others_run(tmp_path, capfd):
    store, state, _ = watched_campaign(tmp_path, "good")
    campaigns = tmp_path / "data" / "campaigns"
    (campaigns / "corrupt").mkdir()
    (campaigns / "corrupt" / "campaign.json").write_text('{"campaign": "corrupt", "created_')
    (campaigns / "not an id").mkdir()
    (campaigns / "not an id" / "campaign.json").write_text(
        state.model_copy(update={"campaign": "not an id"}).model_dump_json())
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("campaign", ["good"])
        requests = tick(campaign_clock, instance, defs).run_requests
        assert [r.run_key for r in requests] == ["good:probes:00"]
        clock_log = capfd.readouterr().err
        tick(campaign_monitor, instance, defs)
        monitor_log = capfd.readouterr().err
    for log in (clock_log, monitor_log):
        assert log.count("'corrupt' skipped") == 1 and "unreadable campaign state" in log
        assert log.count("'not an id' skipped") == 1 and "only letters, digits" in log


@pytest.mark.parametrize("breakage", ["policy file gone", "stored telemetry setting no longer valid",
                                      "stored notification setting no longer valid"])
def test_a_campaign_with_broken_settings_is_reported_while_the_others_are_watched(tmp_path, capfd, breakage):
    store, _, log = watched_campaign(tmp_path, "good")
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_samples: 50\n")
    broken = register_campaign(store, CampaignLaunchConfig(campaign="broken", telemetry_path=str(log),
                                                           hour_seconds=HOUR_SECONDS, policy=str(policy)))
    if breakage == "policy file gone":
        policy.unlink()
        named = str(policy)
    else:
        section = breakage.split()[1]
        changed = {**broken.settings[section], "webhook_url": "http://127.0.0.1/hook"}  # a key since removed
        store.save(broken.model_copy(update={"settings": {**broken.settings, section: changed}}))
        named = f"settings.{section}"
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("campaign", ["good", broken.campaign])
        with log.open("a") as handle:
            handle.writelines(pino("Unhandled error in chat handler", level=50, reqId=f"req-{n}") for n in range(11))
        result = tick(campaign_monitor, instance, defs)
    assert [event.partition for event in result.asset_events] == ["good"]
    assert [a["rule"] for a in store.read_alerts("good")] == ["monitor.errors"]
    assert store.read_alerts("broken") == []  # refused before its step stored anything
    log_text = capfd.readouterr().err
    assert "broken: not monitored this tick" in log_text and named in log_text


@pytest.mark.parametrize("configured", ["5s", "0", ""])
def test_a_malformed_sensor_interval_is_an_error_naming_the_variable_and_value(monkeypatch, configured):
    monkeypatch.setenv(SENSOR_INTERVAL_ENV, configured)
    with pytest.raises(ConfigError, match=f"{SENSOR_INTERVAL_ENV}='{configured}': give a whole number of seconds"):
        sensor_interval_s()
    monkeypatch.setenv(SENSOR_INTERVAL_ENV, "2")
    assert sensor_interval_s() == 2
