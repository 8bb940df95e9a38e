"""Fault matrix, validator gaps (issue 10): the validator's own faults are named, alerted, made up where the
plan allows, and never charged to the target; a launch refuses what cannot work, with the problem on top."""

from __future__ import annotations

import json
import time

import dagster as dg
import pandas as pd
import pytest
from click.testing import CliRunner

from staging_validation.acceptance.cli import EXIT_CODES
from staging_validation.acceptance.decision import decide
from staging_validation.acceptance.gates import evaluate_gates
from staging_validation.acceptance.judge import judge_campaign
from staging_validation.acceptance.notify import compose_decision_message
from staging_validation.acceptance.policy import load_policy
from staging_validation.acceptance.report import write_campaign_outputs
from staging_validation.campaign.jobs import CampaignLaunchConfig, register_campaign, start_campaign
from staging_validation.campaign.partitions import campaign_partitions
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.sensors import campaign_clock
from staging_validation.cli import main
from staging_validation.definitions import build_definitions
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignState, CampaignStatus, transition
from staging_validation.plan import MIN_HOUR_SECONDS
from staging_validation.validator_gaps import GAP_ALERT_RULE, ValidatorCoverage, validator_coverage
from staging_validation_tests.acceptance.acceptance_tables import events, healthy_campaign, records, store_campaign
from staging_validation_tests.campaign.test_watch_sensor import tick

POLICY = load_policy(None)


def missed(hours: int = 3) -> ValidatorCoverage:
    """Every probe run of a campaign started after its hour: nothing probed, all telemetry captured."""
    return validator_coverage(hours, hours, hours, records([]), telemetry_hours=range(hours))


# --- the verdict: missing evidence through the validator is never a REJECT or a forced EXTEND ----------------


def test_a_healthy_target_whose_probe_runs_all_ran_late_is_inconclusive_not_extended_then_rejected(tmp_path):
    # Main: EXTEND extend.critical_no_data with "coverage 100 %", 48 hours queued, then REJECT
    # reject.no_evidence_after_extension: a healthy service rejected for the validator's lag.
    _, healthy_events = healthy_campaign(hours=3)
    store_campaign(tmp_path, "late-probes", records([]).iloc[0:0], healthy_events, planned_hours=3)
    evidence = judge_campaign(tmp_path, "late-probes")
    assert (evidence.decision.decision, evidence.decision.rule) == ("INCONCLUSIVE", "inconclusive.validator")
    assert "validator failed to collect" in evidence.decision.reason and "hour 0 deploy" in evidence.decision.reason
    assert evidence.validator.probe_coverage == 0 and evidence.validator.telemetry_coverage == 1
    result = CliRunner().invoke(main, ["verdict", "--campaign", "late-probes", "--data-root", str(tmp_path)])
    assert result.exit_code == EXIT_CODES["INCONCLUSIVE"] == 5, result.output
    # The same campaign judged after an extension is still not a REJECT.
    store_campaign(tmp_path, "late-probes-extended", records([]).iloc[0:0], healthy_events, planned_hours=3,
                   extension_count=1)
    assert judge_campaign(tmp_path, "late-probes-extended").decision.rule == "inconclusive.validator"


def test_the_report_states_probe_and_telemetry_coverage_apart_and_what_the_validator_missed(tmp_path):
    _, healthy_events = healthy_campaign(hours=3)
    store_campaign(tmp_path, "late-probes", records([]).iloc[0:0], healthy_events, planned_hours=3)
    evidence = judge_campaign(tmp_path, "late-probes")
    message = compose_decision_message(evidence.decision, evidence.gates, POLICY, "late-probes", [0, 1, 2])
    paths = write_campaign_outputs(CampaignLayout.of(tmp_path, "late-probes"), evidence, message)
    report = paths["report"].read_text()
    assert "| Probe coverage | 0%: 0 of 6 due probe steps ran in their hour |" in report
    assert "| Telemetry coverage | 100%: 3 of 3 hours ingested |" in report
    assert "## What the validator missed" in report and "| 2 | prompt_set | not recorded in its hour | no |" in report
    document = json.loads(paths["decision"].read_text())
    assert document["validator"]["probe_coverage"] == 0 and len(document["validator"]["gaps"]) == 6
    assert message.subject.endswith("INCONCLUSIVE (inconclusive.validator)")
    assert "nothing stands against the target" in message.body


def test_a_target_that_produced_no_evidence_while_the_validator_collected_everything_is_still_extended():
    collected = validator_coverage(3, 3, 3, records([{"probe": s, "hour": h} for h, steps in
                                                    ((0, ("identity", "deploy")), (1, ("identity", "smoke")),
                                                     (2, ("identity", "prompt_set"))) for s in steps]), range(3))
    gates = evaluate_gates(records([]), events([]), POLICY)
    assert decide(gates, 0.0, POLICY, validator=collected).rule == "extend.critical_no_data"
    assert decide(gates, 0.0, POLICY, extension_count=1, validator=collected).rule == \
        "reject.no_evidence_after_extension"
    # The same gates with the validator's gaps: not the target's to answer for.
    assert decide(gates, 0.0, POLICY, validator=missed()).rule == "inconclusive.validator"
    assert decide(gates, 0.0, POLICY, extension_count=1, validator=missed()).decision == "INCONCLUSIVE"


def test_evidence_against_the_target_still_rejects_whatever_the_validator_missed():
    healthy_records, healthy_events = healthy_campaign(hours=3)
    missing = events([{"kind": "pack_missing", "level": 50, "user_hash": "u-1", "hour": 1}])
    gates = evaluate_gates(healthy_records, pd.concat([healthy_events, missing], ignore_index=True), POLICY)
    assert decide(gates, 1.0, POLICY, validator=missed()).decision == "REJECT"


def test_a_campaign_stopped_as_validator_failed_is_inconclusive_with_its_reason():
    reason = "validator_failed: 3 runs of the campaign failed in a row (a, b, c)"
    failed = validator_coverage(3, 3, 3, records([]), range(3), failed_reason=reason)
    decision = decide(evaluate_gates(records([]), events([]), POLICY), 0.0, POLICY, validator=failed)
    assert (decision.decision, decision.rule, decision.extend_hours) == (
        "INCONCLUSIVE", "inconclusive.validator_failed", 0)
    assert reason in decision.reason


# --- the clock: gaps alerted at once, once; a campaign whose runs keep failing is stopped ---------------------


def registered(store: CampaignStore, hours_ago: float, hour_seconds: float = 60.0, **launch) -> CampaignState:
    """A campaign registered `hours_ago` campaign hours ago (its clock already running)."""
    now_ms = int((time.time() - hours_ago * hour_seconds) * 1000)
    config = CampaignLaunchConfig(campaign=launch.pop("campaign", "lagging"), hour_seconds=hour_seconds,
                                  hours=launch.pop("hours", 24), **launch)
    return register_campaign(store, config, now_ms=now_ms)


def test_hours_missed_while_the_daemon_was_down_are_alerted_at_the_first_tick_once(tmp_path):
    # Main: "Hours missed while the daemon was down are lost without an alert."
    store = CampaignStore(data_root=str(tmp_path / "data"))
    registered(store, hours_ago=3.5)
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(campaign_partitions.name, ["lagging"])
        first = tick(campaign_clock, instance, defs)
        alerts = [a for a in store.read_alerts("lagging") if a["rule"] == GAP_ALERT_RULE]
        assert {(e["hour"], e["step"]) for a in alerts for e in a["evidence"]} == {
            (0, "identity"), (0, "deploy"), (1, "identity"), (1, "smoke"), (2, "identity"), (2, "prompt_set")}
        assert all("no probe run was launched" in a["message"] for a in alerts)
        tick(campaign_clock, instance, defs, cursor=first.cursor)
        tick(campaign_clock, instance, defs)  # a lost cursor: the stored alerts keep it from alerting twice
        assert len([a for a in store.read_alerts("lagging") if a["rule"] == GAP_ALERT_RULE]) == len(alerts)


def test_a_campaign_whose_runs_keep_failing_is_stopped_as_validator_failed_and_queues_no_doomed_runs(tmp_path):
    # Main: a broken campaign's hour runs failed one after the other, it was EXTENDed and queued 173 runs.
    store = CampaignStore(data_root=str(tmp_path / "data"))
    log = tmp_path / "staging.log"
    log.write_text("")
    state = registered(store, hours_ago=4.2, hour_seconds=30.0, campaign="broken", telemetry_path=str(log))
    # The stored settings break after the launch: every hour run of this campaign now fails for real.
    broken = state.settings.model_copy(update={"target_profile": str(tmp_path / "gone.yaml")})
    transition(store.data_root, "broken", lambda s: s.model_copy(update={"settings": broken}), "break its settings")
    defs = build_definitions(store.data_root)
    hour_job = defs.resolve_job_def("campaign_hour")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(campaign_partitions.name, ["broken"])
        for hour in range(3):
            result = hour_job.execute_in_process(
                instance=instance, partition_key=dg.MultiPartitionKey({"campaign": "broken", "hour": f"{hour:02d}"}),
                tags={"dagster/run_key": f"broken:hour:{hour:02d}", "staging-validation/campaign": "broken"},
                raise_on_error=False)
            assert not result.success
        requests = tick(campaign_clock, instance, defs).run_requests
    stopped = store.load("broken")
    assert stopped.status is CampaignStatus.VALIDATOR_FAILED
    assert "3 runs of the campaign failed in a row" in stopped.validator_failure.reason
    assert requests == []  # final: no doomed hour run and no extension is queued
    rejudged = judge_campaign(store.data_root, "broken")
    assert (rejudged.decision.decision, rejudged.decision.rule) == ("INCONCLUSIVE", "inconclusive.validator_failed")
    assert any(a["rule"] == "monitor.validator_failed" for a in store.read_alerts("broken"))


# --- make-up: the gates need sample counts, not a particular hour -------------------------------------------


def test_an_observation_hour_makes_up_a_step_missed_earlier(tmp_path, simulator_factory):
    simulator = simulator_factory(profile="healthy", hour_seconds=60.0)
    store = CampaignStore(data_root=str(tmp_path / "data"))
    # Hours 0..7 went by without a probe run; hour 8 (observation) is current for the next ~50 s.
    state = registered(store, hours_ago=8.15, campaign="makeup", base_url=simulator.base_url,
                       telemetry_path=str(simulator.log_path))
    defs = build_definitions(store.data_root)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(campaign_partitions.name, ["makeup"])
        result = defs.resolve_job_def("campaign_probes").execute_in_process(
            instance=instance, partition_key=dg.MultiPartitionKey({"campaign": "makeup", "hour": "08"}))
        assert result.success
        metadata = result.asset_materializations_for_node("probe_records")[0].metadata
    assert metadata["made_up_step"].value == "deploy"  # the oldest gap first
    evidence = judge_campaign(store.data_root, "makeup")
    deploy_gap = next(g for g in evidence.validator.gaps if g.hour == 0 and g.step.value == "deploy")
    assert deploy_gap.made_up_in == 8
    assert state.planned_hours == 24


# --- launch: refuses what cannot work, with the problem as the failure's message -----------------------------


@pytest.mark.parametrize(("field", "value", "message"), [
    ("hours", 99, "hours: 99 is out of range: a campaign plans 1 to 24 hours"),
    ("hours", 0, "hours: 0 is out of range"),
    ("hour_seconds", 0.001, f"hour_seconds: 0.001 s is shorter than the validator can serve: the floor is "
                            f"{MIN_HOUR_SECONDS:g} s"),
    ("stress_baseline_rps", 0, "stress_baseline_rps: 0 must be a positive number"),
    ("telemetry_path", "DIRECTORY", "is a directory; give the target's log file"),
])
def test_the_launch_refuses_what_cannot_work_at_the_top_of_the_error(tmp_path, field, value, message):
    value = str(tmp_path) if value == "DIRECTORY" else value
    store = CampaignStore(data_root=str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        result = start_campaign.execute_in_process(
            instance=instance, resources={"store": store}, raise_on_error=False,
            run_config={"ops": {"register_campaign_op": {"config": {"campaign": "refused", field: value}}}})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    # The problem is the failure itself (a dg.Failure description), not the chained cause of a step error.
    assert failure.error.cls_name == "Failure" and message in failure.user_failure_data.description
    assert not (tmp_path / "data" / "campaigns" / "refused").exists()


def test_rehearse_refuses_an_hour_shorter_than_the_floor_in_one_line():
    result = CliRunner().invoke(main, ["rehearse", "--hour-seconds", "1"], env={"DAGSTER_HOME": "/nonexistent"})
    assert result.exit_code == 2
    assert f"1 s is shorter than the validator can serve: the floor is {MIN_HOUR_SECONDS:g} s" in result.output
