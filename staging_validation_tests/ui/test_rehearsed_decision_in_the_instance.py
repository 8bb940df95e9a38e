"""After `rehearse --profile missing-pack`, the instance tells the decision at a glance: an ERROR `decision`
check on campaign_decision, the decision tag on the verdict run, and report metadata whose images are
embedded (no relative link the UI would resolve against its own page)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import dagster as dg
import pytest

from staging_validation.campaign.metadata import DECISION_CHECK, TAG_DECISION
from staging_validation.campaign.rehearsal import instance_home
from staging_validation.campaign.sensors import TAG_CAMPAIGN, TAG_PHASE

pytestmark = pytest.mark.e2e
CAMPAIGN = "ui-missing-pack"
# A markdown image or link whose target is neither a data URI nor an absolute URL.
RELATIVE_LINK = re.compile(r"\]\((?!data:|https?://)[^)]*\)")


def test_a_missing_pack_rehearsal_leaves_an_error_decision_check_a_tagged_run_and_embedded_charts(tmp_path):
    # The project's instance (queue, lanes, run monitoring: the rehearsal's daemon needs them), storage in tmp.
    home = instance_home(tmp_path / "home")
    env = {**os.environ, "DAGSTER_HOME": str(home), "STAGING_VALIDATION_DATA": str(tmp_path / "data"),
           "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "staging_validation.cli", "rehearse", "--profile", "missing-pack",
                             "--hours", "6", "--campaign", CAMPAIGN], capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 4, result.stdout[-3000:] + result.stderr[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        [verdict] = instance.get_run_records(dg.RunsFilter(tags={TAG_CAMPAIGN: CAMPAIGN, TAG_PHASE: "verdict"}))
        assert verdict.dagster_run.tags[TAG_DECISION] == "REJECT"

        evaluations = [entry.dagster_event.event_specific_data for entry in instance.all_logs(
            verdict.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
        [decision] = [e for e in evaluations if e.check_name == DECISION_CHECK]
        assert decision.asset_key == dg.AssetKey("campaign_decision")
        assert (decision.passed, decision.severity) == (False, dg.AssetCheckSeverity.ERROR)
        assert decision.metadata["campaign"].value == CAMPAIGN
        assert decision.metadata["rule"].value == "early_stop.missing_pack"

        reports = instance.fetch_materializations(dg.AssetKey("acceptance_report"), limit=100).records
        assert reports
        for record in reports:
            metadata = record.asset_materialization.metadata
            for name, value in metadata.items():
                assert not RELATIVE_LINK.search(str(value.value)), f"relative link in metadata {name!r}"
            assert metadata["report"].value.count("](data:image/png;base64,") == 4
            assert metadata["report_file"].value.endswith("STAGING_ACCEPTANCE_REPORT.md")
