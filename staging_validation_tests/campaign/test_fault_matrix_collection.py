"""Fault matrix, collection: the validator's own lag is never charged to the target, and what was
collected is never lost. Each case failed before collection moved out of materialization."""

from __future__ import annotations

import time

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from staging_validation.campaign.jobs import CampaignLaunchConfig, register_campaign
from staging_validation.campaign.partitions import campaign_hour_key
from staging_validation.campaign.rehearsal import QUIET_RUN_CONFIG
from staging_validation.campaign.resources import CampaignStore
from staging_validation.collection.collector import run_collector
from staging_validation.collection.recorded_steps import StepStatus, collection_by_hour, hour_outcomes, hour_records
from staging_validation.definitions import build_definitions
from staging_validation.layout import HOURLY_ASSET_PROBE_RECORDS, CampaignLayout
from staging_validation.lifecycle import CampaignStatus, load_campaign_state, transition
from staging_validation.plan import ProbeStep

HOUR_SECONDS = 3.0


def register(data_root, simulator, campaign: str, hours: int, now_ms: int | None = None):
    config = CampaignLaunchConfig(campaign=campaign, base_url=simulator.base_url,
                                  telemetry_path=str(simulator.log_path), hours=hours, hour_seconds=HOUR_SECONDS,
                                  stress_baseline_rps=2.0)
    return register_campaign(CampaignStore(data_root=str(data_root)), config, now_ms=now_ms)


def probe_requests(simulator) -> int:
    return simulator.stats()["requests"]["probe"]


def test_rematerializing_a_past_probe_hour_any_number_of_times_keeps_its_rows_and_never_probes_again(
        tmp_path, simulator_factory):
    simulator = simulator_factory(profile="healthy", hour_seconds=HOUR_SECONDS, organic_rps=5.0)
    data_root = tmp_path / "data"
    defs = build_definitions(str(data_root))
    with dg.instance_for_test() as instance:
        assert defs.get_job_def("start_campaign").execute_in_process(instance=instance, run_config={
            **QUIET_RUN_CONFIG, "ops": {"register_campaign_op": {"config": {
                "campaign": "remat", "base_url": simulator.base_url, "telemetry_path": str(simulator.log_path),
                "hours": 1, "hour_seconds": HOUR_SECONDS}}}}).success
        assert defs.get_job_def("campaign_collector").execute_in_process(instance=instance, run_config={
            **QUIET_RUN_CONFIG, "ops": {"collect_probe_steps": {"config": {"campaign": "remat"}}}}).success
        hour_zero = campaign_hour_key("remat", 0)
        assert defs.resolve_job_def("campaign_hour").execute_in_process(
            instance=instance, partition_key=hour_zero, run_config=QUIET_RUN_CONFIG).success
        assert time.time() >= load_campaign_state(data_root, "remat").timing.hour_start_s(1), "hour 0 is past"
        stored = CampaignLayout.of(data_root, "remat").hour_file(HOURLY_ASSET_PROBE_RECORDS, 0)
        first = pq.read_table(stored)
        assert first.num_rows >= 12  # the identity watch and the deploy verification
        sent = probe_requests(simulator)

        # `dagster asset materialize --select probe_records --partition "remat|00"`, three times.
        for _ in range(3):
            assert dg.materialize([defs.get_assets_def("probe_records")], instance=instance, partition_key=hour_zero,
                                  resources=defs.resources).success
            assert pq.read_table(stored).equals(first)
        assert probe_requests(simulator) == sent, "re-materializing a past hour sent probe requests"


def test_hour_zero_begins_when_the_collector_is_ready_however_late_its_run_was_launched(tmp_path, simulator_factory):
    simulator = simulator_factory(profile="healthy", hour_seconds=HOUR_SECONDS, organic_rps=5.0)
    data_root = tmp_path / "data"
    # Registered ten campaign hours ago: the collector's run took that long to be launched.
    register(data_root, simulator, "late-launch", hours=1, now_ms=int((time.time() - 10 * HOUR_SECONDS) * 1000))
    collector_started = time.time()
    run_collector(data_root, "late-launch")

    state = load_campaign_state(data_root, "late-launch")
    assert state.status is CampaignStatus.RUNNING and state.timing.start_ms >= int(collector_started * 1000)
    outcomes = hour_outcomes(data_root, "late-launch", 0)
    assert {step: o.status for step, o in outcomes.items()} == {
        ProbeStep.IDENTITY_WATCH: StepStatus.RAN, ProbeStep.DEPLOY_VERIFICATION: StepStatus.RAN}
    assert outcomes[ProbeStep.DEPLOY_VERIFICATION].passed
    for outcome in outcomes.values():  # each started in hour 0 (how long it takes is the machine's business)
        assert state.timing.start_ms <= outcome.started_ms < state.timing.hour_start_s(1) * 1000
    rows = hour_records(data_root, "late-launch", 0).to_pandas()
    assert len(rows) >= 12 and (rows["campaign_s"] >= 0).all()


def test_a_collector_that_starts_hours_late_records_them_as_not_run_and_probes_the_current_hour_with_true_times(
        tmp_path, simulator_factory):
    simulator = simulator_factory(profile="healthy", hour_seconds=HOUR_SECONDS, organic_rps=5.0)
    data_root = tmp_path / "data"
    register(data_root, simulator, "restarted", hours=3)
    # The campaign ran 2.3 hours without a collector (its process was killed, the daemon was down).
    started_ms = int((time.time() - 2.3 * HOUR_SECONDS) * 1000)
    transition(data_root, "restarted", lambda state: state.model_copy(update={
        "status": CampaignStatus.RUNNING, "timing": state.timing.model_copy(update={"start_ms": started_ms})}),
        "start it 2.3 hours ago")
    state = load_campaign_state(data_root, "restarted")
    collector_started = time.time()
    run_collector(data_root, "restarted")

    by_hour = {hour.hour: hour for hour in collection_by_hour(data_root, state)}
    for missed in (0, 1):
        assert by_hour[missed].ran == ()
        assert set(by_hour[missed].not_run) == set(by_hour[missed].planned)
        assert all("no collector was running" in reason for reason in by_hour[missed].not_run.values())
        assert hour_records(data_root, "restarted", missed).num_rows == 0, "an ended hour was probed late"
    assert set(by_hour[2].ran) == {ProbeStep.IDENTITY_WATCH, ProbeStep.PROMPT_SET} and by_hour[2].unrecorded == ()
    # Started late, inside hour 2; the rows keep the times the requests were really sent at (a step that
    # outlasts its hour on a busy machine keeps its later times too: nothing is back-dated).
    for outcome in hour_outcomes(data_root, "restarted", 2).values():
        assert int(collector_started * 1000) <= outcome.started_ms < state.timing.hour_start_s(3) * 1000
    rows = hour_records(data_root, "restarted", 2).to_pandas()
    assert (rows["time"] >= pd.Timestamp(collector_started, unit="s", tz="UTC").floor("ms")).all()


@pytest.mark.parametrize("second_writer_rows", [0, 5])
def test_a_recorded_step_is_never_replaced(tmp_path, second_writer_rows):
    from staging_validation.collection.recorded_steps import StepOutcome, record_step, step_path
    from staging_validation.schemas.probe_records import ProbeRecord

    def rows(n: int) -> list[ProbeRecord]:
        return [ProbeRecord(time=pd_time(i), campaign_s=float(i), probe="identity", case=f"c{i}", user="", route="/r",
                            method="GET", outcome="ok", latency_ms=1.0) for i in range(n)]

    first = StepOutcome(hour=0, step=ProbeStep.IDENTITY_WATCH, status=StepStatus.RAN, ended_ms=1, passed=True)
    assert record_step(tmp_path, "c1", first, rows(3))
    before = step_path(tmp_path, "c1", 0, ProbeStep.IDENTITY_WATCH).read_bytes()
    again = StepOutcome(hour=0, step=ProbeStep.IDENTITY_WATCH, status=StepStatus.NOT_RUN, ended_ms=2, reason="x")
    assert not record_step(tmp_path, "c1", again, rows(second_writer_rows))
    assert step_path(tmp_path, "c1", 0, ProbeStep.IDENTITY_WATCH).read_bytes() == before
    assert hour_records(tmp_path, "c1", 0).num_rows == 3
    assert hour_outcomes(tmp_path, "c1", 0)[ProbeStep.IDENTITY_WATCH].status is StepStatus.RAN


def pd_time(seconds: int):
    from datetime import UTC, datetime
    return datetime.fromtimestamp(1_700_000_000 + seconds, tz=UTC)
