"""Against the simulator's rate-limit profile (429 above 5 requests/s): functional probes wait a 429 out,
the stress probe records it. A malformed Retry-After is tried against a tiny loopback server."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from staging_validation.acceptance.gates import stress_result
from staging_validation.acceptance.policy import Policy
from staging_validation.probes.identity import identity_check
from staging_validation.probes.runner import run_probe
from staging_validation.probes.smoke import deploy_verification
from staging_validation.probes.stress import stress
from staging_validation.schemas.outcome import Outcome
from staging_validation.schemas.probe_records import records_to_table
from staging_validation.simulator.process import start_simulator
from staging_validation.target.client import RETRY_AFTER_DEFAULT_S, RETRY_AFTER_MAX_S, TargetClient
from staging_validation.target.profile import DOCUMENTED_PROFILE, load_target_profile
from staging_validation_tests.probes.conftest import campaign_at


@pytest.fixture(scope="module")
def rate_limited(tmp_path_factory):
    simulator = start_simulator(tmp_path_factory.mktemp("rate-limit"), profile="rate-limit")
    yield simulator, load_target_profile(DOCUMENTED_PROFILE)
    simulator.stop()


def completed_statuses(simulator, request_ids: set[str]) -> list[int]:
    lines = [json.loads(line) for line in simulator.log_lines() if line.startswith("{")]
    return [
        line["res"]["statusCode"] for line in lines
        if line.get("msg") == "request completed" and line.get("reqId") in request_ids
    ]  # fmt: skip


def test_hour_0_probes_wait_out_429s_and_pass(rate_limited):
    """Deploy verification and the identity watch together send about twice the limit at once."""
    simulator, profile = rate_limited
    timing = campaign_at(0.0, 3600)

    async def hour_0():
        async with TargetClient(profile, simulator.base_url) as client:
            return await asyncio.gather(deploy_verification(client, timing), identity_check(client, timing))

    deploy, identity = asyncio.run(hour_0())
    assert deploy.passed, deploy.failures
    assert identity.passed, identity.failures
    records = deploy.records + identity.records
    assert {r.outcome for r in records} == {Outcome.OK}
    retried = [r for r in records if r.rate_limited_retries]
    assert retried, "nothing was rate-limited: the test did not exceed the limit"
    # Latency runs from the scheduled send, so it includes every Retry-After wait (1 s each here).
    assert all(r.latency_ms >= 1000 * r.rate_limited_retries for r in retried)
    # The throttling stays visible: the target logged each 429 under the request id it was retried with.
    statuses = completed_statuses(simulator, {r.request_id for r in retried})
    assert statuses.count(429) == sum(r.rate_limited_retries for r in retried)
    assert statuses.count(200) == len(retried)
    assert records_to_table(records).column("rate_limited_retries").to_pylist() == [
        r.rate_limited_retries for r in records
    ]


def test_stress_records_429s_without_retrying(rate_limited):
    simulator, profile = rate_limited
    result = run_probe(
        profile, lambda c: stress(c, campaign_at(7.0, 3600), 7, rate_per_s=20, duration_s=1.0),
        base_url=simulator.base_url,
    )
    records = result.records
    assert len(records) == 20 and not any(r.dropped for r in records)
    assert all(r.rate_limited_retries == 0 for r in records)
    limited = [r for r in records if r.outcome == Outcome.RATE_LIMITED]
    assert limited and all(r.http_status == 429 for r in limited)
    assert result.summary["outcomes"][Outcome.RATE_LIMITED] == len(limited)
    assert not result.passed and any("rate_limited" in failure for failure in result.failures)
    # One request on the wire per record: the target saw no second attempt.
    assert len(completed_statuses(simulator, {r.request_id for r in records})) == 20


def test_a_stress_hour_the_rate_limit_answers_is_marked_invalid_with_the_shares(rate_limited):
    """Against the simulator's limiter (5 requests/s) at 20/s: most requests answer 429, so the stress hour
    measures the limiter, not the service under load, and says so with the shares."""
    simulator, profile = rate_limited
    result = run_probe(
        profile, lambda c: stress(c, campaign_at(7.0, 3600), 7, rate_per_s=20, duration_s=2.0),
        base_url=simulator.base_url,
    )
    assert result.summary["rate_limited_share"] > 0.5
    table = records_to_table(result.records).to_pandas().assign(hour=7)
    judged = stress_result(table, Policy())
    assert judged.valid is False and judged.sent == 40
    assert judged.rate_limited_share == result.summary["rate_limited_share"]
    assert "INVALID" in judged.reason and "of 40 sent requests rate-limited" in judged.reason
    assert list(judged.latency_by_route) == ["POST /v1/chat"]
    # The probe reports the same latency per route.
    assert list(result.summary["latency_by_route"]) == ["POST /v1/chat"]


class ThrottleOnce(BaseHTTPRequestHandler):
    """The first request gets 429 with `retry_after` as its Retry-After header; later ones are served."""

    retry_after = ""
    requests = 0

    def do_GET(self):
        ThrottleOnce.requests += 1
        if ThrottleOnce.requests == 1:
            self.send_response(429)
            self.send_header("Retry-After", ThrottleOnce.retry_after)
            body = b"{}"
        else:
            self.send_response(200)
            body = b'{"status": "ok"}'
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("retry_after", ["nan", "inf", "-inf"])
def test_non_finite_retry_after_is_treated_as_absent(retry_after):
    ThrottleOnce.retry_after, ThrottleOnce.requests = retry_after, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), ThrottleOnce)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        async def health():
            base_url = f"http://127.0.0.1:{server.server_address[1]}"
            async with TargetClient(load_target_profile(DOCUMENTED_PROFILE), base_url) as client:
                record, _ = await client.health("deploy", campaign_at(0.0, 3600))
                return record

        record = asyncio.run(health())
    finally:
        server.shutdown()
        server.server_close()
    assert (record.outcome, record.rate_limited_retries, ThrottleOnce.requests) == (Outcome.OK, 1, 2)
    # The default wait, neither none at all (nan) nor the longest allowed (inf).
    assert 1000 * RETRY_AFTER_DEFAULT_S <= record.latency_ms < 1000 * RETRY_AFTER_MAX_S
