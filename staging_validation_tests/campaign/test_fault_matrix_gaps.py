"""Fault matrix, the validator's gaps: launches that cannot work are refused at the top of the error; steps
the validator missed are alerted, made up and never charged to the target; a campaign whose own runs keep
failing is stopped with the reason. Each case failed on main before the gaps were ported to the collector.

Real simulator, real collector, real Dagster jobs and sensors in a temporary instance.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest
from click.testing import CliRunner

from staging_validation.acceptance.judge import judge_campaign
from staging_validation.acceptance.notify import compose_decision_message
from staging_validation.acceptance.report import write_campaign_outputs
from staging_validation.campaign.jobs import CampaignLaunchConfig, register_campaign
from staging_validation.campaign.notification_jobs import campaign_run_failures
from staging_validation.campaign.partitions import campaign_hour_key
from staging_validation.campaign.rehearsal import QUIET_RUN_CONFIG
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.run_tags import TAG_CAMPAIGN, TAG_HOUR, TAG_PHASE
from staging_validation.campaign.watch_sensor import watch_campaign
from staging_validation.cli import main
from staging_validation.collection.collector import run_collector
from staging_validation.collection.recorded_steps import StepStatus, collection_by_hour, hour_outcomes
from staging_validation.collection.validator_gaps import find_gaps
from staging_validation.config_files import ConfigError
from staging_validation.definitions import build_definitions
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignStatus, load_campaign_state, transition
from staging_validation.plan import MIN_HOUR_SECONDS, ProbeStep

HOUR_SECONDS = 3.0


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("hour_seconds", 0.001, "hour_seconds: 0.001 s is shorter than the validator can serve: the floor is 3 s"),
    ("hour_seconds", 1.0, "hour_seconds: 1 s is shorter than the validator can serve"),
    ("hour_seconds", float("nan"), "hour_seconds: nan s is shorter"),
    ("hour_seconds", 7200.0, "hour_seconds: 7200 s is longer than the runbook's real hour"),
    ("hours", 0, "hours: 0 is out of range: a campaign plans 1 to 24 hours"),
    ("hours", 25, "hours: 25 is out of range"),
    ("stress_baseline_rps", 0.0, "stress_baseline_rps: 0 must be a positive number"),
])
def test_a_launch_that_cannot_work_is_refused_naming_the_field(tmp_path, field, value, problem):
    store = CampaignStore(data_root=str(tmp_path / "data"))
    config = CampaignLaunchConfig(campaign="refused", telemetry_path=str(tmp_path / "x.log"), **{field: value})
    with pytest.raises(ConfigError, match="campaign 'refused' not launched") as error:
        register_campaign(store, config)
    assert problem in str(error.value)
    assert not (tmp_path / "data" / "campaigns" / "refused").exists()


def test_a_telemetry_directory_is_refused_at_the_top_of_the_launch_runs_error(tmp_path):
    defs = build_definitions(str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        result = defs.get_job_def("start_campaign").execute_in_process(instance=instance, raise_on_error=False,
                                                                       run_config={**QUIET_RUN_CONFIG, "ops": {
            "register_campaign_op": {"config": {"campaign": "dir", "telemetry_path": str(tmp_path)}}}})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type is dg.DagsterEventType.STEP_FAILURE]
    # The problem is the failure's own description, not the chained cause of a Dagster wrapper.
    description = failure.step_failure_data.user_failure_data.description
    assert description == f"campaign 'dir' not launched: telemetry_path: {tmp_path} is a directory; give the " \
                          "target's log file"


def test_rehearse_refuses_an_hour_shorter_than_the_measured_floor(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["rehearse", "--hour-seconds", "1"])
    assert result.exit_code == 2
    assert f"the floor is {MIN_HOUR_SECONDS:g} s" in result.output


def started_hours_ago(data_root, simulator, campaign: str, hours: int, ago_hours: float):
    """A campaign whose clock has been running `ago_hours` with no collector (the daemon was down)."""
    register_campaign(CampaignStore(data_root=str(data_root)), CampaignLaunchConfig(
        campaign=campaign, base_url=simulator.base_url, telemetry_path=str(simulator.log_path), hours=hours,
        hour_seconds=HOUR_SECONDS, stress_baseline_rps=2.0))
    started_ms = int((time.time() - ago_hours * HOUR_SECONDS) * 1000)
    transition(data_root, campaign, lambda state: state.model_copy(update={
        "status": CampaignStatus.RUNNING, "timing": state.timing.model_copy(update={"start_ms": started_ms})}),
        f"start it {ago_hours} hours ago")


def test_missed_steps_are_alerted_made_up_in_an_observation_hour_and_named_never_charged_to_the_target(
        tmp_path, simulator_factory):
    simulator = simulator_factory(profile="healthy", hour_seconds=HOUR_SECONDS, organic_rps=5.0)
    data_root = tmp_path / "data"
    store = CampaignStore(data_root=str(data_root))
    # Hours 0-6 (deploy, smoke loop, prompt sets) passed with no collector; hour 8 is an observation hour.
    started_hours_ago(data_root, simulator, "gaps", hours=9, ago_hours=7.3)
    run_collector(data_root, "gaps")
    state = load_campaign_state(data_root, "gaps")

    hour_8 = hour_outcomes(data_root, "gaps", 8)
    makeup = hour_8[ProbeStep.DEPLOY_VERIFICATION]  # the oldest gap of a step the plan allows to make up
    assert (makeup.makeup_of, makeup.status, makeup.passed) == (0, StepStatus.RAN, True)
    gaps = {gap.key: gap for gap in find_gaps(state, collection_by_hour(data_root, state), time.time())}
    assert gaps["deploy@0"].made_up_in == 8
    assert gaps["smoke_loop@1"].made_up_in is None and "no collector was running" in gaps["smoke_loop@1"].cause
    assert {f"identity@{hour}" for hour in range(7)} <= set(gaps)

    # The watch alerts each gap once, as the validator's.
    raised, _ = watch_campaign(store, state)
    gap_alerts = [a for a in raised if a["rule"] == "monitor.validator_gap"]
    assert {f"{a['evidence'][0]['step']}@{a['evidence'][0]['hour']}" for a in gap_alerts} == set(gaps)
    assert all("not evidence against the target" in a["message"] for a in gap_alerts)
    again, _ = watch_campaign(store, state)
    assert not [a for a in again if a["rule"] == "monitor.validator_gap"]

    # The hours as the clock would materialize them, then the verdict over the round.
    defs = build_definitions(str(data_root))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("campaign", ["gaps"])
        for hour in range(9):
            assert defs.resolve_job_def("campaign_hour").execute_in_process(
                instance=instance, partition_key=campaign_hour_key("gaps", hour), run_config=QUIET_RUN_CONFIG).success
    evidence = judge_campaign(data_root, "gaps")
    validator = evidence.validator
    assert validator is not None and validator.open_gaps
    decision = evidence.decision
    # Hours 0-5 predate the simulator too, so the evidence is thin: inconclusive, naming what the validator
    # missed, never an EXTEND or a REJECT for it.
    assert (decision.decision, decision.rule) == ("INCONCLUSIVE", "inconclusive.validator"), decision.reason
    assert "hour 1 smoke_loop: no collector was running during the hour, not made up" in decision.reason
    report = evidence_report(data_root, evidence)
    assert "## What the validator missed" in report and "| 0 | deploy | no collector was running during the hour " \
        "| in hour 8 |" in report


def evidence_report(data_root, evidence) -> str:
    message = compose_decision_message(evidence.decision, evidence.gates, evidence.policy, evidence.campaign,
                                       evidence.hours_observed)
    paths = write_campaign_outputs(CampaignLayout.of(data_root, evidence.campaign), evidence, message)
    return paths["report"].read_text(encoding="utf-8")


def failed_verdict_run(defs, instance) -> None:
    """A verdict run that fails for the validator's reason (no round of the campaign is due yet)."""
    result = defs.resolve_job_def("campaign_verdict").execute_in_process(
        instance=instance, partition_key="failing", raise_on_error=False, run_config=QUIET_RUN_CONFIG,
        tags={TAG_CAMPAIGN: "failing", TAG_PHASE: "verdict", TAG_HOUR: "24", "dagster/max_retries": "0"})
    assert not result.success


def test_a_campaign_whose_runs_keep_failing_is_stopped_as_validator_failed_with_the_reason(tmp_path):
    data_root = tmp_path / "data"
    store = CampaignStore(data_root=str(data_root))
    register_campaign(store, CampaignLaunchConfig(campaign="failing", telemetry_path=str(tmp_path / "x.log"),
                                                  hour_seconds=600.0))
    defs = build_definitions(str(data_root))

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                          instance_ref=instance.get_ref(), resources=defs.resources)
        return campaign_run_failures.evaluate_tick(context)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("campaign", ["failing"])
        cursor = tick(None).cursor
        for _ in range(2):
            failed_verdict_run(defs, instance)
            cursor = tick(cursor).cursor or cursor
            assert load_campaign_state(data_root, "failing").status is CampaignStatus.REGISTERED
        failed_verdict_run(defs, instance)
        tick(cursor)
    state = load_campaign_state(data_root, "failing")
    assert state.status is CampaignStatus.VALIDATOR_FAILED
    assert state.validator_failure is not None and "3 of the campaign's runs failed in a row" in \
        state.validator_failure.reason
    rules = [a["rule"] for a in store.read_alerts("failing")]
    assert rules.count("monitor.validator_run_failed") == 3 and rules[-1] == "monitor.validator_failed"
    # Re-judged, it says the validator failed, and nothing about the target.
    decision = judge_campaign(data_root, "failing").decision
    assert (decision.decision, decision.rule) == ("INCONCLUSIVE", "inconclusive.validator_failed")
