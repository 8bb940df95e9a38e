"""The stress probe is an open-model generator: it holds its rate, and a stalled server cannot hide."""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest

from staging_validation.schemas.outcome import Outcome
from staging_validation.probes.runner import run_probe
from staging_validation.probes.stress import stress
from staging_validation.target.profile import HttpSettings, load_target_profile
from staging_validation_tests.probes.conftest import campaign_at


# The rate is only as steady as the CPU it runs on: `make test` runs this on an otherwise idle machine.
@pytest.mark.load_sensitive
def test_holds_100_requests_per_second_with_latency_from_intended_send_times(target):
    simulator, profile = target
    rate, duration = 100.0, 3.0
    result = run_probe(
        profile, lambda c: stress(c, campaign_at(7.0, 3600), 7, rate, duration), base_url=simulator.base_url
    )
    summary, records = result.summary, result.records
    assert result.passed, result.failures
    assert summary["planned"] == summary["sent"] == 300 and summary["dropped"] == 0
    assert abs(summary["achieved_rate"] - rate) <= 0.02 * rate

    # Each request is due exactly 10 ms after the previous one, and was actually sent on that rhythm.
    due = [r.time for r in records]
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(due, due[1:])]
    assert gaps == pytest.approx([0.01] * len(gaps), abs=2e-6)
    actual = [r.time.timestamp() + r.send_lag_ms / 1000 for r in records]
    assert abs((len(actual) - 1) / (actual[-1] - actual[0]) - rate) <= 0.02 * rate

    # Latency runs from the due time: it includes the send lag, and the percentiles are over those values.
    assert all(r.latency_ms >= r.send_lag_ms >= 0 for r in records)
    latencies = [r.latency_ms for r in records]
    assert summary["p50_ms"] == pytest.approx(np.percentile(latencies, 50), abs=0.1)
    assert summary["p99_ms"] == pytest.approx(np.percentile(latencies, 99), abs=0.1)

    # The simulator served exactly these requests, each under our request id.
    ours = {r.request_id for r in records}
    completed = [
        line for line in map(json.loads, filter(lambda l: l.startswith("{"), simulator.log_lines()))
        if line.get("msg") == "request completed" and line.get("reqId") in ours
    ]  # fmt: skip
    assert len(completed) == 300


class StalledServer:
    """Accepts TCP connections and never answers: the worst kind of slow server."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except TimeoutError:
                continue

    def close(self):
        self._stop.set()
        self._thread.join()
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def stalled_server():
    server = StalledServer()
    yield server
    server.close()


def test_a_stalled_server_shows_as_high_latency_and_dropped_requests(stalled_server):
    timeout_s, cap = 0.4, 10
    profile = load_target_profile().model_copy(
        update={"http": HttpSettings(connect_timeout_s=1, request_timeout_s=timeout_s, max_connections=cap)}
    )
    rate, duration = 40.0, 1.0
    result = run_probe(
        profile,
        lambda c: stress(c, campaign_at(7.0, 3600), 7, rate, duration),
        base_url=f"http://127.0.0.1:{stalled_server.port}",
    )
    summary, records = result.summary, result.records
    assert not result.passed
    # Every slot of the intended rate is accounted for: nothing is silently skipped.
    assert summary["planned"] == len(records) == 40
    assert summary["sent"] + summary["dropped"] == 40
    # Drops are the validator's: noted, never among the target's failures.
    assert summary["dropped_in_flight_cap"] > 0 and any("dropped" in n for n in result.notes)
    assert not any("dropped" in f for f in result.failures)
    # Nothing looks good: every sent request timed out, and its latency counts from its due time.
    sent = [r for r in records if not r.dropped]
    assert sent and {r.outcome for r in sent} == {Outcome.TIMEOUT}
    assert all(r.latency_ms >= timeout_s * 1000 for r in sent)
    assert summary["p50_ms"] >= timeout_s * 1000
    dropped = [r for r in records if r.dropped]
    assert all(r.latency_ms is None and r.passed is None and r.outcome == Outcome.DROPPED for r in dropped)
