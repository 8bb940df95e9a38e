"""Running a probe from synchronous code (the CLI, Dagster assets): one client for the probe's duration."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from staging_validation.probes.result import ProbeResult
from staging_validation.target.client import TargetClient
from staging_validation.target.profile import TargetProfile


def run_probe(
    profile: TargetProfile,
    probe: Callable[[TargetClient], Awaitable[ProbeResult]],
    base_url: str | None = None,
) -> ProbeResult:
    """Run `probe(client)` to completion, e.g. `run_probe(profile, lambda c: smoke_loop(c, timing, 1))`."""

    async def with_client() -> ProbeResult:
        async with TargetClient(profile, base_url) as client:
            return await probe(client)

    return asyncio.run(with_client())
