"""Shared fixtures: a factory for real simulator processes, each stopped at the end of the test."""

from __future__ import annotations

import functools

import pytest

from staging_validation.simulator.process import RunningSimulator, start_simulator


@pytest.fixture
def simulator_factory(tmp_path):
    """`simulator_factory(profile=..., hour_seconds=..., ...)` → RunningSimulator.

    Options are those of `staging_validation.simulator.process.start_simulator`; every simulator still
    running at teardown is killed.
    """
    started: list[RunningSimulator] = []

    @functools.wraps(start_simulator)
    def start(**options) -> RunningSimulator:
        simulator = start_simulator(options.pop("tmp_path", tmp_path), **options)
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.kill()  # a test that needs a graceful end calls stop() or final_stats() itself
