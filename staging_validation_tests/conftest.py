"""Shared fixtures: a factory for real simulator processes, each stopped at the end of the test, and a
real webhook receiver on loopback."""

from __future__ import annotations

import functools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class LoopbackWebhook:
    """A real HTTP server on 127.0.0.1 that records every POSTed JSON body and answers with `status`."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def webhook_server():
    hook = LoopbackWebhook()
    threading.Thread(target=hook.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()
