"""The shortest campaign hour this machine can serve: how long an hour's longest probe step takes.

The collector starts an hour's steps together at the hour's start (the identity watch beside the phase's
probe), and a step only counts for its hour if it starts before the hour ends; a step that outlasts its
hour keeps its true send times. So the floor is the longest step: the identity watch with the prompt set
(hours 2-6) or with the smoke loop's round (hour 0-1). `MIN_HOUR_SECONDS` in `staging_validation/plan.py`
is that with head-room for a loaded machine. Printed: the medians of `--repeat` runs and the head-room
ratio MIN_HOUR_SECONDS / longest step (above 1: the floor holds on this machine now).

    .venv/bin/python benchmarks/bench_hour_floor.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
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


async def _hour_s(base_url: str, phase_step: str, hour_seconds: float) -> float:
    """Seconds until both of an hour's steps have ended, started together as the collector starts them."""
    timing = CampaignTiming(start_ms=int(time.time() * 1000), hour_seconds=hour_seconds)
    async with TargetClient(load_target_profile(None), base_url=base_url) as client:
        started = time.perf_counter()
        other = prompt_set(client, timing, 0) if phase_step == "prompt_set" else smoke_tests(client, timing)
        await asyncio.gather(identity_check(client, timing), other)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--hour-seconds", type=float, default=MIN_HOUR_SECONDS,
                        help="hour length the probes' pacing is scaled to")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        simulator = start_simulator(Path(tmp), profile="healthy", hour_seconds=args.hour_seconds)
        try:
            figures = {step: statistics.median(asyncio.run(_hour_s(simulator.base_url, step, args.hour_seconds))
                                               for _ in range(args.repeat))
                       for step in ("prompt_set", "smoke")}
        finally:
            simulator.stop()
    for step, seconds in figures.items():
        print(f"identity + {step:12s} {seconds:6.2f} s")
    longest = max(figures.values())
    print(f"head-room {MIN_HOUR_SECONDS:g} s / {longest:.2f} s = {MIN_HOUR_SECONDS / longest:.2f}x")


if __name__ == "__main__":
    main()
