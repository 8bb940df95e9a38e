"""`staging-validation verdict` over campaigns stored in the documented layout under a tmp data root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from staging_validation.acceptance.judge import judge_campaign
from staging_validation.cli import main
from staging_validation.layout import CampaignLayout
from staging_validation.schemas.probe_records import RECORD_SCHEMA
from staging_validation_tests.acceptance.acceptance_tables import (
    events,
    healthy_campaign,
    identity_rows,
    records,
    store_campaign,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    store_campaign(root, "healthy", *healthy_campaign())
    store_campaign(root, "ambiguity-high", *healthy_campaign(ambiguous_every=8))
    missing_records, missing_events = healthy_campaign()
    missing = events([{"kind": "pack_missing", "level": 50, "user_hash": "u-1", "hour": 12}])
    store_campaign(root, "missing-pack", missing_records, pd.concat([missing_events, missing], ignore_index=True))
    # A campaign the monitor stopped at hour 3, judged over hours 0..3 only.
    stopped_records, stopped_events = healthy_campaign(hours=4)
    store_campaign(root, "stopped", stopped_records, stopped_events, status="stopped", early_stop={
        "gate": 5, "rule": "early_stop.identity_merge", "first_seen": "2026-11-20T03:10:00+00:00", "hour": 3,
        "reason": "accidental identity merge", "evidence": []})
    # The hour-24 identity test is kept with its verdict round; here it finds a merge.
    final_records, final_events = healthy_campaign()
    store_campaign(root, "final-merge", final_records[final_records["probe"] != "identity"], final_events)
    final = records(identity_rows(merged=True)).drop(columns="hour")
    final_path = CampaignLayout.of(root, "final-merge").round_final_checks_file("24")
    final_path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(final, schema=RECORD_SCHEMA, preserve_index=False), final_path)
    return root


def run(*args: str):
    return CliRunner().invoke(main, ["verdict", *args])


@pytest.mark.parametrize(
    ("campaign", "exit_code", "decision", "rule"),
    [
        ("healthy", 0, "ACCEPT", "accept.all_pass"),
        ("ambiguity-high", 3, "EXTEND", "extend.forced_review"),
        ("missing-pack", 4, "REJECT", "reject.critical_fail"),
        ("stopped", 4, "REJECT", "early_stop.identity_merge"),
        ("final-merge", 4, "REJECT", "reject.critical_fail"),
    ],
)
def test_verdict_recomputes_the_decision_from_stored_hours(data_root, campaign, exit_code, decision, rule):
    result = run("--campaign", campaign, "--data-root", str(data_root))
    assert result.exit_code == exit_code, result.output
    assert f"Decision: {decision} (rule {rule})" in result.output
    for name in ("ContinuityPack integrity", "AmbiguityGate rate", "Relationship determinism",
                 "Governor regen health", "Identity correctness"):
        assert name in result.output


def test_stopped_campaign_is_judged_over_the_hours_before_the_stop(data_root):
    evidence = judge_campaign(data_root, "stopped")
    assert evidence.hours_observed == [0, 1, 2, 3] and evidence.coverage == 1.0


def test_a_tightened_policy_rejudges_without_rerunning_anything(data_root, tmp_path):
    policy = tmp_path / "strict.yaml"
    policy.write_text(yaml.safe_dump({"gates": {"governor": {"zero_regen_pass_above": 0.95}}}))
    result = run("--campaign", "healthy", "--policy", str(policy), "--data-root", str(data_root))
    assert result.exit_code == 3, result.output
    assert "Decision: EXTEND (rule extend.secondary_gate)" in result.output


def test_the_campaigns_own_policy_is_used_when_none_is_given(tmp_path):
    policy = tmp_path / "lenient.yaml"
    policy.write_text(yaml.safe_dump({"gates": {"ambiguity": {"rate_review": 0.2, "rate_extend": 0.3}}}))
    store_campaign(tmp_path, "own-policy", *healthy_campaign(ambiguous_every=8), settings={"policy": str(policy)})
    result = run("--campaign", "own-policy", "--data-root", str(tmp_path))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--campaign", "../x"], "campaign id '../x'"),
        (["--campaign", "a/b"], "no path separators"),
        (["--campaign", "never-registered"], "no campaign registered"),
        (["--campaign", "healthy", "--policy", "{bad_policy}"], "extension_hours"),
    ],
)
def test_bad_input_is_a_one_line_error_with_exit_code_1(data_root, tmp_path, args, message):
    bad_policy = tmp_path / "bad.yaml"
    bad_policy.write_text("extension_hours: 100\n")
    args = [a.replace("{bad_policy}", str(bad_policy)) for a in args]
    result = CliRunner().invoke(main, ["verdict", *args, "--data-root", str(data_root)])
    assert result.exit_code == 1
    assert message in result.output and result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_installed_console_script_exits_with_the_decision_code(data_root):
    script = Path(sys.executable).parent / "staging-validation"
    completed = subprocess.run([str(script), "verdict", "--campaign", "ambiguity-high"], capture_output=True,
                               text=True, env={**os.environ, "STAGING_VALIDATION_DATA": str(data_root)},
                               timeout=60)
    assert completed.returncode == 3, completed.stderr
    assert "EXTEND" in completed.stdout and completed.stderr == ""
