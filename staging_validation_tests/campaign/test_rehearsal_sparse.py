"""The sparse dialect rehearsed end to end: what the deployment does not expose is "could not verify"
(NO_DATA naming it, never FAIL, never a clean zero), what it logs elsewhere is measured from that second
source, and the report says how little of its log was readable. Runs served in this process
(`runs_in_process`), as the profile rehearsals are."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from staging_validation.acceptance.cli import EXIT_CODES
from staging_validation.campaign.rehearsal import instance_home, rehearse
from staging_validation.layout import CampaignLayout
from staging_validation_tests.campaign.runs_in_process import runs_in_process

pytestmark = pytest.mark.e2e


def test_sparse_deployment_is_not_accepted_and_says_what_it_could_not_verify(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    monkeypatch.setenv("STAGING_VALIDATION_DATA", str(data_root))
    outcome = rehearse(instance_home(tmp_path / "dagster"), data_root, profile="healthy", dialect="sparse", hours=6,
                       hour_seconds=3.0, organic_rps=10.0, campaign="t-sparse", first_verdict_only=True,
                       console=Console(file=io.StringIO()), serve_runs=runs_in_process)
    assert outcome.failed_runs == []
    layout = CampaignLayout.of(data_root, "t-sparse")
    decision = json.loads(layout.decision_file.read_text(encoding="utf-8"))
    report = layout.report_file.read_text(encoding="utf-8")

    # Critical gates without evidence: never ACCEPT (the CLI's exit code is not 0), never FAIL.
    assert (decision["decision"], decision["rule"]) == ("EXTEND", "extend.critical_no_data")
    assert EXIT_CODES[decision["decision"]] != 0
    gates = {gate["gate"]: gate for gate in decision["gates"]}
    assert {n: gates[n]["status"] for n in (1, 2, 3)} == {1: "NO_DATA", 2: "NO_DATA", 3: "NO_DATA"}
    # Each NO_DATA names the profile path of what was not exposed, and its reason.
    assert "telemetry.not_exposed.pack_missing: the service does not log ContinuityPack builds" in gates[1]["reason"]
    assert "telemetry.not_exposed.ambiguity_check" in gates[2]["reason"]
    assert "prompt set: 0 of" in gates[2]["reason"]  # what the labelled prompts did show is still said
    assert "extract.relationship: answers of /api/chat carry no relationship context" in gates[3]["reason"]
    assert "telemetry.not_exposed.relationship_resolved" in gates[3]["reason"]
    # The governor logs only to its own JSONL file (string levels, ISO times): measured from that source.
    assert gates[4]["status"] == "PASS" and gates[4]["samples"] >= 50
    assert gates[5]["status"] == "PASS"
    assert any((layout.telemetry_dir / "sources" / "governor").rglob("*.log"))

    # The report: the gates' rules, no zero where the event was never observable, the readable share.
    for number, rule in ((1, "gate1.not_exposed"), (2, "gate2.not_exposed"), (3, "gate3.not_exposed")):
        assert f"**Status: NO_DATA** (rule `{rule}`" in report, number
    assert "| Missing-pack events | 0 | not observed |" in report
    assert "| Relationship resolutions in telemetry | ≥ 50 | not observed |" in report
    share = re.search(r"\| Readable share of the log \| ([\d.]+) % \((\d+) of (\d+) lines", report)
    assert share, "the report does not state the readable share of the log"
    assert float(share.group(1)) < 50  # about 90 % of stdout is console dumps
    assert "**Warning:** only" in report and "most of the log could not be judged" in report
