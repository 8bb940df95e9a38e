"""Same seed, same requests → same events; bad arguments → one line and a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from staging_validation_tests.simulator.log_reading import completed_requests, json_records

NONDETERMINISTIC_FIELDS = ("time", "pid", "hostname", "duration_ms")
PROBE_REQUESTS = [
    ("/v1/chat", {"message": "How do I reset my password on the console?", "userId": "probe-owner-1"}),
    ("/v1/chat", {"message": "so what not", "userId": "probe-user-1"}),
    (
        "/v1/chat/stream",
        {"message": "Explain the difference between a list and a tuple.", "userId": "probe-user-2"},
    ),
    ("/v1/identity/create", {"provider": "discord", "provider_user_id": "det-1"}),
]


def events_of(sim) -> dict[str, list[dict]]:
    with httpx.Client(base_url=sim.base_url, timeout=10) as client:
        for number, (route, body) in enumerate(PROBE_REQUESTS):
            client.post(route, json=body, headers={"x-request-id": f"sv-det-{number}"})
    sim.wait_for(lambda s: s["requests"]["organic"] >= 120, what="120 organic requests")
    sim.kill()
    return {
        request_id: [{k: v for k, v in line.items() if k not in NONDETERMINISTIC_FIELDS} for line in lines]
        for request_id, lines in completed_requests(json_records(sim.log_lines())).items()
    }


def test_same_seed_same_events(simulator_factory):
    with ThreadPoolExecutor(3) as pool:  # three independent processes, run side by side
        sims = list(pool.map(lambda seed: simulator_factory(seed=seed, organic_rps=250), (7, 7, 8)))
        first, second, other_seed = pool.map(events_of, sims)
    common = set(first) & set(second)
    assert {f"sv-det-{n}" for n in range(len(PROBE_REQUESTS))} <= common
    assert len(common) >= 80
    assert all(first[request_id] == second[request_id] for request_id in common)
    assert any(first[r] != other_seed[r] for r in set(first) & set(other_seed))


def simulate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "staging_validation.cli", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert all(text in lines[0] for text in expected), lines[0]


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_unknown_profile(tmp_path):
    assert_one_line_error(
        simulate("--log", str(tmp_path / "s.log"), "--profile", "no-such"), "unknown profile 'no-such'"
    )


def test_port_in_use(tmp_path, busy_port):
    result = simulate("--log", str(tmp_path / "s.log"), "--port", str(busy_port))
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{busy_port}")


def test_unwritable_log_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_one_line_error(simulate("--port", "0", "--log", str(blocker / "s.log")), "cannot write the log")


@pytest.mark.parametrize(("profile_text", "field", "value"), [
    ("profiles:\n  broken:\n    faults:\n      - {name: x, at_hour: 1, set: {no_such_knob: 1}}\n",
     "profiles.broken.faults.0.set", "no_such_knob"),
    ("profiles:\n  broken:\n    knobs: {error_rate: 2}\n", "profiles.broken.knobs", "error_rate"),
])
def test_malformed_profile_file(tmp_path, profile_text, field, value):
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(profile_text)
    result = simulate("--port", "0", "--log", str(tmp_path / "s.log"), "--profile-file", str(profiles),
                      "--profile", "broken")
    assert_one_line_error(result, field, value)


def test_token_env_must_be_set(tmp_path):
    result = simulate(
        "--port", "0", "--log", str(tmp_path / "s.log"), "--token-env", "SIM_TEST_UNSET_TOKEN_VAR"
    )
    assert_one_line_error(result, "SIM_TEST_UNSET_TOKEN_VAR")
