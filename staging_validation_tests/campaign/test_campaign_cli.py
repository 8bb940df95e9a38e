"""`campaign start|status|wait` on bad input: one line naming the file and the field, exit 1, nothing launched;
`status` and `wait` from a stored campaign (the real daemon's run is in test_daemon_e2e.py)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from click.testing import CliRunner

from staging_validation.acceptance.cli import EXIT_CODES
from staging_validation.campaign.campaign_cli import _grouped_not_run, campaign, check_launch_config
from staging_validation.collection.recorded_steps import StepOutcome, StepStatus, record_step
from staging_validation.config_files import ConfigError
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import (
    CampaignState,
    Delivery,
    VerdictRound,
    close_campaign,
    fail_validator,
    mark_running,
    record_notification,
    record_verdict,
    register_campaign_state,
)
from staging_validation.plan import plan_for_hour
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.storage import atomic_write_text

DECIDED_AT_MS = 1796189375978  # 2026-12-02T05:29:35.978Z
NESTED = "ops:\n  register_campaign_op:\n    config:\n"


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("STAGING_VALIDATION_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def closed_port():
    """A local port nothing listens on: reaching the network would be a different error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(*lines: str) -> str:
    return NESTED + "".join(f"      {line}\n" for line in lines)


@pytest.mark.parametrize(("text", "message"), [
    (_config("campaign: c1", "hours: 40"), "ops.register_campaign_op.config.hours: 40 is out of range"),
    (_config("campaign: c1", "hour_seconds: 1"),
     "ops.register_campaign_op.config.hour_seconds: 1 s is shorter than the validator can serve"),
    (_config("campaign: c1", "stress_baseline_rps: 0"), "ops.register_campaign_op.config.stress_baseline_rps: 0 must"),
    (_config("campaign: c1", "hour_secondz: 3"),
     'ops.register_campaign_op.config: received unexpected config entry "hour_secondz"'),
    (_config("campaign: c1", "hours: many"), 'ops.register_campaign_op.config.hours: invalid scalar'),
    (_config("hours: 3"), 'ops.register_campaign_op.config: missing required config entry "campaign"'),
    (_config("campaign: ../etc"), "ops.register_campaign_op.config.campaign: '../etc': only letters"),
    (_config("campaign: c1", "extra_telemetry_sources: [{name: gov, pathz: /x}]"),
     'ops.register_campaign_op.config.extra_telemetry_sources[0]: received unexpected config entry "pathz"'),
    (_config("campaign: c1", "notification: {smtp_host: mail.example}"),
     "ops.register_campaign_op.config.notification: recipients: an SMTP host is configured"),
    (_config("campaign: c1", "hours: {env: SV_TEST_UNSET_HOURS}"),
     "config.hours: {env: SV_TEST_UNSET_HOURS}: environment variable SV_TEST_UNSET_HOURS is not set in this shell"),
    ("ops:\n  other_op: {}\n", 'ops: received unexpected config entry "other_op"'),
    # The bare inner mapping is not the launchpad's run config: the error shows the nesting.
    ("campaign: c1\nhours: 3\n", "<top level>: missing required config entry \"ops\""),
    ("- a list\n", "must be a mapping: the launchpad's run config, ops: {register_campaign_op: {config:"),
    ("", "must be a mapping"),
    ("campaign: [unclosed\n", "not valid YAML"),
])
def test_start_refuses_a_bad_config_before_contacting_anything(tmp_path, data_root, closed_port, text, message):
    config = tmp_path / "launch.yaml"
    config.write_text(text)
    result = CliRunner().invoke(campaign, ["start", "--config", str(config), "--url", f"http://127.0.0.1:{closed_port}"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"error: {config}: ") and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1  # one line: file, field, problem
    assert "cannot reach" not in result.output and not (data_root / "campaigns").exists()


def test_the_check_names_every_problem_of_the_form_at_once():
    with pytest.raises(ConfigError) as raised:
        check_launch_config({"ops": {"register_campaign_op": {"config": {
            "campaign": "c1", "hours": 0, "hour_seconds": 0.5, "stress_baseline_rps": -1}}}}, "launch.yaml")
    text = str(raised.value)
    assert text.startswith("launch.yaml: ")
    for field in ("hours", "hour_seconds", "stress_baseline_rps"):
        assert f"ops.register_campaign_op.config.{field}: " in text


def test_a_good_config_passes_the_check_with_the_launchpads_defaults(tmp_path):
    config = check_launch_config({"ops": {"register_campaign_op": {"config": {"campaign": "c1", "hours": 2}}},
                                  "loggers": {"console": {"config": {"log_level": "ERROR"}}}}, "launch.yaml")
    assert (config.campaign, config.hours, config.hour_seconds) == ("c1", 2, 3600.0)


def test_start_names_an_unreachable_webserver_and_a_bad_url(tmp_path, data_root, closed_port):
    config = tmp_path / "launch.yaml"
    config.write_text(_config("campaign: c1"))
    url = f"http://127.0.0.1:{closed_port}"
    unreachable = CliRunner().invoke(campaign, ["start", "--config", str(config), "--url", url])
    assert unreachable.exit_code == 1 and f"cannot reach the Dagster webserver at {url}" in unreachable.output
    bad_url = CliRunner().invoke(campaign, ["start", "--config", str(config), "--url", "ftp://host"])
    assert bad_url.exit_code == 1 and "--url ftp://host" in bad_url.output
    missing = CliRunner().invoke(campaign, ["start", "--config", str(tmp_path / "nope.yaml"), "--url", url])
    assert missing.exit_code == 1 and "nope.yaml: cannot read" in missing.output


@pytest.mark.parametrize("command", ["status", "wait"])
@pytest.mark.parametrize("campaign_id", ["../etc", "a/../../b", "..", "nope"])
def test_status_and_wait_of_an_unknown_or_hostile_campaign(data_root, command, campaign_id):
    result = CliRunner().invoke(campaign, [command, campaign_id, "--timeout", "0"] if command == "wait"
                                else [command, campaign_id])
    assert result.exit_code == 1
    expected = "no campaign registered" if campaign_id == "nope" else "no path separators"
    assert result.output.startswith("error: ") and expected in result.output, result.output


def _register(data_root, campaign_id: str = "c1") -> CampaignState:
    return register_campaign_state(data_root, CampaignState(
        campaign=campaign_id, created_at_ms=int(time.time() * 1000), planned_hours=2,
        timing=CampaignTiming(start_ms=int(time.time() * 1000), hour_seconds=3600.0)))


def _decide(data_root, decision: str, rule: str, round_id: str = "2", extend_hours: int = 0) -> None:
    record_verdict(data_root, "c1", VerdictRound(round_id=round_id, judged_hours=int(round_id), extension_count=0,
                                                 decision=decision, rule=rule, extend_hours=extend_hours,
                                                 decided_at_ms=DECIDED_AT_MS))
    # As acceptance.report writes it: the round is named by its recorded time.
    atomic_write_text(CampaignLayout.of(data_root, "c1").decision_file, json.dumps({
        "campaign": "c1", "decision": decision, "rule": rule, "decided_at": "2026-12-02T05:29:35.978000+00:00"}))


def test_status_of_a_registered_then_running_campaign(data_root):
    _register(data_root)
    registered = CliRunner().invoke(campaign, ["status", "c1"])
    assert registered.exit_code == 0
    assert "c1: registered, clock not started yet" in registered.output and "verdict: none yet" in registered.output
    mark_running(data_root, "c1")
    shown = json.loads(CliRunner().invoke(campaign, ["status", "c1", "--json"]).output)
    assert {k: shown[k] for k in ("status", "hour", "phase", "hours_collected", "hours_stored", "verdict")} == {
        "status": "running", "hour": 0, "phase": "deploy", "hours_collected": 0, "hours_stored": 0, "verdict": None}


def test_status_groups_the_hours_not_run_and_knows_when_the_hours_are_over(data_root):
    state = _register(data_root)
    start_ms = int(time.time() * 1000) - 3 * 3600 * 1000  # hours 0-1 ended an hour ago: the verdict is due
    mark_running(data_root, "c1", now_ms=start_ms)
    for hour in (0, 1):
        for step in plan_for_hour(hour, state.planned_hours).steps:
            record_step(data_root, "c1", StepOutcome(hour=hour, step=step, status=StepStatus.NOT_RUN, ended_ms=start_ms,
                                                     reason="no collector was running during the hour"), [])
    result = CliRunner().invoke(campaign, ["status", "c1"])
    assert result.exit_code == 0, result.output
    assert "c1: running, its 2 hours have ended, verdict due" in result.output
    lines = result.output.splitlines()
    for hour, step in ((0, "deploy"), (1, "smoke_loop")):
        line = next(line for line in lines if line.startswith(f"hour {hour} not run: "))
        assert f"{step}: no collector was running during the hour" in line and "identity: no collector" in line
    assert "hours collected: 0 " in result.output
    reason = {"identity": "no collector was running during the hour"}
    assert _grouped_not_run({"2": reason, "3": reason, "4": reason, "6": reason, "7": {"identity": "late"}}) == [
        ("hours 2-4", "identity: no collector was running during the hour"),
        ("hour 6", "identity: no collector was running during the hour"), ("hour 7", "identity: late")]


@pytest.mark.parametrize("decision", sorted(EXIT_CODES))
def test_wait_exits_with_the_verdicts_code(data_root, decision):
    _register(data_root)
    mark_running(data_root, "c1")
    _decide(data_root, decision, f"rule.{decision.lower()}")
    result = CliRunner().invoke(campaign, ["wait", "c1", "--timeout", "0"])
    assert result.exit_code == EXIT_CODES[decision], result.output
    assert result.output.startswith(f"{decision} (rule.{decision.lower()}), round 2, report ")
    status = CliRunner().invoke(campaign, ["status", "c1"])
    assert status.exit_code == 0 and "c1: decided, nothing more is run for it" in status.output
    assert f"verdict (round 2): {decision} (rule.{decision.lower()}), report " in status.output


def test_wait_times_out_without_a_verdict_and_waits_for_the_report(data_root):
    _register(data_root)
    mark_running(data_root, "c1")
    timed_out = CliRunner().invoke(campaign, ["wait", "c1", "--timeout", "0"])
    assert timed_out.exit_code == 1 and "no verdict within 0 s (it is running)" in timed_out.output
    # Recorded, but the report for the round is not written yet (decision.json is an earlier round's): not out.
    atomic_write_text(CampaignLayout.of(data_root, "c1").decision_file, json.dumps({
        "campaign": "c1", "decision": "EXTEND", "rule": "extend.x", "decided_at": "2026-12-01T00:00:00+00:00"}))
    record_verdict(data_root, "c1", VerdictRound(round_id="2", judged_hours=2, extension_count=0, decision="ACCEPT",
                                                 rule="accept.all_pass", decided_at_ms=DECIDED_AT_MS))
    pending = CliRunner().invoke(campaign, ["wait", "c1", "--timeout", "0"])
    assert pending.exit_code == 1 and "round 2 recorded (ACCEPT)" in pending.output
    # Its message is recorded as delivered only after the report: out, whatever decision.json says.
    record_notification(data_root, "c1", "2", Delivery(status="not-configured", channels={}, eml="x.eml", sent_at_ms=1))
    assert CliRunner().invoke(campaign, ["wait", "c1", "--timeout", "0"]).exit_code == EXIT_CODES["ACCEPT"]


def test_wait_returns_when_the_verdict_is_stored_while_it_waits(data_root):
    _register(data_root)
    mark_running(data_root, "c1")
    result: dict = {}
    waiting = threading.Thread(target=lambda: result.update(
        out=CliRunner().invoke(campaign, ["wait", "c1", "--timeout", "120", "--poll", "0.1"])))
    waiting.start()
    _decide(data_root, "REJECT", "gate.1")
    waiting.join(timeout=150)
    assert not waiting.is_alive()
    assert result["out"].exit_code == EXIT_CODES["REJECT"], result["out"].output


def test_wait_final_goes_past_an_extend_and_a_failed_validator_is_inconclusive(data_root):
    _register(data_root)
    mark_running(data_root, "c1")
    _decide(data_root, "EXTEND", "extend.samples", extend_hours=48)
    assert CliRunner().invoke(campaign, ["wait", "c1"]).exit_code == EXIT_CODES["EXTEND"]
    final = CliRunner().invoke(campaign, ["wait", "c1", "--final", "--timeout", "0"])
    assert final.exit_code == 1 and "(it is extended, round 2 recorded (EXTEND))" in final.output
    fail_validator(data_root, "c1", "three validator runs failed in a row")
    failed = CliRunner().invoke(campaign, ["wait", "c1", "--final"])
    assert failed.exit_code == EXIT_CODES["INCONCLUSIVE"]
    assert failed.output.startswith("INCONCLUSIVE (validator_failed: three validator runs failed in a row")
    status = CliRunner().invoke(campaign, ["status", "c1"])
    assert "validator failed: three validator runs failed in a row" in status.output


def test_status_of_a_campaign_closed_at_its_extend_counts_the_hours_it_ran(data_root):
    _register(data_root)
    mark_running(data_root, "c1")
    _decide(data_root, "EXTEND", "extend.samples", extend_hours=48)
    close_campaign(data_root, "c1")  # the rehearsal's first_verdict_only: the 48 hours are never run
    status = CliRunner().invoke(campaign, ["status", "c1"])
    assert "c1: decided, nothing more is run for it" in status.output
    assert "stored: 0, of 2" in status.output, status.output


def test_an_unreadable_state_file_is_an_error_naming_it(data_root):
    _register(data_root)
    layout = CampaignLayout.of(data_root, "c1")
    layout.state_file.write_text("{truncated")
    for command in (["status", "c1"], ["wait", "c1", "--timeout", "5"]):
        result = CliRunner().invoke(campaign, command)
        assert result.exit_code == 1 and str(layout.state_file) in result.output
