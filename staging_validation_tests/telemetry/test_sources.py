"""Several telemetry sources per campaign (issue 11 item 2): each log captured into its own store and read
with its own mapping (level names, time field and format, rules on another field with constants), the
events merged in time order; the single-source form of every existing campaign stays valid."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from staging_validation.acceptance.policy import load_policy
from staging_validation.campaign.jobs import (
    CampaignLaunchConfig,
    TelemetrySourceConfig,
    register_campaign,
)
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign_target import log_follower, telemetry_store
from staging_validation.config_files import ConfigError
from staging_validation.hour_capture import hour_telemetry
from staging_validation.lifecycle import CampaignState
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.target.profile import DOCUMENTED_PROFILE
from staging_validation.telemetry.aggregates import LineCounts
from staging_validation.telemetry.capture import (
    TELEMETRY_SOURCES,
    CaptureError,
    raw_dir,
)
from staging_validation.watch.telemetry_watch import TelemetryWatch

START_MS = 1_795_392_000_000
HOUR_MS = 3_600_000
TIMING = CampaignTiming(start_ms=START_MS, hour_seconds=3600)

# The main log as documented; the governor's events in a JSONL file of their own, with string levels, an
# ISO time under `ts`, the event name under `event`; identity events in a third, in epoch seconds, with
# no `op` field (the rule sets it).
SECOND_SOURCES = """\
telemetry:
  sources:
    governor:
      level_names: {info: 30, warn: 40, error: 50}
      time_format: iso8601
      fields: {time: ts, msg: message}
      rules:
        - {kind: governor_pass, field: event, equals: governor.pass}
    accounts:
      time_format: epoch_s
      fields: {time: at}
      rules:
        - {kind: identity_op, equals: account created, constants: {identity_op: create, provider: discord}}
"""


def iso(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).isoformat()


def write_lines(path, lines) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "profile.yaml"
    path.write_text(DOCUMENTED_PROFILE.read_text() + SECOND_SOURCES)
    return path


@pytest.fixture
def logs(tmp_path):
    main, governor, accounts = tmp_path / "stdout.log", tmp_path / "governor.jsonl", tmp_path / "accounts.jsonl"
    write_lines(main, [
        {"level": 30, "time": START_MS + 10, "reqId": "sv-1", "msg": "request completed",
         "req": {"url": "/chat", "method": "POST"}, "res": {"statusCode": 200}, "duration_ms": 12},
        {"level": 30, "time": START_MS + HOUR_MS + 5, "msg": "request completed", "res": {"statusCode": 200}},
    ])  # fmt: skip
    write_lines(governor, [
        {"level": "info", "ts": iso(START_MS + 5), "event": "governor.pass", "message": "pass 1/3",
         "reqId": "sv-1", "status": "passed", "attempt": 1},
        {"level": "ERROR", "ts": iso(START_MS + 20), "event": "governor.crash", "message": "governor crashed"},
    ])  # fmt: skip
    write_lines(accounts, [{"level": 30, "at": (START_MS + 15) / 1000, "msg": "account created", "vi_user_id": "u1"}])
    return main, governor, accounts


def state_with(tmp_path, profile, logs) -> CampaignState:
    main, governor, accounts = logs
    telemetry = [{"path": str(main)}, {"name": "governor", "path": str(governor), "mapping": "governor"},
                 {"name": "accounts", "path": str(accounts), "mapping": "accounts"}]
    return CampaignState(campaign="multi", created_at_ms=START_MS, timing=TIMING,
                         settings={"target_profile": str(profile), "telemetry": telemetry})


def test_every_source_is_read_with_its_own_mapping_and_merged_in_time_order(tmp_path, profile, logs):
    state = state_with(tmp_path, profile, logs)
    assert log_follower(tmp_path / "data", state).poll().hours == {0, 1}
    store = telemetry_store(tmp_path / "data", state)
    assert sorted(p.name for p in raw_dir(store).iterdir()) == ["00.log", "01.log"]  # the main one, where it was
    assert (store / "sources" / "governor" / "raw" / "00.log").exists()
    hour = hour_telemetry(tmp_path / "data", state, 0)
    rows = hour.events.select(["time", "kind", "level", "origin", "msg", "identity_op", "provider"]).to_pylist()
    assert [(row["kind"], row["level"]) for row in rows] == [
        ("governor_pass", 30), ("request_completed", 30), ("identity_op", 30), ("error", 50)
    ]
    times = [row["time"] for row in rows]
    assert times == sorted(times)
    assert rows[0]["origin"] == "probe"  # the request-id prefix is the main mapping's, inherited
    assert (rows[2]["identity_op"], rows[2]["provider"]) == ("create", "discord")  # the rule's constants
    assert rows[3]["msg"] == "governor crashed"  # that source's msg field
    assert log_follower(tmp_path / "data", state).line_counts() == LineCounts(total=5, unparsed=0, readable=5)
    assert hour.by_source == {"main": {"lines": 1, "readable_lines": 1, "events": 1},
                              "governor": {"lines": 2, "readable_lines": 2, "events": 2},
                              "accounts": {"lines": 1, "readable_lines": 1, "events": 1}}


def test_the_monitor_reads_what_every_source_gained(tmp_path, profile, logs):
    state = state_with(tmp_path, profile, logs)
    monitor = TelemetryWatch(tmp_path / "data", state, log_follower(tmp_path / "data", state), load_policy())
    step = monitor.step()
    assert set(step.cursor.raw_offsets) == {"00.log", "01.log", "sources/governor/00.log", "sources/accounts/00.log"}
    monitor.commit(step)
    write_lines(logs[1], [{"level": "error", "ts": iso(START_MS + 30 + n), "event": "x", "message": "boom"}
                          for n in range(11)])
    (alert,) = monitor.step().alerts
    assert (alert.rule, alert.count) == ("monitor.errors", 11)  # read from the second source only


def test_a_source_that_cannot_be_read_does_not_stop_the_others(tmp_path, profile, logs):
    state = state_with(tmp_path, profile, logs)
    logs[1].unlink()
    follower = log_follower(tmp_path / "data", state)
    with pytest.raises(CaptureError, match="telemetry source 'governor'"):
        follower.poll()
    assert hour_telemetry(tmp_path / "data", state, 0).events.column("kind").to_pylist() == [
        "request_completed", "identity_op"
    ]


def test_one_source_is_the_stored_form_of_every_existing_campaign():
    (source,) = TELEMETRY_SOURCES.validate_python({"path": "/var/log/vi/staging.log"})
    assert (source.name, source.mapping) == ("main", None)


def test_the_launch_gives_extra_sources_and_refuses_what_cannot_work(tmp_path, profile, logs):
    store = CampaignStore(data_root=str(tmp_path / "data"))
    main, governor, _ = logs
    config = {"target_profile": str(profile), "telemetry_path": str(main)}
    state = register_campaign(store, CampaignLaunchConfig(campaign="ok", **config, extra_telemetry_sources=[
        TelemetrySourceConfig(name="governor", path=str(governor), mapping="governor")]))
    assert [source.name for source in state.settings.telemetry] == ["main", "governor"]
    with pytest.raises(ConfigError, match="telemetry source 'gov'.*no telemetry mapping named 'nope'"):
        register_campaign(store, CampaignLaunchConfig(campaign="unknown", **config, extra_telemetry_sources=[
            TelemetrySourceConfig(name="gov", path=str(governor), mapping="nope")]))
    with pytest.raises(ConfigError, match="names must differ"):
        register_campaign(store, CampaignLaunchConfig(campaign="twice", **config, extra_telemetry_sources=[
            TelemetrySourceConfig(name="main", path=str(governor))]))
    (single,) = CampaignLaunchConfig(campaign="single", telemetry_path=str(main)).settings().telemetry
    assert (single.name, single.path, single.mapping) == ("main", str(main), None)
