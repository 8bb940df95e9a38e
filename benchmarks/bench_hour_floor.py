"""The shortest campaign hour this machine can serve: what an hour's probe run needs before its hour ends.

An hour's probes are only evidence if they run inside the hour, so an hour must hold its longest probe
step against the target (the identity check, then the prompt set or a smoke round): `MIN_HOUR_SECONDS` in
`staging_validation/plan.py` is that, with head-room for a loaded machine. A probe run the daemon launches
at the hour's start also spends the clock's sensor interval and a run worker's start-up (a fresh process
importing the code location) before its first request; both are printed too (medians of `--repeat`).

    .venv/bin/python benchmarks/bench_hour_floor.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from staging_validation.plan import MIN_HOUR_SECONDS
from staging_validation.probes.identity import identity_check
from staging_validation.probes.prompt_set import prompt_set
from staging_validation.probes.smoke import smoke_tests
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.simulator.process import start_simulator
from staging_validation.target.client import TargetClient
from staging_validation.target.profile import load_target_profile

SENSOR_INTERVAL_S = 5  # the clock's default tick (campaign.sensors.SENSOR_INTERVAL_ENV)


def worker_start_s() -> float:
    """Wall time of a fresh process importing the code location, as a run worker does before its step."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import staging_validation.definitions"], check=True)
    return time.perf_counter() - started


async def _probe_s(base_url: str, which: str, hour_seconds: float) -> float:
    timing = CampaignTiming(start_ms=int(time.time() * 1000), hour_seconds=hour_seconds)
    async with TargetClient(load_target_profile(None), base_url=base_url) as client:
        started = time.perf_counter()
        # Every hour starts with the identity check, then plays its step.
        await identity_check(client, timing)
        if which == "prompt_set":
            await prompt_set(client, timing, 0)
        else:
            await smoke_tests(client, timing)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--hour-seconds", type=float, default=1.0, help="hour length the probes are scaled to")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        simulator = start_simulator(Path(tmp), profile="healthy", hour_seconds=args.hour_seconds)
        try:
            prompts = [asyncio.run(_probe_s(simulator.base_url, "prompt_set", args.hour_seconds))
                       for _ in range(args.repeat)]
            smoke = [asyncio.run(_probe_s(simulator.base_url, "smoke", args.hour_seconds)) for _ in range(args.repeat)]
        finally:
            simulator.stop()
    workers = [worker_start_s() for _ in range(args.repeat)]
    figures = {"identity + prompt set": statistics.median(prompts), "identity + smoke round": statistics.median(smoke),
               "sensor interval": float(SENSOR_INTERVAL_S), "run worker start-up": statistics.median(workers)}
    for name, seconds in figures.items():
        print(f"{name:24s} {seconds:6.2f} s")
    step = max(figures["identity + prompt set"], figures["identity + smoke round"])
    print(f"{'longest step':24s} {step:6.2f} s   (MIN_HOUR_SECONDS = {MIN_HOUR_SECONDS:g} s)")
    print(f"{'+ tick + worker start':24s} {step + figures['sensor interval'] + figures['run worker start-up']:6.2f} s"
          "   (a probe run requested at its hour's start, launched by the daemon)")


if __name__ == "__main__":
    main()
