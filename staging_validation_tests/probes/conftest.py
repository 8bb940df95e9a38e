"""Healthy simulators shared by the probe tests (one per dialect), and campaign timing helpers."""

from __future__ import annotations

import socket
import time

import pytest

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.simulator.process import start_simulator
from staging_validation.target.profile import ALTERNATE_PROFILE, DOCUMENTED_PROFILE, load_target_profile

# The alternate simulator requires a bearer token, read by both sides from the variable the shipped
# alternate profile names, so the dialect test also proves the token travels.
ALTERNATE_TOKEN = "probe-test-token-7f3a"
PROFILE_FILES = {"documented": DOCUMENTED_PROFILE, "alternate": ALTERNATE_PROFILE}


def campaign_at(hour: float, hour_seconds: float) -> CampaignTiming:
    """A campaign whose clock reads `hour` (fractional) right now."""
    return CampaignTiming(start_ms=int((time.time() - hour * hour_seconds) * 1000), hour_seconds=hour_seconds)


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="package")
def healthy_simulators(tmp_path_factory):
    started = {}

    def get(dialect: str):
        if dialect not in started:
            token_options = {}
            if dialect == "alternate":
                token_options = {"env": {"STAGING_TOKEN": ALTERNATE_TOKEN},
                                 "extra_args": ["--token-env", "STAGING_TOKEN"]}
            started[dialect] = start_simulator(
                tmp_path_factory.mktemp(f"healthy-{dialect}"), dialect=dialect, organic_rps=5, **token_options
            )
        return started[dialect]

    yield get
    for simulator in started.values():
        simulator.stop()


@pytest.fixture
def target(healthy_simulators, monkeypatch, request):
    """(simulator, profile) for a dialect given by indirect parametrization; default documented."""
    dialect = getattr(request, "param", "documented")
    monkeypatch.setenv("STAGING_TOKEN", ALTERNATE_TOKEN)
    return healthy_simulators(dialect), load_target_profile(PROFILE_FILES[dialect])
