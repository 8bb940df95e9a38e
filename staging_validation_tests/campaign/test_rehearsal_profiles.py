"""Every simulator fault profile rehearsed end to end through the real Dagster definitions.

Each test starts the real simulator with one profile, runs a whole campaign with `rehearse` in its own
temporary instance and data root, and checks what an ops lead would read: the decision, the deciding
gate and the rule, the alerts and incidents, and the files the verdict leaves behind. The sensors and
runs are served in the test's process (`runs_in_process`: the same sensors and jobs, without a process
per run); the real daemon serves the rehearsals of test_daemon_rehearsal.py and test_daemon_e2e.py.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from rich.console import Console

from staging_validation.acceptance.policy import DEFAULT_POLICY_PATH
from staging_validation.campaign.rehearsal import RehearsalOutcome, instance_home, rehearse
from staging_validation.campaign.run_tags import TAG_CAMPAIGN, TAG_HOUR, TAG_PHASE
from staging_validation.layout import HOURLY_ASSET_PROBE_RECORDS, HOURLY_ASSET_TELEMETRY_EVENTS, CampaignLayout
from staging_validation.lifecycle import CampaignStatus, load_campaign_state
from staging_validation.simulator.profiles import load_profile
from staging_validation_tests.campaign.runs_in_process import runs_in_process

pytestmark = pytest.mark.e2e

# Few hours in which every gate has enough samples: the prompt set of hours 2–5 gives gate 2 its 50
# labelled rows even if one of its hours is lost to a slow run launch (22 per hour), and the probe rounds
# give gates 3 and 5 theirs. 3 s hours leave room for Dagster's run launch under parallel test load.
HOURS = 6
HOUR_SECONDS = 3.0
ORGANIC_RPS = 10.0
EXTENSION_HOURS = 48


class Rehearsal:
    def __init__(self, outcome: RehearsalOutcome, instance: dg.DagsterInstance, data_root: Path):
        self.outcome = outcome
        self.instance = instance
        self.data_root = data_root
        self.layout = CampaignLayout.of(data_root, outcome.campaign)

    @property
    def decision(self) -> dict:
        return self.outcome.decision

    def gate(self, number: int) -> dict:
        return next(g for g in self.outcome.gates if g["gate"] == number)

    def state(self):
        return load_campaign_state(self.data_root, self.outcome.campaign)

    def alerts(self) -> list[dict]:
        path = self.layout.alerts_file
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def alert_rules(self) -> set[str]:
        return {alert["rule"] for alert in self.alerts()}

    def run_hours(self) -> list[int]:
        """The campaign hour of every hour run in the instance (collectors and verdicts serve a round)."""
        runs = self.instance.get_run_records(dg.RunsFilter(tags={TAG_CAMPAIGN: self.outcome.campaign}))
        return sorted(int(run.dagster_run.tags[TAG_HOUR]) for run in runs
                      if TAG_HOUR in run.dagster_run.tags and run.dagster_run.tags.get(TAG_PHASE) != "verdict")

    def decisions_materialized(self) -> list[tuple[str, str]]:
        """(decision, rule) of every materialization of the campaign's decision, oldest first."""
        result = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("campaign_decision"),
                                  asset_partitions=[self.outcome.campaign]),
            limit=100, ascending=True)
        return [(m.asset_materialization.metadata["decision"].value, m.asset_materialization.metadata["rule"].value)
                for m in result.records]

    def extension_notices(self) -> int:
        messages = self.layout.outbox_dir.glob("*.eml")
        return sum(f"Staging extended {EXTENSION_HOURS} hours" in m.read_text() for m in messages)

    def report(self) -> str:
        return self.outcome.report_path.read_text(encoding="utf-8")

    def incidents(self) -> str:
        report = self.report()
        start = report.index("## 8. Incidents")
        return report[start:report.index("\n## ", start + 1)]

    def probe_rows(self) -> pd.DataFrame:
        folder = self.layout.hours_dir(HOURLY_ASSET_PROBE_RECORDS)
        return pd.concat([pq.read_table(path).to_pandas() for path in sorted(folder.glob("*.parquet"))])

    def assert_outputs_written(self) -> None:
        assert self.outcome.report_path.is_file()
        charts = sorted(p.name for p in self.layout.report_file.parent.glob("charts/*.png"))
        assert len(charts) == 4 and all(self.layout.chart_file(name).stat().st_size > 0 for name in charts)
        messages = list(self.layout.outbox_dir.glob("*.eml"))
        assert messages, "no notification in the outbox"
        assert any(self.decision["decision"] in m.read_text() or "Staging" in m.read_text() for m in messages)
        for chart in charts:
            assert f"charts/{chart}" in self.report()


@pytest.fixture
def rehearsal(tmp_path, monkeypatch):
    """`rehearsal(profile, hours=HOURS, **options)` → Rehearsal, in this test's own instance (the project's
    dagster.yaml, storage in tmp_path) and data root, its runs served in this process."""
    data_root = tmp_path / "data"
    monkeypatch.setenv("STAGING_VALIDATION_DATA", str(data_root))
    home = instance_home(tmp_path / "dagster")

    def run(profile: str, hours: int = HOURS, **options) -> Rehearsal:
        options = {"hour_seconds": HOUR_SECONDS, "organic_rps": ORGANIC_RPS, **options}
        outcome = rehearse(home, data_root, profile=profile, hours=hours, campaign=f"t-{profile}",
                           console=Console(file=io.StringIO()), serve_runs=runs_in_process, **options)
        assert outcome.failed_runs == []
        return Rehearsal(outcome, instances.enter_context(dg.DagsterInstance.from_config(str(home))), data_root)

    with contextlib.ExitStack() as instances:
        yield run


def fault_hour(profile: str) -> int:
    return int(load_profile(profile).faults[0].at_hour)


def test_healthy_accepts_with_report_charts_and_notification(rehearsal):
    run = rehearsal("healthy")
    assert (run.decision["decision"], run.decision["rule"]) == ("ACCEPT", "accept.all_pass")
    assert {g["status"] for g in run.outcome.gates} == {"PASS"}
    assert run.alert_rules() == set()
    run.assert_outputs_written()


@pytest.mark.parametrize(("profile", "gate", "rule", "alert"), [
    ("missing-pack", 1, "early_stop.missing_pack", "monitor.missing_pack"),
    ("identity-merge", 5, "early_stop.identity_merge", "monitor.identity_merge"),
])
def test_critical_fault_rejects_early_in_the_hour_it_was_injected(rehearsal, profile, gate, rule, alert):
    run = rehearsal(profile)
    injected = fault_hour(profile)
    assert (run.decision["decision"], run.decision["rule"]) == ("REJECT", rule)
    assert run.gate(gate)["status"] == "FAIL"
    assert run.state().early_stop.hour == injected
    assert run.state().early_stop.gate == gate
    assert max(run.run_hours()) == injected, "a run was started for an hour after the early stop"
    assert max(run.layout.stored_hours(HOURLY_ASSET_TELEMETRY_EVENTS)) <= injected
    assert alert in run.alert_rules()
    if profile == "missing-pack":
        run.assert_outputs_written()
        # The outbox also holds the monitor's alert: look for the decision's message among them.
        assert any("Staging failed at" in m.read_text() for m in run.layout.outbox_dir.glob("*.eml"))


@pytest.mark.parametrize(("profile", "gate"), [("pack-fallback", 1), ("relationship-flap", 3)])
def test_critical_gate_failure_rejects_at_the_verdict(rehearsal, profile, gate):
    run = rehearsal(profile)
    assert (run.decision["decision"], run.decision["rule"]) == ("REJECT", "reject.critical_fail")
    assert run.gate(gate)["status"] == "FAIL"
    assert [g["gate"] for g in run.outcome.gates if g["status"] == "FAIL"] == [gate]
    assert run.state().early_stop is None
    assert max(run.run_hours()) == HOURS - 1


def test_ambiguity_review_accepts_with_an_action_item(rehearsal):
    # Enough organic requests that a 7 % ambiguity rate is measured inside the 5–10 % REVIEW band.
    run = rehearsal("ambiguity-review", organic_rps=30.0)
    assert (run.decision["decision"], run.decision["rule"]) == ("ACCEPT", "accept.one_review_with_action")
    assert run.gate(2)["status"] == "REVIEW"
    assert [g["gate"] for g in run.outcome.gates if g["status"] != "PASS"] == [2]
    assert run.decision["action_items"]


def test_extend_runs_the_extension_then_a_person_must_decide(rehearsal):
    # The regen-path p99 is judged from 50 regenerated requests, about 8 % of the traffic: two more hours
    # (one of them the stress test) and more organic traffic give the first verdict enough.
    hours = HOURS + 2
    run = rehearsal("governor-slow", hours=hours, organic_rps=30.0)
    # The first verdict extends; the policy never extends twice, so after the extension the gate is still
    # out of bounds and the second EXTEND hands the call to a person.
    assert run.decisions_materialized() == [("EXTEND", "extend.forced_review"), ("EXTEND", "extend.after_extension")]
    assert (run.decision["decision"], run.decision["rule"]) == ("EXTEND", "extend.after_extension")
    assert run.gate(4)["status"] == "REVIEW"
    state = run.state()
    assert (state.extension_count, state.extension_hours, state.status) == (1, EXTENSION_HOURS, CampaignStatus.DECIDED)
    assert run.decision["observed_hours"] == list(range(hours + EXTENSION_HOURS))
    assert max(run.run_hours()) == hours + EXTENSION_HOURS - 1
    assert any("A person must decide" in item for item in run.decision["action_items"])
    assert run.extension_notices() == 1
    run.assert_outputs_written()


@pytest.mark.parametrize(("profile", "gate", "status", "first_rule", "organic_rps"), [
    ("ambiguity-high", 2, "REVIEW", "extend.forced_review", 30.0),
    ("governor-regen-heavy", 4, "FAIL", "extend.secondary_gate", ORGANIC_RPS),
])
def test_a_review_or_secondary_failure_extends_by_the_policy_hours(rehearsal, profile, gate, status, first_rule,
                                                                  organic_rps):
    # The extension itself is played once, above; here the campaign ends at its first verdict.
    run = rehearsal(profile, organic_rps=organic_rps, first_verdict_only=True)
    assert run.decisions_materialized() == [("EXTEND", first_rule)]
    # Reported as judged: the planned hours, no extension before this decision, the one it asks for.
    assert run.decision["extension"] == {"count": 0, "hours": EXTENSION_HOURS}
    assert f" of {HOURS} (coverage" in run.report()
    assert f"extending the campaign by {EXTENSION_HOURS} hours" in run.report()
    assert run.gate(gate)["status"] == status
    state = run.state()
    assert (state.extension_count, state.extension_hours) == (1, EXTENSION_HOURS)
    assert max(run.run_hours()) == HOURS - 1
    assert run.extension_notices() == 1


@pytest.mark.parametrize("profile", ["noisy-logs", "log-rotation"])
def test_telemetry_counts_equal_the_simulator_ground_truth(rehearsal, profile):
    run = rehearsal(profile)
    assert (run.decision["decision"], run.decision["rule"]) == ("ACCEPT", "accept.all_pass")
    (stats_file,) = (run.data_root / "simulator" / run.outcome.campaign).glob("sim-*/final-stats.json")
    truth = json.loads(stats_file.read_text())
    assert run.layout.stored_hours(HOURLY_ASSET_TELEMETRY_EVENTS) == list(range(HOURS))
    # Lines after the last hour (while the verdict runs) belong to no stored hour. Hour 0 also holds the lines
    # from shortly before the campaign start (the mapping's allowance), not those from long before it (the
    # simulator ran before the collector started the clock, longer on a busy machine): at most the truth.
    expected = {hour: Counter() for hour in range(HOURS)}
    for hour, counts in truth["events_by_hour"].items():
        if int(hour) < HOURS:
            expected[max(0, int(hour))].update(counts)
    # A rotation every 1.5 s can replace an unread rotated file between two polls on a busy machine: those
    # lines are gone, but never silently: each loss is a monitor.telemetry_lost alert naming the hours it
    # may touch, and every other hour holds exactly the truth.
    timing = run.state().timing
    lossy_hours: set[int] = set()
    for alert in run.alerts():
        if alert["rule"] == "monitor.telemetry_lost":
            after = alert["evidence"][0]["after_hour"] if alert["evidence"] else 0
            lossy_hours |= set(range(after, timing.hour_of_ms(alert["time_ms"]) + 1))
    for hour in range(HOURS):
        table = pq.read_table(run.layout.hour_file(HOURLY_ASSET_TELEMETRY_EVENTS, hour), columns=["kind"])
        stored = Counter(table.column("kind").to_pylist())
        if hour == 0 or hour in lossy_hours:
            assert stored and stored <= expected[hour], stored - expected[hour]
        else:
            assert stored == expected[hour], f"hour {hour}"
    assert len(lossy_hours) < HOURS, "a loss in every hour: the capture does not follow the rotations"
    if profile == "noisy-logs":
        assert truth["unparsed_lines"] > 0
    else:
        assert len(truth["rotations"]) >= HOURS * 2 - 1


def test_outage_records_the_gap_alerts_and_decides_on_the_rest(rehearsal):
    # 6 s hours: the half-hour outage (3 s) outlasts the launch of the hour's probe run under test load.
    run = rehearsal("outage", hour_seconds=6.0)
    outage = load_profile("outage").faults[0]
    rows = run.probe_rows()
    refused = rows[rows["outcome"] == "connection_error"]
    # The prompt set goes out at the start of the outage hour, into refused connections.
    assert len(refused) > 0
    assert refused["campaign_s"].min() >= outage.at_hour * 3600
    assert "monitor.target_unreachable" in run.alert_rules()
    assert "monitor.target_unreachable" in run.incidents()
    # The hours around the gap still have data, and the verdict is decided on them.
    assert run.decision["observed_hours"] == list(range(HOURS))
    assert run.decision["decision"] in ("ACCEPT", "EXTEND")


def monitor_counts_policy(path: Path) -> Path:
    """The shipped policy with the monitor's per-window counts at 0. A rehearsed 5-minute window lasts
    0.17 s and holds about two requests, so the runbook's counts (more than 10 errors, more than 5 slow
    requests) cannot be reached in compressed time; at 0 every offending line alerts, which proves the
    path from telemetry through the monitor sensor to alerts.jsonl and the report's incidents."""
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    policy["monitor"].update(errors_warning_above=0, slow_requests_warning_above=0)
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return path


@pytest.mark.parametrize(("profile", "alert", "organic_rps"), [
    # The burst lasts a quarter of a 3 s hour: enough users must be there for 30 % of them to fail.
    ("error-burst", "monitor.errors", 40.0),
    ("slow", "monitor.slow_requests", ORGANIC_RPS),
    ("rate-limit", "monitor.rate_limited", ORGANIC_RPS),
])
def test_monitor_raises_the_right_alert_and_lists_it_as_an_incident(rehearsal, tmp_path, profile, alert, organic_rps):
    # The alert and its incident are what is tested: in compressed hours the rate-limit profile's probes
    # outlast their hours and the first verdict extends, so the campaign ends there.
    run = rehearsal(profile, policy=monitor_counts_policy(tmp_path / "policy.yaml"), organic_rps=organic_rps,
                    first_verdict_only=True)
    raised = [a for a in run.alerts() if a["rule"] == alert]
    assert raised, f"no {alert} alert; raised: {run.alert_rules()}"
    faults = load_profile(profile).faults
    if faults:  # raised while the fault window is open
        window = faults[0]
        hours = {run.state().timing.hour_of_ms(a["time_ms"]) for a in raised}
        assert any(window.at_hour <= hour < window.end_hour() for hour in hours), hours
    assert alert in run.incidents()
