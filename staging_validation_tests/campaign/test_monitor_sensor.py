"""The campaign_monitor and campaign_clock sensors evaluated against a real instance and real log files."""

from __future__ import annotations

import json
import time

import dagster as dg

from staging_validation.campaign.jobs import CampaignLaunchConfig, register_campaign
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.sensors import campaign_clock, campaign_monitor
from staging_validation.campaigns import load_campaign_state
from staging_validation.definitions import build_definitions

HOUR_SECONDS = 600.0  # long hours: the whole test happens inside hour 0


def pino(msg: str, level: int = 30, **fields) -> str:
    return json.dumps({"level": level, "time": int(time.time() * 1000), "pid": 1, "hostname": "stg", "msg": msg,
                       **fields}) + "\n"


def tick(sensor, instance, defs, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      instance_ref=instance.get_ref(), resources=defs.resources)
    return sensor.evaluate_tick(context)


def test_monitor_alerts_once_on_new_lines_and_a_missing_pack_stops_the_campaign(tmp_path):
    log = tmp_path / "staging.log"
    log.write_text(pino("server listening"))
    defs = build_definitions(str(tmp_path / "data"))
    store = CampaignStore(data_root=str(tmp_path / "data"))
    register_campaign(store, CampaignLaunchConfig(campaign="watched", telemetry_path=str(log),
                                                  hour_seconds=HOUR_SECONDS))
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
            handle.write(pino("[Staging] ContinuityPack missing: no continuity pack for request", level=50,
                              reqId="req-99", hashedUserId="u1"))
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
