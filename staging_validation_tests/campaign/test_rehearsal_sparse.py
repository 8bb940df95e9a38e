"""The sparse dialect rehearsed end to end: what the deployment does not expose is "could not verify"
(NO_DATA naming it, never FAIL), what it logs elsewhere is measured from that second source."""

from __future__ import annotations

import io

import dagster as dg
import pytest
from rich.console import Console

from staging_validation.campaign.rehearsal import rehearse

pytestmark = pytest.mark.e2e


def test_sparse_deployment_is_not_accepted_and_says_what_it_could_not_verify(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    monkeypatch.setenv("STAGING_VALIDATION_DATA", str(data_root))
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        outcome = rehearse(instance, data_root, profile="healthy", dialect="sparse", hours=6, hour_seconds=3.0,
                           organic_rps=10.0, campaign="t-sparse", first_verdict_only=True,
                           console=Console(file=io.StringIO()))
    assert outcome.failed_runs == []
    gates = {gate["gate"]: gate for gate in outcome.gates}
    assert outcome.decision["decision"] == "EXTEND"  # critical gates without evidence: never ACCEPT, never FAIL
    assert {number: gates[number]["status"] for number in (1, 2, 3)} == {1: "NO_DATA", 2: "NO_DATA", 3: "NO_DATA"}
    assert "not exposed" in gates[3]["reason"] and "extract.relationship" in gates[3]["reason"]
    # The governor logs only to its own JSONL file (string levels, ISO times): measured from that source.
    assert gates[4]["status"] == "PASS" and gates[4]["samples"] > 0
    assert gates[5]["status"] == "PASS"
    captured = data_root / "campaigns" / "t-sparse" / "telemetry" / "sources" / "governor"
    assert any(captured.rglob("*.log"))
