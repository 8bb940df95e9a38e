"""The campaign lifecycle, its layout and its writes, tested directly (no Dagster)."""

from __future__ import annotations

import multiprocessing
import os
import stat
import time

import pytest

from staging_validation.config_files import ConfigError
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import (
    EARLY_ROUND,
    CampaignSettings,
    CampaignState,
    CampaignStatus,
    Delivery,
    EarlyStop,
    IllegalTransition,
    NotificationSettings,
    VerdictRound,
    close_campaign,
    fail_validator,
    load_campaign_state,
    mark_running,
    record_notification,
    record_verdict,
    register_campaign_state,
    stop_early,
    transition,
)
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.storage import atomic_write_bytes, atomic_write_text

HOUR_S = 3600.0


def registered(data_root, campaign: str = "c1", hours_ago: float = 0.0) -> CampaignState:
    start_ms = int((time.time() - hours_ago * HOUR_S) * 1000)
    return register_campaign_state(data_root, CampaignState(
        campaign=campaign, created_at_ms=start_ms, timing=CampaignTiming(start_ms=start_ms, hour_seconds=HOUR_S)))


def verdict(round_id: str, decision: str = "EXTEND", rule: str = "extend.forced_review", extend_hours: int = 48,
            judged_hours: int = 24, extension_count: int = 0) -> VerdictRound:
    return VerdictRound(round_id=round_id, judged_hours=judged_hours, extension_count=extension_count,
                        decision=decision, rule=rule, extend_hours=extend_hours, decided_at_ms=1)


def stop(hour: int = 3) -> EarlyStop:
    return EarlyStop(gate=1, rule="early_stop.missing_pack", first_seen="2026-12-01T00:00:00+00:00", hour=hour,
                     reason="a request ran without its pack")


def test_settings_are_typed_with_one_default_each_and_store_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("SV_SMTP_PASSWORD", "hunter2-secret")
    settings = CampaignSettings(notification=NotificationSettings(
        smtp_host="mail", recipients=["ops@example.com"], smtp_username="sv", smtp_password_env="SV_SMTP_PASSWORD"))
    assert CampaignSettings().stress_baseline_rps == 5.0 and CampaignSettings().telemetry[0].path
    start = int(time.time() * 1000)
    register_campaign_state(tmp_path, CampaignState(campaign="c1", created_at_ms=start, settings=settings,
                                                    timing=CampaignTiming(start_ms=start, hour_seconds=HOUR_S)))
    stored = CampaignLayout.of(tmp_path, "c1").state_file.read_text()
    assert "hunter2-secret" not in stored and '"smtp_password_env": "SV_SMTP_PASSWORD"' in stored
    assert load_campaign_state(tmp_path, "c1").settings == settings
    with pytest.raises(ConfigError, match="already registered"):
        register_campaign_state(tmp_path, load_campaign_state(tmp_path, "c1"))


def test_the_lifecycle_runs_registered_running_extended_decided_and_records_each_round_once(tmp_path):
    registered(tmp_path)
    assert mark_running(tmp_path, "c1").status == CampaignStatus.RUNNING
    state, first = record_verdict(tmp_path, "c1", verdict("24"))
    assert (state.status, state.extension_count, state.total_hours) == (CampaignStatus.EXTENDED, 1, 72)
    # The same round again (a re-materialization, with whatever it computes now) changes nothing.
    state, again = record_verdict(tmp_path, "c1", verdict("24", rule="extend.after_extension", extend_hours=0))
    assert again == first and (state.status, state.extension_count, state.total_hours) == ("extended", 1, 72)
    state, _ = record_verdict(tmp_path, "c1", verdict("72", "ACCEPT", "accept.all_pass", 0, 72, 1))
    assert state.status == CampaignStatus.DECIDED and [r.round_id for r in state.rounds] == ["24", "72"]
    with pytest.raises(IllegalTransition, match="cannot record round 96: it was decided in round 72"):
        record_verdict(tmp_path, "c1", verdict("96"))
    with pytest.raises(IllegalTransition, match="cannot stop it early.*it is decided"):
        stop_early(tmp_path, "c1", stop())
    with pytest.raises(IllegalTransition, match="it is decided"):
        fail_validator(tmp_path, "c1", "runs keep failing")


def test_an_early_stop_keeps_its_first_stop_and_is_judged_as_its_own_round(tmp_path):
    registered(tmp_path)
    state = stop_early(tmp_path, "c1", stop(hour=3))
    assert stop_early(tmp_path, "c1", stop(hour=9)).early_stop.hour == 3  # the first stop wins
    spec = state.round_to_judge()
    assert (spec.round_id, spec.judged_hours, spec.early_stop.rule) == (EARLY_ROUND, 4, "early_stop.missing_pack")
    with pytest.raises(IllegalTransition, match="cannot mark it running: it is stopped"):
        transition(tmp_path, "c1", lambda s: s.model_copy(update={"status": CampaignStatus.RUNNING}),
                   "mark it running")
    # A verdict run requested for round 24 before the stop came judges the early round instead.
    assert state.round_to_judge("24") == spec
    state, _ = record_verdict(tmp_path, "c1", verdict(EARLY_ROUND, "REJECT", "early_stop.missing_pack", 0, 4))
    assert state.status == CampaignStatus.DECIDED


def test_the_round_to_judge_during_an_extension_is_the_round_that_asked_for_it(tmp_path):
    registered(tmp_path, hours_ago=24.5)
    due = load_campaign_state(tmp_path, "c1").round_to_judge()
    assert (due.round_id, due.judged_hours, due.extension_count) == ("24", 24, 0)
    state, _ = record_verdict(tmp_path, "c1", verdict("24"))
    # Hour 24 of 72: round 72 is not due; judging now re-judges round 24 as it was judged.
    assert state.round_to_judge() == due
    with pytest.raises(ConfigError, match="verdict round 72 is not due yet"):
        state.round_to_judge("72")  # named by a run's tag, it is judged once due, never before
    with pytest.raises(ConfigError, match="no verdict round '48'"):
        state.round_to_judge("48")


def test_a_round_not_due_yet_is_a_config_error_naming_the_campaign(tmp_path):
    state = registered(tmp_path)
    with pytest.raises(ConfigError, match="campaign c1: no verdict round is due yet"):
        state.round_to_judge()


def test_a_notification_is_recorded_once_per_round(tmp_path):
    registered(tmp_path)
    record_verdict(tmp_path, "c1", verdict("24", "ACCEPT", "accept.all_pass", 0))
    first = Delivery(status="sent", channels={"smtp": "sent"}, eml="/outbox/a.eml", sent_at_ms=1)
    second = Delivery(status="sent", channels={"smtp": "sent"}, eml="/outbox/b.eml", sent_at_ms=2)
    assert record_notification(tmp_path, "c1", "24", first).notified == first
    assert record_notification(tmp_path, "c1", "24", second).notified == first
    with pytest.raises(IllegalTransition, match="round 72 has no recorded verdict"):
        record_notification(tmp_path, "c1", "72", first)


def test_validator_failed_and_closed_campaigns_are_final(tmp_path):
    registered(tmp_path, "failing")
    state = fail_validator(tmp_path, "failing", "its hour runs failed 3 times", now_ms=5)
    assert state.status.final and state.validator_failure.reason == "its hour runs failed 3 times"
    registered(tmp_path, "rehearsed")
    with pytest.raises(IllegalTransition, match="before its first verdict"):
        close_campaign(tmp_path, "rehearsed")
    record_verdict(tmp_path, "rehearsed", verdict("24"))
    assert close_campaign(tmp_path, "rehearsed").status == CampaignStatus.DECIDED


def _extend_once(data_root: str, round_id: str) -> None:
    record_verdict(data_root, "c1", verdict(round_id, extend_hours=1))


def test_concurrent_writers_never_lose_each_others_transition(tmp_path):
    registered(tmp_path)
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_extend_once, args=(str(tmp_path), f"r{n}")) for n in range(6)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    state = load_campaign_state(tmp_path, "c1")
    assert (state.extension_count, state.extension_hours, len(state.rounds)) == (6, 6, 6)


@pytest.mark.parametrize("content", ['{"campaign": "c1", "created_', "", "\xff\xfe not text"])
def test_a_corrupt_state_file_is_a_config_error_naming_the_file(tmp_path, content):
    registered(tmp_path)
    path = CampaignLayout.of(tmp_path, "c1").state_file
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError, match="unreadable campaign state") as refused:
        load_campaign_state(tmp_path, "c1")
    assert str(path) in str(refused.value)
    with pytest.raises(ConfigError, match=str(path)):
        mark_running(tmp_path, "c1")  # a transition reads it too: it changes nothing


def test_written_files_get_the_umask_permissions_not_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a" / "table.parquet", b"PAR1")
        atomic_write_text(tmp_path / "decision.json", "{}")
    finally:
        os.umask(previous)
    for path in (tmp_path / "a" / "table.parquet", tmp_path / "decision.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []


def test_the_layout_names_every_file_of_a_campaign_and_refuses_unsafe_names(tmp_path):
    layout = CampaignLayout.of(tmp_path, "night-1")
    base = tmp_path / "campaigns" / "night-1"
    assert layout.state_file == base / "campaign.json"
    assert layout.hour_file("probe_records", 7) == base / "hours" / "probe_records" / "07.parquet"
    assert layout.verdict_file("gate_results", ".json") == base / "verdict" / "gate_results.json"
    assert layout.round_final_checks_file("24") == base / "verdict" / "rounds" / "24" / "final_checks.parquet"
    assert (layout.telemetry_dir, layout.monitor_cursor_file, layout.alerts_file, layout.outbox_dir) == (
        base / "telemetry", base / "monitor" / "cursor.json", base / "alerts.jsonl", base / "outbox")
    assert layout.report_file == base / "STAGING_ACCEPTANCE_REPORT.md"
    assert layout.chart_file("latency_by_hour.png") == base / "charts" / "latency_by_hour.png"
    with pytest.raises(ConfigError, match="campaign id '../x'"):
        CampaignLayout.of(tmp_path, "../x")
    with pytest.raises(ConfigError, match="verdict round '../24'"):
        layout.round_dir("../24")
