"""Response bodies are read up to the profile's cap (`http.max_body_bytes`): a 50 MB body or an endless
stream from a real loopback server in another process costs the probe about the cap, never the body."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc

import pytest

from staging_validation.probes.runner import run_probe
from staging_validation.target.client import TargetClient
from staging_validation.target.profile import HttpSettings, load_target_profile
from staging_validation_tests.probes.conftest import campaign_at

BODY_BYTES = 50 * 1024 * 1024
CAP = 256 * 1024
# What a capped read may allocate beyond the cap (httpx buffers, chunk copies), far below the body.
ALLOWED_PEAK = 8 * 1024 * 1024

# /v1/chat answers a 50 MB JSON document; /v1/chat/stream an SSE stream that never ends. Chunks are one
# preallocated buffer, so the server costs nothing per byte either.
SERVER = textwrap.dedent('''
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    CHUNK = b'data: {"token": "' + b"x" * 65000 + b'"}\\n\\n'
    BIG = 50 * 1024 * 1024

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            if self.path == "/v1/chat/stream":
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(CHUNK)
                except OSError:
                    return
            filler = b"y" * 65536
            head, tail = b'{"recordId": "r1", "content": "', b'"}'
            count = (BIG - len(head) - len(tail)) // len(filler)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(head) + count * len(filler) + len(tail)))
            self.end_headers()
            try:
                self.wfile.write(head)
                for _ in range(count):
                    self.wfile.write(filler)
                self.wfile.write(tail)
            except OSError:
                return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
''')


@pytest.fixture(scope="module")
def huge_server():
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


def capped_profile():
    return load_target_profile().model_copy(
        update={"http": HttpSettings(request_timeout_s=20, max_body_bytes=CAP)})


def peak_allocated(probe) -> tuple[object, int]:
    """The probe's result and the peak of Python memory allocated while it ran."""
    tracemalloc.start()
    try:
        result = probe()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_50_mb_response_body_is_cut_off_at_the_cap(huge_server):
    async def chat(client: TargetClient):
        return await client.chat("smoke", campaign_at(0.5, 3600), case="normal", user="u", message="hi")

    record, peak = peak_allocated(lambda: run_probe(capped_profile(), chat, base_url=huge_server))
    assert record.http_status == 200 and record.body_truncated is True
    assert record.body_bytes == CAP
    assert "cap" in record.error and str(CAP) in record.error
    assert record.answer is None  # a cut-off document is not parsed
    assert peak < ALLOWED_PEAK, f"{peak / 1e6:.1f} MB allocated for a {BODY_BYTES / 1e6:.0f} MB body"


def test_an_endless_stream_is_cut_off_at_the_cap(huge_server):
    async def stream(client: TargetClient):
        return await client.stream("smoke", campaign_at(0.5, 3600), case="stream", user="u", message="hi")

    record, peak = peak_allocated(lambda: run_probe(capped_profile(), stream, base_url=huge_server))
    assert record.body_truncated is True and record.body_bytes == CAP
    assert record.sse_events >= 2  # the events that arrived within the cap are still counted
    assert record.outcome == "ok" and "cap" in record.error
    # Stopped at the cap, not at the 20 s request timeout.
    assert record.latency_ms < 10_000
    assert peak < ALLOWED_PEAK, f"{peak / 1e6:.1f} MB allocated for an endless stream"


def test_the_cap_is_validated_and_defaults_to_one_mebibyte():
    assert load_target_profile().http.max_body_bytes == 1024 * 1024
    with pytest.raises(ValueError, match="max_body_bytes"):
        HttpSettings.model_validate({"max_body_bytes": 10})
