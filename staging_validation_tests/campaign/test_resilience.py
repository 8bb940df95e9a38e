"""Re-running an hour gives the same partition, from our own capture, even after the target's log is gone."""

from __future__ import annotations

import time

import dagster as dg
import pyarrow.parquet as pq

from staging_validation.campaign.partitions import campaign_hour_key
from staging_validation.campaign.rehearsal import QUIET_RUN_CONFIG
from staging_validation.layout import HOURLY_ASSET_PROBE_RECORDS, HOURLY_ASSET_TELEMETRY_EVENTS, CampaignLayout
from staging_validation.lifecycle import load_campaign_state
from staging_validation.definitions import build_definitions

HOUR_SECONDS = 3.0


def test_rematerializing_an_hour_is_idempotent_and_needs_only_stored_data(tmp_path, simulator_factory):
    simulator = simulator_factory(profile="noisy-logs", hour_seconds=HOUR_SECONDS, organic_rps=15.0)
    defs = build_definitions(str(tmp_path))
    with dg.instance_for_test() as instance:
        launch = defs.get_job_def("start_campaign").execute_in_process(instance=instance, run_config={
            **QUIET_RUN_CONFIG, "ops": {"register_campaign_op": {"config": {
                "campaign": "resilient", "base_url": simulator.base_url, "telemetry_path": str(simulator.log_path),
                "hours": 1, "hour_seconds": HOUR_SECONDS}}}})
        assert launch.success
        state = load_campaign_state(tmp_path, "resilient")
        simulator.set_campaign_start(state.timing.start_ms)
        hour_zero = campaign_hour_key("resilient", 0)
        for job_name in ("campaign_probes", "campaign_hour"):
            assert defs.resolve_job_def(job_name).execute_in_process(
                instance=instance, partition_key=hour_zero, run_config=QUIET_RUN_CONFIG).success
        assert time.time() >= state.timing.hour_start_s(1)
        assert pq.read_table(CampaignLayout.of(tmp_path, "resilient").hour_file(HOURLY_ASSET_PROBE_RECORDS, 0)).num_rows
        stored = CampaignLayout.of(tmp_path, "resilient").hour_file(HOURLY_ASSET_TELEMETRY_EVENTS, 0)
        before = pq.read_table(stored)
        assert before.num_rows > 50

        # The target's log disappears (rotated away, host rebuilt) and the stored partition is lost, as
        # if the run that wrote it had died: re-running the hour rebuilds it from the captured raw lines.
        simulator.stop()
        for log in simulator.log_path.parent.glob("staging.log*"):
            log.unlink()
        stored.unlink()
        ingest = defs.resolve_job_def("campaign_hour")
        assert ingest.execute_in_process(instance=instance, partition_key=hour_zero, run_config=QUIET_RUN_CONFIG).success
        assert pq.read_table(stored).equals(before)

        # And once more, unchanged: re-materializing is idempotent.
        assert ingest.execute_in_process(instance=instance, partition_key=hour_zero, run_config=QUIET_RUN_CONFIG).success
        assert pq.read_table(stored).equals(before)
