"""The campaign_watch and campaign_clock sensors evaluated against a real instance and real log files."""

from __future__ import annotations

import json
import time

import dagster as dg
import pandas as pd
import pytest

from staging_validation.acceptance.policy import load_policy
from staging_validation.campaign.jobs import CampaignLaunchConfig, register_campaign
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.sensors import SENSOR_INTERVAL_ENV, campaign_clock, sensor_interval_s
from staging_validation.campaign.watch_sensor import campaign_watch, watch_campaign
from staging_validation.campaign_target import log_follower
from staging_validation.config_files import ConfigError
from staging_validation.definitions import build_definitions
from staging_validation.lifecycle import load_campaign_state, mark_running
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.storage import atomic_write_text
from staging_validation.watch.alert_batches import deliver_alert_batch
from staging_validation.watch.telemetry_watch import TelemetryWatch
from staging_validation.watch.windows import with_hour

HOUR_SECONDS = 600.0  # long hours: the whole test happens inside hour 0
MISSING_PACK = "[Staging] ContinuityPack missing: no continuity pack for request"


def pino(msg: str, level: int = 30, **fields) -> str:
    return json.dumps({"level": level, "time": int(time.time() * 1000), "pid": 1, "hostname": "stg", "msg": msg,
                       **fields}) + "\n"


def tick(sensor, instance, defs, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      instance_ref=instance.get_ref(), resources=defs.resources)
    return sensor.evaluate_tick(context)


def started_campaign(store: CampaignStore, config: CampaignLaunchConfig):
    """A campaign registered and started, as its collector starts it: the monitor watches running campaigns."""
    register_campaign(store, config)
    return mark_running(store.data_root, config.campaign)


def watched_campaign(tmp_path, campaign: str = "watched"):
    """A registered campaign whose log holds one line: (store, its state, the log path)."""
    log = tmp_path / "staging.log"
    log.write_text(pino("server listening"))
    store = CampaignStore(data_root=str(tmp_path / "data"))
    state = started_campaign(store, CampaignLaunchConfig(campaign=campaign, telemetry_path=str(log),
                                                          hour_seconds=HOUR_SECONDS))
    return store, state, log


def run_requested(defs, instance, request: dg.RunRequest) -> None:
    """Execute a requested run as the daemon would launch it: its job, config and tags."""
    assert defs.resolve_job_def(request.job_name).execute_in_process(
        instance=instance, run_config=request.run_config, tags=request.tags,
        partition_key=request.partition_key).success


def test_watch_alerts_once_on_new_lines_and_a_missing_pack_stops_the_campaign(tmp_path):
    store, _, log = watched_campaign(tmp_path)
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("campaign", ["watched"])
        assert tick(campaign_watch, instance, defs).skip_message

        with log.open("a") as handle:
            handle.writelines(pino("Unhandled error in chat handler", level=50, reqId=f"req-{n}") for n in range(11))
        first = tick(campaign_watch, instance, defs)
        (observation,) = first.asset_events
        assert observation.asset_key == dg.AssetKey("monitor_alerts") and observation.partition == "watched"
        assert [a["rule"] for a in store.read_alerts("watched")] == ["monitor.errors"]
        # The tick stored the alert and asks for a notification run; the run sends it.
        outbox = store.layout("watched").outbox_dir
        assert not outbox.exists()
        (request,) = first.run_requests
        assert request.job_name == "campaign_alert_notifications" and request.run_key.startswith("watched:alerts:")
        run_requested(defs, instance, request)
        messages = list(outbox.glob("*.eml"))
        assert len(messages) == 1 and "monitor.errors" in messages[0].read_text()

        # The same window again, nothing new: no second alert for what was already reported.
        assert tick(campaign_watch, instance, defs).skip_message
        assert len(store.read_alerts("watched")) == 1

        with log.open("a") as handle:
            handle.write(pino(MISSING_PACK, level=50, reqId="req-99", hashedUserId="u1"))
        tick(campaign_watch, instance, defs)
        alerts = store.read_alerts("watched")
        assert [(a["severity"], a["rule"]) for a in alerts][-1] == ("critical", "monitor.missing_pack")
        state = load_campaign_state(tmp_path / "data", "watched")
        assert state.status == "stopped"
        assert (state.early_stop.rule, state.early_stop.hour, state.early_stop.gate) == (
            "early_stop.missing_pack", 0, 1)

        # A stopped campaign is no longer watched; the clock ingests hour 0 and requests the verdict.
        assert tick(campaign_watch, instance, defs).skip_message
        requests = tick(campaign_clock, instance, defs).run_requests
        assert [r.run_key for r in requests] == ["watched:hour:00", "watched:verdict:early"]


def test_an_unreadable_log_is_one_warning_not_a_failing_sensor(tmp_path):
    defs = build_definitions(str(tmp_path / "data"))
    store = CampaignStore(data_root=str(tmp_path / "data"))
    started_campaign(store, CampaignLaunchConfig(campaign="blind", telemetry_path=str(tmp_path / "absent.log"),
                                                  hour_seconds=HOUR_SECONDS))
    with dg.instance_for_test() as instance:
        tick(campaign_watch, instance, defs)
        tick(campaign_watch, instance, defs)
    alerts = store.read_alerts("blind")
    assert [(a["severity"], a["rule"]) for a in alerts] == [("warning", "monitor.telemetry_unavailable")]
    assert "absent.log" in alerts[0]["message"]


def test_a_step_under_way_elsewhere_makes_a_second_one_a_no_op(tmp_path):
    store, state, log = watched_campaign(tmp_path, "stepping")
    with log.open("a") as handle:
        handle.write(pino(MISSING_PACK, level=50, reqId="req-1", hashedUserId="u1"))
    watch = TelemetryWatch(store.data_root, state, log_follower(store.data_root, state), load_policy())
    # An evaluation that outlived its tick still holds the step: the next one leaves the campaign to it
    # instead of raising the same alert again.
    with watch.exclusive() as alone:
        assert alone
        assert watch_campaign(store, state) == ([], None)
    raised, batch = watch_campaign(store, state)
    assert [a["rule"] for a in raised] == ["monitor.missing_pack"] and batch is not None
    assert watch_campaign(store, state) == ([], None)  # committed: nothing is raised twice
    assert len(store.read_alerts("stepping")) == 1
    deliveries = deliver_alert_batch(store.layout("stepping"), state.settings.notification, batch)
    assert [d.status for d in deliveries] == ["not-configured"]
    # The batch is delivered: a re-run of its notification job sends nothing again.
    assert deliver_alert_batch(store.layout("stepping"), state.settings.notification, batch) == deliveries
    assert len(list(store.layout("stepping").outbox_dir.glob("*.eml"))) == 1


def test_a_step_cut_short_before_its_commit_is_judged_again_without_counting_twice(tmp_path):
    store, state, log = watched_campaign(tmp_path)
    with log.open("a") as handle:
        handle.writelines(pino("Unhandled error in chat handler", level=50, reqId=f"req-{n}") for n in range(11))
    monitor = TelemetryWatch(store.data_root, state, log_follower(store.data_root, state), load_policy(None))
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
        tick(campaign_watch, instance, defs)
        log.write_text(pino("written after a truncation that nothing copied"))
        tick(campaign_watch, instance, defs)
    alerts = store.read_alerts("watched")
    assert [(a["severity"], a["rule"]) for a in alerts] == [("warning", "monitor.telemetry_lost")]
    assert "lost" in alerts[0]["message"]


def test_a_loss_found_by_an_hour_runs_poll_is_alerted_by_the_monitor_once(tmp_path):
    store, state, log = watched_campaign(tmp_path)
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        tick(campaign_watch, instance, defs)
        log.write_text(pino("written after a truncation that nothing copied"))
        # The hour run polls first: the loss is its poll's problem, and stored for the monitor.
        assert len(log_follower(store.data_root, state).poll().warnings) == 1
        tick(campaign_watch, instance, defs)
        tick(campaign_watch, instance, defs)
    alerts = store.read_alerts("watched")
    assert [(a["severity"], a["rule"]) for a in alerts] == [("warning", "monitor.telemetry_lost")]
    assert str(log) in alerts[0]["message"] and alerts[0]["evidence"] == [{"after_hour": 0}]


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
        assert [r.run_key for r in requests] == ["good:collector:24"]
        clock_log = capfd.readouterr().err
        tick(campaign_watch, instance, defs)
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
    broken = started_campaign(store, CampaignLaunchConfig(campaign="broken", telemetry_path=str(log),
                                                           hour_seconds=HOUR_SECONDS, policy=str(policy)))
    if breakage == "policy file gone":
        policy.unlink()
        named = str(policy)
    else:
        section = breakage.split()[1]
        stored = json.loads(broken.model_dump_json())
        setting = stored["settings"][section]
        many = isinstance(setting, list)  # the telemetry sources: a list, its main source first
        (setting[0] if many else setting)["webhook_url"] = "http://127.0.0.1/hook"  # a key since removed
        atomic_write_text(store.layout("broken").state_file, json.dumps(stored))
        named = f"settings.{section}.{'0.' if many else ''}webhook_url"
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("campaign", ["good", broken.campaign])
        with log.open("a") as handle:
            handle.writelines(pino("Unhandled error in chat handler", level=50, reqId=f"req-{n}") for n in range(11))
        result = tick(campaign_watch, instance, defs)
    assert [event.partition for event in result.asset_events] == ["good"]
    assert [a["rule"] for a in store.read_alerts("good")] == ["monitor.errors"]
    assert store.read_alerts("broken") == []  # refused before its step stored anything
    log_text = capfd.readouterr().err
    # A policy that cannot be read stops the watch of its campaign; stored settings that no longer validate
    # make its state unreadable, so the campaign is skipped naming the file and the field.
    problem = "broken: not watched this tick" if breakage == "policy file gone" else "'broken' skipped"
    assert problem in log_text and named in log_text


@pytest.mark.parametrize("configured", ["5s", "0", ""])
def test_a_malformed_sensor_interval_is_an_error_naming_the_variable_and_value(monkeypatch, configured):
    monkeypatch.setenv(SENSOR_INTERVAL_ENV, configured)
    with pytest.raises(ConfigError, match=f"{SENSOR_INTERVAL_ENV}='{configured}': give a whole number of seconds"):
        sensor_interval_s()
    monkeypatch.setenv(SENSOR_INTERVAL_ENV, "2")
    assert sensor_interval_s() == 2
