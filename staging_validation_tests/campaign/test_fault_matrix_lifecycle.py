"""Issue 10, the lifecycle's part of the fault matrix: each case failed on the main branch before it.

Real Dagster instances, real jobs and sensors, real sockets; the stored campaigns are the acceptance tables
written where the IO manager writes them.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from upath import UPath

from staging_validation.acceptance.judge import judge_campaign
from staging_validation.campaign.assets import HOURLY_ASSETS, VERDICT_ASSETS
from staging_validation.campaign.jobs import CampaignLaunchConfig, NotificationConfig, register_campaign
from staging_validation.campaign.notification_jobs import campaign_run_failures
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.run_tags import TAG_CAMPAIGN, TAG_HOUR, TAG_PHASE
from staging_validation.campaign.watch_sensor import campaign_watch
from staging_validation.cli import main
from staging_validation.definitions import build_definitions
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignStatus, load_campaign_state
from staging_validation.schemas.probe_records import RECORD_SCHEMA
from staging_validation.schemas.timing import CampaignTiming
from staging_validation_tests.acceptance.acceptance_tables import healthy_campaign, store_campaign

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
ROUND_24_TAGS = {TAG_PHASE: "verdict", TAG_HOUR: "24"}


def pino(msg: str, level: int = 30, **fields) -> str:
    return json.dumps({"level": level, "time": int(time.time() * 1000), "pid": 1, "hostname": "stg", "msg": msg,
                       **fields}) + "\n"


def errors(count: int) -> list[str]:
    return [pino("Unhandled error in chat handler", level=50, reqId=f"req-{n}") for n in range(count)]


def tick(sensor, instance, defs, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      instance_ref=instance.get_ref(), resources=defs.resources)
    return sensor.evaluate_tick(context)


def stored_ambiguous_campaign(data_root, campaign: str = "ambiguous") -> CampaignLayout:
    """24 stored hours whose gate 2 is in a REVIEW that forces an extension; hour 24 has just ended, so
    round 24 is due and round 72 (after a 48-hour extension) is 47.5 hours away. Its final checks are
    already kept with round 24, so no verdict run asks a target anything."""
    start_ms = int((time.time() - 24.5 * 3600) * 1000)
    store_campaign(data_root, campaign, *healthy_campaign(ambiguous_every=8), created_at_ms=start_ms,
                   timing=CampaignTiming(start_ms=start_ms, hour_seconds=3600))
    layout = CampaignLayout.of(data_root, campaign)
    layout.round_dir("24").mkdir(parents=True)
    pq.write_table(RECORD_SCHEMA.empty_table(), layout.round_final_checks_file("24"))
    return layout


def decision_metadata(instance, campaign: str) -> list[tuple[str, str, float]]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("campaign_decision"), asset_partitions=[campaign]),
        limit=100, ascending=True).records
    return [(r.asset_materialization.metadata["decision"].value, r.asset_materialization.metadata["rule"].value,
             r.asset_materialization.metadata["coverage"].value) for r in records]


def test_rematerializing_the_decision_keeps_decision_rule_and_extension_and_sends_nothing_twice(tmp_path):
    data_root = tmp_path / "data"
    layout = stored_ambiguous_campaign(data_root)
    defs = build_definitions(str(data_root))
    previous_umask = os.umask(0o022)
    try:
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("campaign", ["ambiguous"])
            # The clock's verdict run of round 24.
            assert defs.resolve_job_def("campaign_verdict").execute_in_process(
                instance=instance, partition_key="ambiguous", tags=ROUND_24_TAGS, run_config=QUIET).success
            state = load_campaign_state(data_root, "ambiguous")
            assert (state.status, state.extension_count, state.total_hours) == (CampaignStatus.EXTENDED, 1, 72)
            outbox = sorted(layout.outbox_dir.glob("*.eml"))
            assert len(outbox) == 1 and "Staging extended 48 hours" in outbox[0].read_text()
            decision_file = json.loads(layout.decision_file.read_text())

            # During the extension someone re-materializes the decision and what follows it (no run tag),
            # then the whole verdict job again: the same round is judged, nothing moves.
            rematerialized = dg.materialize(
                [*HOURLY_ASSETS, *VERDICT_ASSETS], selection=["campaign_decision", "acceptance_report",
                                                              "decision_notification"],
                partition_key="ambiguous", instance=instance, resources=defs.resources, run_config=QUIET)
            assert rematerialized.success
            assert defs.resolve_job_def("campaign_verdict").execute_in_process(
                instance=instance, partition_key="ambiguous", run_config=QUIET).success
            notification = rematerialized.output_for_node("decision_notification")
            assert notification["eml"] == str(outbox[0])

            assert decision_metadata(instance, "ambiguous") == [("EXTEND", "extend.forced_review", 1.0)] * 3
        state = load_campaign_state(data_root, "ambiguous")
        assert (state.status, state.extension_count, state.total_hours) == (CampaignStatus.EXTENDED, 1, 72)
        assert [(r.round_id, r.decision, r.rule) for r in state.rounds] == [("24", "EXTEND", "extend.forced_review")]
        assert sorted(layout.outbox_dir.glob("*.eml")) == outbox
        again = json.loads(layout.decision_file.read_text())
        assert (again["decision"], again["rule"], again["coverage"], again["decided_at"]) == (
            decision_file["decision"], decision_file["rule"], 1.0, decision_file["decided_at"])
        # Written for a reviewer group to read, not 0600.
        for path in (layout.report_file, layout.decision_file, layout.verdict_file("final_checks", ".parquet"),
                     layout.verdict_file("gate_results", ".json"), layout.state_file):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    finally:
        os.umask(previous_umask)


def test_the_verdict_reads_through_a_upath_data_root(tmp_path):
    data_root = tmp_path / "data"
    stored_ambiguous_campaign(data_root)
    local = judge_campaign(data_root, "ambiguous")
    memory_root = UPath("memory://verdict-test/data")
    for path in data_root.rglob("*"):
        if path.is_file():
            target = memory_root / path.relative_to(data_root).as_posix()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    try:
        remote = judge_campaign(memory_root, "ambiguous")
        assert (remote.decision, remote.hours_observed, remote.coverage) == (
            local.decision, local.hours_observed, local.coverage)
        assert len(remote.events) == len(local.events) and len(remote.records) == len(local.records)
    finally:
        memory_root.fs.rm("/verdict-test", recursive=True)
    result = CliRunner().invoke(main, ["verdict", "--campaign", "ambiguous", "--data-root", f"file://{data_root}"])
    assert result.exit_code == 3 and "Decision: EXTEND (rule extend.forced_review)" in result.output


def silent_smtp_server():
    """Accepts connections and never greets: a client waits on it until it hangs up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    return server


def test_a_silent_mail_server_never_holds_a_watch_tick_and_the_other_campaigns_are_watched(tmp_path):
    store = CampaignStore(data_root=str(tmp_path / "data"))
    log = tmp_path / "staging.log"
    log.write_text(pino("server listening"))
    with silent_smtp_server() as silent:
        mail = NotificationConfig(smtp_host="127.0.0.1", smtp_port=silent.getsockname()[1], smtp_starttls=False,
                                  recipients=["ops@example.com"])
        for campaign in ("mailed", "other"):
            register_campaign(store, CampaignLaunchConfig(campaign=campaign, telemetry_path=str(log),
                                                          hour_seconds=600.0, notification=mail))
        defs = build_definitions(store.data_root)
        with log.open("a") as handle:
            handle.writelines(errors(11))
        with dg.instance_for_test() as instance:
            result = tick(campaign_watch, instance, defs)
            # The tick returned without ever connecting to the mail server: it sends nothing itself.
            with pytest.raises(BlockingIOError):
                silent.accept()
            assert sorted(e.partition for e in result.asset_events) == ["mailed", "other"]
            for campaign in ("mailed", "other"):
                assert [a["rule"] for a in store.read_alerts(campaign)] == ["monitor.errors"]
            requests = {r.tags[TAG_CAMPAIGN]: r for r in result.run_requests}
            assert set(requests) == {"mailed", "other"}

            # The notification run sends, waiting on the silent server until it hangs up.
            job = defs.resolve_job_def(requests["mailed"].job_name)
            sending = threading.Thread(target=job.execute_in_process, kwargs={
                "instance": instance, "run_config": {**QUIET, **requests["mailed"].run_config},
                "tags": requests["mailed"].tags, "raise_on_error": False})
            sending.start()
            silent.setblocking(True)
            silent.settimeout(60)
            connection, _ = silent.accept()
            # Meanwhile the watch goes on: a new line of the other campaign's log is seen at once.
            with log.open("a") as handle:
                handle.write(pino("[Staging] ContinuityPack missing: no continuity pack for request", level=50,
                                  reqId="req-99", hashedUserId="u1"))
            tick(campaign_watch, instance, defs)
            assert load_campaign_state(store.data_root, "other").status == CampaignStatus.STOPPED
            connection.close()
            sending.join(timeout=120)
            assert not sending.is_alive()
    (copy,) = (p for p in store.layout("mailed").outbox_dir.glob("*.eml") if "monitor.errors" in p.read_text())
    assert "X-Delivery-Status: failed: smtp failed: SMTPServerDisconnected" in copy.read_text()


def test_a_truncated_watch_cursor_is_an_error_naming_campaign_and_file_and_the_others_are_watched(tmp_path, capfd):
    store = CampaignStore(data_root=str(tmp_path / "data"))
    log = tmp_path / "staging.log"
    log.write_text(pino("server listening"))
    for campaign in ("truncated", "healthy"):
        register_campaign(store, CampaignLaunchConfig(campaign=campaign, telemetry_path=str(log),
                                                      hour_seconds=600.0))
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        tick(campaign_watch, instance, defs)
        cursor = store.layout("truncated").monitor_cursor_file
        cursor.write_text(cursor.read_text()[:7])
        with log.open("a") as handle:
            handle.writelines(errors(11))
        capfd.readouterr()
        result = tick(campaign_watch, instance, defs)
        logged = capfd.readouterr().err
    assert [e.partition for e in result.asset_events] == ["healthy"]
    assert [a["rule"] for a in store.read_alerts("healthy")] == ["monitor.errors"]
    assert "truncated: not watched this tick" in logged and str(cursor) in logged
    assert store.read_alerts("truncated") == []


def failed_verdict_run(defs, instance, tags: dict[str, str]) -> dg.DagsterRun:
    """A verdict run that fails for the validator's reason: no round of the campaign is due yet."""
    result = defs.resolve_job_def("campaign_verdict").execute_in_process(
        instance=instance, partition_key="early", tags={TAG_CAMPAIGN: "early", TAG_PHASE: "verdict", **tags},
        run_config=QUIET, raise_on_error=False)
    assert not result.success
    return instance.get_run_by_id(result.run_id)


def registered_early(tmp_path) -> CampaignStore:
    store = CampaignStore(data_root=str(tmp_path / "data"))
    register_campaign(store, CampaignLaunchConfig(campaign="early", telemetry_path=str(tmp_path / "x.log"),
                                                  hour_seconds=600.0))
    return store


def test_a_failed_run_with_no_retry_to_follow_is_alerted_and_its_notification_requested(tmp_path):
    store = registered_early(tmp_path)
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("campaign", ["early"])
        started = tick(campaign_run_failures, instance, defs)  # the first tick only sets the cursor
        failed_verdict_run(defs, instance, {TAG_HOUR: "24"})
        result = tick(campaign_run_failures, instance, defs, cursor=started.cursor)
    (alert,) = store.read_alerts("early")
    assert alert["rule"] == "monitor.validator_run_failed"
    assert "campaign_verdict run for round 24 failed" in alert["message"] and "not due yet" in alert["message"]
    assert "not evidence about the target" in alert["message"]
    (request,) = result.run_requests
    assert request.job_name == "campaign_alert_notifications" and request.run_key.startswith("early:alerts:")
    assert [e.partition for e in result.asset_events] == ["early"]


def test_a_failed_run_that_will_be_retried_is_not_alerted_until_its_retries_are_spent(tmp_path):
    store = registered_early(tmp_path)
    defs = build_definitions(store.data_root)
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 2}}) as instance:
        instance.add_dynamic_partitions("campaign", ["early"])
        cursor = tick(campaign_run_failures, instance, defs).cursor
        retried = failed_verdict_run(defs, instance, {TAG_HOUR: "24"})
        assert retried.tags["dagster/will_retry"] == "true"
        result = tick(campaign_run_failures, instance, defs, cursor=cursor)
        assert not result.run_requests and store.read_alerts("early") == []
        last = failed_verdict_run(defs, instance, {TAG_HOUR: "24", "dagster/max_retries": "0"})
        assert last.tags["dagster/will_retry"] == "false"
        result = tick(campaign_run_failures, instance, defs, cursor=result.cursor or cursor)
    assert [a["rule"] for a in store.read_alerts("early")] == ["monitor.validator_run_failed"]
    assert len(result.run_requests) == 1


def test_the_instance_config_retries_failed_runs():
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "dagster.yaml"), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    assert config["run_retries"]["enabled"] is True and config["run_retries"]["max_retries"] >= 1
    lanes = {limit["key"] for limit in config["run_coordinator"]["config"]["tag_concurrency_limits"]}
    assert "staging-validation/notification-lane" in lanes
