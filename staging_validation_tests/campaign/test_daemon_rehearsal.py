"""`staging-validation rehearse` as a newcomer types it: the real `dagster-daemon` serves the campaign.

The profile matrix (test_rehearsal_profiles.py) serves its runs in the test's process; this is the command
itself, on the project's instance config (queue, lanes, retries, run monitoring), end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from staging_validation.campaign.rehearsal import instance_home
from staging_validation.campaign.run_tags import TAG_CAMPAIGN

pytestmark = pytest.mark.e2e
CAMPAIGN = "daemon-healthy"


def test_rehearse_healthy_for_six_3_s_hours_accepts_with_every_run_launched_by_the_daemons_sensors(tmp_path):
    home = instance_home(tmp_path / "home")
    env = {**os.environ, "DAGSTER_HOME": str(home), "STAGING_VALIDATION_DATA": str(tmp_path / "data"),
           "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "staging_validation.cli", "rehearse", "--profile", "healthy",
                             "--hours", "6", "--hour-seconds", "3", "--campaign", CAMPAIGN],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Decision: ACCEPT  (rule accept.all_pass)" in result.stdout

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = [r.dagster_run for r in instance.get_run_records(dg.RunsFilter(tags={TAG_CAMPAIGN: CAMPAIGN}))]
    by_job: dict[str, int] = {}
    for run in runs:
        by_job[run.job_name] = by_job.get(run.job_name, 0) + 1
        assert run.status is dg.DagsterRunStatus.SUCCESS, run.job_name
        # Requested by a sensor tick of the daemon and launched through its queue, not in this process.
        assert run.tags.get("dagster/sensor_name") == "campaign_clock", run.tags
    # start_campaign carries no campaign tag (the campaign exists once it has run).
    assert by_job == {"campaign_collector": 1, "campaign_hour": 6, "campaign_verdict": 1}
