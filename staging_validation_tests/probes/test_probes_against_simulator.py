"""Every probe against the real simulator process: healthy in both dialects, and the faults that break them."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from staging_validation.probes.identity import determinism_check, identity_check
from staging_validation.probes.prompt_set import prompt_set
from staging_validation.probes.runner import run_probe
from staging_validation.probes.smoke import deploy_verification, smoke_loop, smoke_tests
from staging_validation.probes.stress import stress
from staging_validation.schemas.outcome import Outcome
from staging_validation.schemas.probe_records import records_to_table
from staging_validation.target.profile import load_target_profile
from staging_validation_tests.probes.conftest import campaign_at, closed_port
from staging_validation_tests.waiting import wait_until


async def _every_probe(client, timing):
    """Deploy in hour 0, then everything else at once on the same client, as a campaign may do."""
    deploy = await deploy_verification(client, timing)
    results = await asyncio.gather(
        smoke_loop(client, timing, hour=1),
        prompt_set(client, timing, hour=2),
        stress(client, timing, hour=2, rate_per_s=20, duration_s=0.5),
        identity_check(client, timing),
        determinism_check(client, timing),
    )
    return dict(zip(("deploy", "smoke", "prompt_set", "stress", "identity", "determinism"), (deploy, *results)))


@pytest.mark.parametrize("target", ["documented", "alternate"], indirect=True)
def test_every_probe_passes_against_the_healthy_simulator(target):
    simulator, profile = target
    hour_seconds = 1.2  # smoke loop: 12 rounds 0.1 s apart; prompt set: 0.7 ms apart
    timing = campaign_at(0.0, hour_seconds)  # deploy in hour 0, then the smoke loop waits for hour 1

    async def probes(client):
        return await _every_probe(client, timing)

    results = run_probe(profile, probes, base_url=simulator.base_url)

    for name, result in results.items():
        assert result.passed, f"{name}: {result.failures}"
        # A stress request the validator dropped (a busy machine) is its own shortfall, not the target's.
        sent = [r for r in result.records if r.outcome != Outcome.DROPPED]
        assert sent and all(r.passed for r in sent), name
        assert all(r.outcome == Outcome.OK and r.latency_ms is not None for r in sent), name
    assert results["deploy"].summary["features"] == dict.fromkeys(
        ("ambiguity_gate", "relationship_model", "identity_spine", "continuity_required"), True
    )
    smoke = results["smoke"].summary
    # 12 rounds, 5 scaled minutes apart from the start of hour 1; a round already past when the loop
    # started (deploy ran long on a busy machine) is reported missed, never run late.
    assert smoke["rounds_planned"] == 12 and smoke["rounds_run"] + smoke["rounds_missed"] == 12
    assert smoke["rounds_run"] >= 1 and smoke["tests_passed"] == 4 * smoke["rounds_run"]
    interval = timing.scale(300)
    due = sorted({r.time.timestamp() for r in results["smoke"].records})
    expected = [timing.hour_start_s(1) + k * interval for k in range(smoke["rounds_missed"], 12)]
    assert due == pytest.approx(expected, abs=1e-3)
    prompts = results["prompt_set"].summary
    assert prompts["labelled_positive"] > 0 and prompts["labelled_negative"] > 0
    assert prompts["fp_rate"] == 0.0 and prompts["fn_rate"] == 0.0
    assert results["stress"].summary["planned"] == 10 and results["stress"].summary["dropped"] == 0
    assert results["identity"].summary == {
        "ids_distinct": True, "merged": False, "reverse_lookup_ok": True, "link_ok": True
    }  # fmt: skip
    ambiguous = [r for r in results["prompt_set"].records if r.expected_ambiguous and r.ambiguous is not None]
    assert ambiguous and all(r.ambiguous for r in ambiguous)
    every_record = [r for result in results.values() for r in result.records]
    assert records_to_table(every_record).num_rows == len(every_record)

    # The simulator saw our request ids and logged them, so telemetry can tell probe from organic traffic.
    request_ids = {r.request_id for r in every_record}
    assert all(rid.startswith("sv-") for rid in request_ids)
    logged = {json.loads(line).get("reqId") for line in simulator.log_lines() if line.startswith("{")}
    assert request_ids <= logged



@pytest.mark.parametrize("target", ["alternate"], indirect=True)
def test_missing_token_is_recorded_as_a_client_error(target, monkeypatch):
    simulator, profile = target
    monkeypatch.delenv("STAGING_TOKEN")
    result = run_probe(profile, lambda c: smoke_tests(c, campaign_at(0, 3600)), base_url=simulator.base_url)
    assert not result.passed
    assert {r.http_status for r in result.records} == {401}
    assert {r.outcome for r in result.records} == {Outcome.CLIENT_ERROR}


def test_identity_merge_fails_the_identity_probe(simulator_factory):
    hour_seconds = 60.0
    timing = campaign_at(2.05, hour_seconds)  # the merge fault starts at hour 2
    simulator = simulator_factory(profile="identity-merge", hour_seconds=hour_seconds,
                                  campaign_start_ms=timing.start_ms)
    result = run_probe(load_target_profile(), lambda c: identity_check(c, timing), base_url=simulator.base_url)
    assert not result.passed
    assert result.summary["merged"] and not result.summary["ids_distinct"]
    assert any("accidental merge" in failure for failure in result.failures)
    assert any(f["fault"] == "identity-merge" for f in simulator.stats()["faults"])


def test_relationship_flap_fails_the_determinism_probe(simulator_factory):
    hour_seconds = 60.0
    timing = campaign_at(2.05, hour_seconds)  # the flap fault starts at hour 2
    simulator = simulator_factory(profile="relationship-flap", hour_seconds=hour_seconds,
                                  campaign_start_ms=timing.start_ms)
    result = run_probe(load_target_profile(), lambda c: determinism_check(c, timing), base_url=simulator.base_url)
    assert not result.passed
    assert result.summary["users_inconsistent"] >= 1
    assert any("differs from the first" in failure for failure in result.failures)


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_outage_yields_connection_error_rows_and_the_client_recovers(simulator_factory):
    hour_seconds = 4.0  # the outage lasts half an hour: 2 s from hour 2
    timing = campaign_at(1.55, hour_seconds)  # leaves the simulator 1.8 s to start before it
    simulator = simulator_factory(profile="outage", hour_seconds=hour_seconds, campaign_start_ms=timing.start_ms)
    wait_until(lambda: _refuses_connections(simulator.port), 10, "outage", poll_s=0.02)

    async def during_and_after(client):
        during = [
            await deploy_verification(client, timing),
            await identity_check(client, timing),
            await stress(client, timing, hour=2, rate_per_s=20, duration_s=0.25),
        ]
        recovery_deadline = client.now() + 10  # the fault window lasts 2 s
        while _refuses_connections(simulator.port):
            assert client.now() < recovery_deadline, "the simulator did not come back after its outage"
            await client.sleep_until(client.now() + 0.05)
        return during, await smoke_tests(client, timing)

    during, after = run_probe(load_target_profile(), during_and_after, base_url=simulator.base_url)
    for result in during:
        assert not result.passed and result.failures
        assert result.records and {r.outcome for r in result.records} == {Outcome.CONNECTION_ERROR}
        assert all(r.error and r.http_status is None for r in result.records)
    assert after.passed, after.failures


def test_a_closed_port_gives_connection_error_records_not_exceptions():
    timing = campaign_at(0.5, 3.0)

    async def everything(client):
        return [
            await deploy_verification(client, timing),
            await smoke_loop(client, timing, hour=0),
            await prompt_set(client, timing, hour=0),
            await stress(client, timing, hour=0, rate_per_s=50, duration_s=0.2),
            await identity_check(client, timing),
            await determinism_check(client, timing),
        ]

    results = run_probe(load_target_profile(), everything, base_url=f"http://127.0.0.1:{closed_port()}")
    for result in results:
        assert not result.passed and result.failures, result.probe
        assert {r.outcome for r in result.records} == {Outcome.CONNECTION_ERROR}, result.probe
        assert all(r.passed is False or r.dropped for r in result.records), result.probe
    prompt_summary = results[2].summary
    assert prompt_summary["labelled"] == 0 and prompt_summary["fp_rate"] is None
    streams = prompt_summary["by_class"]["stream"]["sent"]
    assert prompt_summary["verdict_unobserved"] == prompt_summary["prompts"] - streams
