"""`campaign start|status|wait` on bad input: one line naming the problem, exit 1, nothing launched."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from staging_validation.campaign.campaign_cli import campaign


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("STAGING_VALIDATION_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.mark.parametrize(("text", "message"), [
    ("ops:\n  register_campaign_op:\n    config:\n      campaign: c1\n      hours: 40\n",
     "ops.register_campaign_op.config: hours: Input should be less than or equal to 24"),
    ("campaign: c1\nhour_secondz: 3\n",
     'unexpected config entry "hour_secondz" at path root:ops:register_campaign_op:config'),
    ("campaign: c1\ndeploy: {migrate_command: \"alembic 'head\"}\n",
     "ops.register_campaign_op.config.deploy: migrate_command: Value error, cannot be split"),
    ("ops:\n  other_op: {}\n", "ops.register_campaign_op.config: missing"),
    ("- a list\n", "must be a mapping"),
    ("campaign: [unclosed\n", "not valid YAML"),
])
def test_start_refuses_a_bad_config_before_contacting_anything(tmp_path, text, message):
    config = tmp_path / "launch.yaml"
    config.write_text(text)
    # Port 9 (discard): nothing listens, so reaching the network would be a different error.
    result = CliRunner().invoke(campaign, ["start", "--config", str(config), "--port", "9"])
    assert result.exit_code == 1
    assert message in result.output and str(config) in result.output


def test_start_names_an_unreachable_webserver(tmp_path):
    config = tmp_path / "launch.yaml"
    config.write_text("campaign: c1\n")
    result = CliRunner().invoke(campaign, ["start", "--config", str(config), "--port", "9"])
    assert result.exit_code == 1 and "127.0.0.1:9" in result.output


@pytest.mark.parametrize("command", ["status", "wait"])
def test_status_and_wait_of_an_unknown_or_hostile_campaign(data_root, command):
    assert CliRunner().invoke(campaign, [command, "nope"]).exit_code == 1
    hostile = CliRunner().invoke(campaign, [command, "../etc"])
    assert hostile.exit_code == 1 and "no path separators" in hostile.output


def test_wait_returns_the_stored_verdict_as_exit_code(data_root):
    folder = data_root / "campaigns" / "c1"
    folder.mkdir(parents=True)
    (folder / "campaign.json").write_text(json.dumps({
        "campaign": "c1", "created_at_ms": 0, "timing": {"start_ms": 0, "hour_seconds": 3600.0},
        "planned_hours": 24, "settings": {}, "status": "active"}))
    timed_out = CliRunner().invoke(campaign, ["wait", "c1", "--timeout", "0", "--poll", "0.1"])
    assert timed_out.exit_code == 1 and "no verdict within 0 s" in timed_out.output
    (folder / "decision.json").write_text(json.dumps({"campaign": "c1", "decision": "EXTEND", "rule": "extend.x"}))
    assert CliRunner().invoke(campaign, ["wait", "c1"]).exit_code == 3
    # --final: an EXTEND is not the end while the campaign goes on.
    assert CliRunner().invoke(campaign, ["wait", "c1", "--final", "--timeout", "0", "--poll", "0.1"]).exit_code == 1
    (folder / "decision.json").write_text(json.dumps({"campaign": "c1", "decision": "REJECT", "rule": "gate.1"}))
    status = CliRunner().invoke(campaign, ["status", "c1"])
    assert status.exit_code == 0 and "decision: REJECT (gate.1)" in status.output
