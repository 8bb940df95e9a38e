"""Generated request values and prompts from the profile, seen on the wire by a recording loopback server:
`{user_uuid}` is stable per probe user, `{request_uuid}` fresh per request, an identity "create" can be
a GET with query parameters and headers, and the smoke, determinism and prompt-set messages come from the
profile or the prompt file it names."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from staging_validation.config_files import ConfigError
from staging_validation.probes.identity import determinism_check
from staging_validation.probes.prompt_set import prompt_set
from staging_validation.probes.runner import run_probe
from staging_validation.probes.smoke import smoke_tests
from staging_validation.target.client import TargetClient
from staging_validation.target.profile import DOCUMENTED_PROFILE, load_target_profile, user_uuid
from staging_validation_tests.probes.conftest import campaign_at


class Recorder:
    """Records every request (method, path, query, headers, JSON body) and answers like a chat service."""

    def __init__(self):
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body: dict | None):
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                recorder.requests.append({"method": self.command, "path": url.path, "query": query,
                                          "headers": {k.lower(): v for k, v in self.headers.items()},
                                          "body": body})
                if url.path.endswith("/stream"):
                    payload, kind = b"data: a\n\ndata: b\n\n", "text/event-stream"
                else:
                    answer = {"recordId": "r1", "content": "ok", "ambiguity_detected": False,
                              "vi_user_id": f"vi-{query.get('external_id', '')}"}
                    payload, kind = json.dumps(answer).encode(), "application/json"
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._answer(None)

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                self._answer(json.loads(self.rfile.read(length)) if length else None)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.close()


def write_profile(tmp_path, **changes) -> str:
    data = yaml.safe_load(DOCUMENTED_PROFILE.read_text())
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) and key != "prompts" else value
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_user_uuid_is_stable_per_user_and_request_uuid_fresh_per_request(tmp_path, recorder):
    requests = yaml.safe_load(DOCUMENTED_PROFILE.read_text())["requests"]
    requests["chat"]["headers"] = {"X-User-UUID": "{user_uuid}", "X-Request-UUID": "{request_uuid}"}
    profile = load_target_profile(write_profile(tmp_path, requests=requests, user={"location": "query",
                                                                                  "name": "uid"}))
    timing = campaign_at(0.5, 3600)

    async def chats(client: TargetClient):
        for user in ("sv-a", "sv-a", "sv-b"):
            await client.chat("smoke", timing, case="normal", user=user, message="hi")

    run_probe(profile, chats, base_url=recorder.base_url)
    sent = recorder.requests
    user_uuids = [r["headers"]["x-user-uuid"] for r in sent]
    assert user_uuids[0] == user_uuids[1] == user_uuid("sv-a") != user_uuids[2] == user_uuid("sv-b")
    assert all(uuid.UUID(value) for value in user_uuids)
    assert len({r["headers"]["x-request-uuid"] for r in sent}) == 3
    assert [r["query"]["uid"] for r in sent] == ["sv-a", "sv-a", "sv-b"]  # the user in the query
    assert all("uid" not in (r["body"] or {}) for r in sent)


def test_identity_create_as_a_get_that_creates_on_first_resolve(tmp_path, recorder):
    resolve = {"method": "GET", "route": "/identity/resolve",
               "query": {"source": "{provider}", "external_id": "{provider_user_id}", "create": "true"},
               "headers": {"X-Tenant-User": "{user_uuid}", "X-Provider": "{provider}"}}
    requests = yaml.safe_load(DOCUMENTED_PROFILE.read_text())["requests"]
    requests["identity_create"] = resolve
    requests["identity_resolve"] = {**resolve, "query": {**resolve["query"], "create": "false"}}
    profile = load_target_profile(write_profile(tmp_path, requests=requests))

    async def create(client: TargetClient):
        return await client.identity_for_provider("identity_create", "identity", campaign_at(0.5, 3600),
                                                  case="create_discord", provider="discord",
                                                  provider_user_id="d-42")

    record = run_probe(profile, create, base_url=recorder.base_url)
    [sent] = recorder.requests
    assert (sent["method"], sent["path"], sent["body"]) == ("GET", "/identity/resolve", None)
    assert sent["query"] == {"source": "discord", "external_id": "d-42", "create": "true"}
    assert sent["headers"]["x-provider"] == "discord"
    assert record.vi_user_id == "vi-d-42" and record.method == "GET"


def test_probe_prompts_come_from_the_prompt_file_the_profile_names(tmp_path, recorder):
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "labelled.yaml").write_text(yaml.safe_dump({"prompts": [
        {"id": "n1", "class": "normal", "expected_ambiguous": False, "message": "Plan my week of meals."}]}))
    (tmp_path / "prompts.yaml").write_text(yaml.safe_dump({
        "smoke": {"normal": "Who wrote Hamlet?", "ambiguous": "that one then",
                  "relationship": "What do you know about me?", "stream": "Stream me a haiku."},
        "determinism": "Help me plan my garden.",
        "prompt_set": "sets/labelled.yaml",  # relative to the prompt file
    }))
    profile = load_target_profile(write_profile(tmp_path, prompts_file="prompts.yaml"))
    assert profile.prompts.prompt_set == str(tmp_path / "sets" / "labelled.yaml")
    timing = campaign_at(2.0, 3600)

    async def probes(client: TargetClient):
        await smoke_tests(client, timing)
        await determinism_check(client, timing, users=("sv-d",), requests_per_user=2)
        await prompt_set(client, timing, 2)

    run_probe(profile, probes, base_url=recorder.base_url)
    messages = [r["body"]["message"] for r in recorder.requests]
    assert sorted(messages[:4]) == sorted(["Who wrote Hamlet?", "that one then", "What do you know about me?",
                                           "Stream me a haiku."])
    assert messages[4:] == ["Help me plan my garden.", "Help me plan my garden.", "Plan my week of meals."]


def test_without_prompts_the_runbook_prompts_are_used():
    prompts = load_target_profile().prompts
    assert prompts.smoke.ambiguous == "so what not" and prompts.prompt_set is None
    assert prompts.determinism == "Good morning! What should I focus on today?"


def test_an_unreadable_prompt_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_target_profile(write_profile(tmp_path, prompts_file="missing.yaml"))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"smoke": {"normal": ""}}))
    with pytest.raises(ConfigError, match=r"bad.yaml: smoke.normal"):
        load_target_profile(write_profile(tmp_path, prompts_file="bad.yaml"))
