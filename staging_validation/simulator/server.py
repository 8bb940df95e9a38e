"""Running the simulator: the listening socket, uvicorn, organic traffic, the campaign-time scheduler.

An outage really refuses TCP connections: the uvicorn server is shut down, which closes the listening
socket, and a new one is bound to the same port when the window ends. The socket is bound before
anything else starts, so a port already in use is reported as one line by the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys

import uvicorn

from staging_validation.simulator.engine import StagingService

HOST = "127.0.0.1"
SCHEDULER_MAX_TICK_S = 0.05
SCHEDULER_MIN_TICK_S = 0.005  # a tiny --hour-seconds must not turn the scheduler into a busy loop
REBIND_ATTEMPTS = 50
REBIND_RETRY_S = 0.1
GRACEFUL_SHUTDOWN_S = 10


def bind_listening_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _SignalFreeServer(uvicorn.Server):
    """uvicorn re-raises captured signals after serving; the simulator handles them itself instead."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _wait_while_refusing_is(
    refusing: bool, service: StagingService, stop: asyncio.Event, outage_changed: asyncio.Event
) -> None:
    """Return once `stop` is set or the outage state is no longer `refusing`.

    Level-triggered: the state is re-read after every wake-up, and the event is cleared before that
    read, so a change made at any moment (even while the caller was busy elsewhere) is never lost.
    """
    while not stop.is_set() and service.refusing_connections == refusing:
        await _wait_any(stop, outage_changed)
        outage_changed.clear()


async def _scheduler(service: StagingService, stop: asyncio.Event, outage_changed: asyncio.Event) -> None:
    tick_s = max(SCHEDULER_MIN_TICK_S, min(SCHEDULER_MAX_TICK_S, service.timing.hour_seconds / 100))
    while not stop.is_set():
        refusing_before = service.refusing_connections
        service.scheduler_tick()
        if service.refusing_connections != refusing_before:
            outage_changed.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=tick_s)


async def _rebind(port: int, stop: asyncio.Event) -> socket.socket | None:
    """A new listening socket on `port`, or None when `stop` is set first; OSError after the last attempt."""
    for _ in range(REBIND_ATTEMPTS - 1):
        with contextlib.suppress(OSError):
            return bind_listening_socket(port)
        # The old socket's port can take a moment to be released; a shutdown does not wait for it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=REBIND_RETRY_S)
        if stop.is_set():
            return None
    return bind_listening_socket(port)


async def serve(service: StagingService, app, sock: socket.socket, organic_rps: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    outage_changed = asyncio.Event()
    port = sock.getsockname()[1]
    background = [asyncio.create_task(_scheduler(service, stop, outage_changed))]
    if organic_rps > 0:
        background.append(asyncio.create_task(service.organic_traffic(organic_rps, stop)))
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    listening: socket.socket | None = sock  # None while an outage refuses connections
    try:
        while not stop.is_set():
            if service.refusing_connections:
                if listening is not None:  # a listening socket would let the kernel accept connections
                    listening.close()
                    listening = None
                await _wait_while_refusing_is(True, service, stop, outage_changed)
                continue
            if listening is None:
                try:
                    listening = await _rebind(port, stop)
                except OSError as exc:  # another process took the port during the outage
                    print(
                        f"simulator: cannot listen again on {HOST}:{port}: {exc.strerror or exc}",
                        file=sys.stderr,
                    )
                    break
                continue  # re-read the outage state: a new window may have opened while binding
            server = _SignalFreeServer(config)
            serving = asyncio.create_task(server.serve(sockets=[listening]))
            await _wait_while_refusing_is(False, service, stop, outage_changed)
            server.should_exit = True
            await serving
            listening.close()
            listening = None
    finally:
        stop.set()
        if listening is not None:
            listening.close()
        await asyncio.gather(*background, return_exceptions=True)
        await service.drain_organic(GRACEFUL_SHUTDOWN_S)
        service.log.close()
