"""The runbook at hour 0: "Tests should pass 4/4. If not, something is broken. Stop." """

from __future__ import annotations

import json
import socket

import dagster as dg

from staging_validation.campaign.partitions import campaign_hour_key
from staging_validation.campaign.rehearsal import QUIET_RUN_CONFIG
from staging_validation.campaign.sensors import campaign_clock
from staging_validation.lifecycle import CampaignStatus, load_campaign_state
from staging_validation.definitions import build_definitions


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_target_that_fails_deploy_verification_is_rejected_at_once_with_the_reason(tmp_path):
    log = tmp_path / "staging.log"
    log.touch()
    data_root = tmp_path / "data"
    defs = build_definitions(str(data_root))
    with dg.instance_for_test() as instance:
        assert defs.get_job_def("start_campaign").execute_in_process(instance=instance, run_config={
            **QUIET_RUN_CONFIG, "ops": {"register_campaign_op": {"config": {
                "campaign": "broken", "base_url": f"http://127.0.0.1:{closed_port()}", "telemetry_path": str(log),
                "hour_seconds": 600.0}}}}).success
        # The probes record the refused connections; the run itself succeeds and stops the campaign.
        assert defs.resolve_job_def("campaign_probes").execute_in_process(
            instance=instance, partition_key=campaign_hour_key("broken", 0), run_config=QUIET_RUN_CONFIG).success
        state = load_campaign_state(data_root, "broken")
        assert state.status == CampaignStatus.STOPPED
        assert state.early_stop.rule == "early_stop.deploy_verification_failed"
        assert "connection" in state.early_stop.reason

        context = dg.build_sensor_context(instance=instance, definitions=defs, instance_ref=instance.get_ref(),
                                          resources=defs.resources)
        requests = campaign_clock.evaluate_tick(context).run_requests
        assert [r.run_key for r in requests] == ["broken:hour:00", "broken:verdict:early"]
        for request in requests:
            assert defs.resolve_job_def(request.job_name).execute_in_process(
                instance=instance, partition_key=request.partition_key, run_config=QUIET_RUN_CONFIG).success

    decision = json.loads((data_root / "campaigns" / "broken" / "decision.json").read_text())
    assert (decision["decision"], decision["rule"]) == ("REJECT", "early_stop.deploy_verification_failed")
    assert "deploy verification failed" in decision["notification"]["body"]
    assert load_campaign_state(data_root, "broken").status == CampaignStatus.DECIDED
