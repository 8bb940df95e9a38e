"""Every route of both dialects answers with the documented shape, and writes the documented telemetry."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from staging_validation.simulator.engine import (
    ORGANIC_AMBIGUOUS_MESSAGES,
    ORGANIC_CLEAR_MESSAGES,
    assess_ambiguity,
)
from staging_validation_tests.simulator.log_reading import (
    assert_all_pino,
    by_msg,
    json_records,
    lines_by_request,
)

NORMAL = "How do I reset my password on the console?"
AMBIGUOUS = "so what not"
CONTEXT_FIELDS = {"relationship_type", "voice_profile", "trust_level"}


def sse_events(response: httpx.Response) -> list[dict]:
    return [
        json.loads(line[len("data: ") :]) for line in response.text.splitlines() if line.startswith("data: ")
    ]


def test_documented_dialect_routes_and_shapes(simulator_factory):
    sim = simulator_factory()
    with httpx.Client(base_url=sim.base_url, timeout=10) as client:
        health = client.get("/health").json()
        assert set(health["config"]) == {
            "ambiguityGateEnabled",
            "relationshipModelEnabled",
            "identitySpineEnabled",
            "continuityPackRequired",
        }

        answer = client.post("/v1/chat", json={"message": NORMAL, "userId": "probe-owner-7"}).json()
        assert answer["recordId"] and answer["content"] and answer["ambiguity_detected"] is False
        assert answer["relationship_context"] == {
            "relationship_type": "owner",
            "voice_profile": "companion_warm",
            "trust_level": "full",
        }
        public = client.post(
            "/v1/chat", json={"message": NORMAL, "userId": "probe-user-7", "timestamp": 1}
        ).json()
        assert public["relationship_context"]["relationship_type"] == "public"

        clarification = client.post("/v1/chat", json={"message": AMBIGUOUS, "userId": "probe-user-7"}).json()
        assert clarification["ambiguity_detected"] is True and clarification["recordId"]

        stream = client.post("/v1/chat/stream", json={"message": NORMAL, "userId": "probe-user-7"})
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = sse_events(stream)
        assert len(events) >= 3 and events[-1]["type"] == "done"
        assert set(events[-1]["relationship_context"]) >= CONTEXT_FIELDS

        discord = client.post(
            "/v1/identity/create", json={"provider": "discord", "provider_user_id": "d-1"}
        ).json()
        sovereign = client.post(
            "/v1/identity/create", json={"provider": "sovereign", "provider_user_id": "s-1"}
        ).json()
        assert discord["vi_user_id"] != sovereign["vi_user_id"]
        resolved = client.post(
            "/v1/identity/resolve", json={"provider": "discord", "provider_user_id": "d-1"}
        ).json()
        assert resolved == discord
        link = client.post(
            "/v1/identity/link",
            json={"vi_user_id": discord["vi_user_id"], "provider": "console", "provider_user_id": "c-1"},
        )
        assert link.status_code == 200
        providers = client.get(f"/v1/identity/providers/{discord['vi_user_id']}").json()
        assert providers == [
            {"provider": "discord", "provider_user_id": "d-1"},
            {"provider": "console", "provider_user_id": "c-1"},
        ]

        assert client.get("/v1/identity/providers/no-such-user").status_code == 404
        stolen = client.post(
            "/v1/identity/link",
            json={"vi_user_id": sovereign["vi_user_id"], "provider": "console", "provider_user_id": "c-1"},
        )
        assert stolen.status_code == 409
        assert client.post("/v1/chat", json={"message": NORMAL}).status_code == 400
        assert client.post("/v1/chat", content=b"{not json").status_code == 400
        assert client.get("/api/v2/status").status_code == 404  # the other dialect's route

    records = assert_all_pino(sim.log_lines())
    identity = by_msg(records, "[Staging] Identity operation")
    assert [(r["op"], r["ok"], r["level"]) for r in identity] == [
        ("create", True, 30),
        ("create", True, 30),
        ("resolve", True, 30),
        ("link", True, 30),
        ("lookup", True, 30),
        ("lookup", False, 50),
        ("link", False, 50),
    ]


def test_alternate_dialect_routes_and_shapes(simulator_factory):
    sim = simulator_factory(dialect="alternate")
    with httpx.Client(base_url=sim.base_url, timeout=10) as client:
        status = client.get("/api/v2/status").json()
        assert status["service"]["state"] == "up"
        assert set(status["service"]["features"]) == {
            "ambiguity_gate",
            "relationship_model",
            "identity_spine",
            "continuity_required",
        }

        reply = client.post(
            "/api/v2/conversations/reply", json={"text": NORMAL}, headers={"X-Vi-User": "owner-9"}
        )
        data = reply.json()["data"]
        assert data["id"] and data["reply"]["text"] and data["reply"]["category"] == "answer"
        assert data["relationship"] == {"type": "owner", "voice": "companion_warm", "trust": "full"}
        clarification = client.post(
            "/api/v2/conversations/reply", json={"text": AMBIGUOUS}, headers={"X-Vi-User": "user-9"}
        ).json()
        assert clarification["data"]["reply"]["category"] == "clarification"
        assert (
            client.post("/api/v2/conversations/reply", json={"text": NORMAL}).status_code == 400
        )  # no user header

        stream = client.post(
            "/api/v2/conversations/reply/stream", json={"text": NORMAL}, headers={"X-Vi-User": "user-9"}
        )
        events = sse_events(stream)
        assert len(events) >= 3 and events[-1]["event"] == "reply.done"
        assert events[-1]["data"]["reply"]["category"] == "answer"

        unknown = client.post("/api/v2/accounts/resolve", json={"source": "discord", "external_id": "d-2"})
        assert unknown.status_code == 404
        created = client.post(
            "/api/v2/accounts/resolve", json={"source": "discord", "external_id": "d-2", "create": True}
        ).json()
        account_id = created["account"]["id"]
        again = client.post(
            "/api/v2/accounts/resolve", json={"source": "discord", "external_id": "d-2"}
        ).json()
        assert again["account"]["id"] == account_id
        other = client.post(
            "/api/v2/accounts/resolve", json={"source": "sovereign", "external_id": "s-2", "create": True}
        ).json()
        assert other["account"]["id"] != account_id
        linked = client.post(
            f"/api/v2/accounts/{account_id}/links", json={"source": "astralis", "external_id": "a-2"}
        )
        assert linked.status_code == 200
        links = client.get(f"/api/v2/accounts/{account_id}/links").json()
        assert links == {
            "links": [
                {"source": "discord", "external_id": "d-2"},
                {"source": "astralis", "external_id": "a-2"},
            ]
        }
        assert client.get("/health").status_code == 404  # the documented route does not exist here

    records = assert_all_pino(sim.log_lines())
    urls = {r["req"]["url"] for r in by_msg(records, "request completed")}
    assert "/api/v2/conversations/reply" in urls and "/v1/chat" not in urls


def test_telemetry_order_and_request_ids(simulator_factory):
    sim = simulator_factory()
    with httpx.Client(base_url=sim.base_url, timeout=10) as client:
        client.post(
            "/v1/chat", json={"message": NORMAL, "userId": "u-1"}, headers={"x-request-id": "sv-normal"}
        )
        client.post(
            "/v1/chat", json={"message": AMBIGUOUS, "userId": "u-1"}, headers={"x-request-id": "sv-ambig"}
        )
        echoed = client.post("/v1/chat", json={"message": NORMAL, "userId": "u-2"})
    generated_id = echoed.headers["x-request-id"]
    assert generated_id.startswith("req-")

    grouped = lines_by_request(assert_all_pino(sim.log_lines()))
    normal = [r["msg"] for r in grouped["sv-normal"]]
    assert normal[:3] == [
        "[Staging] ContinuityPack built",
        "[Staging] Ambiguity check completed",
        "[Staging] Relationship resolved",
    ]
    governor = normal[3:-1]
    assert governor and all(m.startswith("[Staging] Governor pass ") for m in governor)
    assert normal[-1] == "request completed"
    attempts = [r for r in grouped["sv-normal"] if r["msg"].startswith("[Staging] Governor")]
    assert [r["attempt"] for r in attempts] == list(range(1, len(attempts) + 1))
    assert attempts[-1]["status"] == "passed"
    assert [r["msg"] for r in grouped["sv-ambig"]] == [
        "[Staging] ContinuityPack built",
        "[Staging] Ambiguity check completed",
        "request completed",
    ]
    assert grouped["sv-ambig"][1]["status"] == "AMBIGUOUS"
    assert grouped["sv-ambig"][1]["reason"] == "MALFORMED_QUERY"
    assert grouped["sv-normal"][-1]["duration_ms"] > 0
    assert grouped["sv-normal"][-1]["req"] == {"method": "POST", "url": "/v1/chat"}
    assert generated_id in grouped


def test_stats_count_exactly_what_the_log_holds(simulator_factory, tmp_path):
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(
        "profiles:\n  errors-and-noise:\n    knobs: {error_rate: 0.2, noise_rate: 0.1, fallback_rate: 0.1}\n"
    )
    sim = simulator_factory(
        organic_rps=200, profile="errors-and-noise", extra_args=["--profile-file", str(profiles)]
    )
    sim.wait_for(lambda s: s["error_lines"] >= 5 and s["unparsed_lines"] >= 5, what="errors and noise")
    with httpx.Client(base_url=sim.base_url, timeout=10) as client:
        client.post(
            "/v1/chat", json={"message": NORMAL, "userId": "u-3"}, headers={"x-request-id": "sv-count"}
        )
    stats = sim.final_stats()

    lines = sim.log_lines()
    records = json_records(lines)
    assert stats["lines_total"] == len(lines)
    assert stats["unparsed_lines"] == len(lines) - len(records)
    assert stats["error_lines"] == sum(r["level"] >= 50 for r in records)
    completed = by_msg(records, "request completed")
    assert stats["requests"]["total"] == len(completed)
    assert stats["requests"]["by_status"] == dict(Counter(str(r["res"]["statusCode"]) for r in completed))
    assert stats["requests"]["probe"] == sum(r["reqId"].startswith("sv-") for r in completed)
    assert stats["events"]["error"] == len(by_msg(records, "Unhandled error in chat handler"))
    assert stats["events"]["pack_fallback"] == len(
        by_msg(records, "[Staging] ContinuityPack fallback: using default pack")
    )
    by_hour_total = Counter()
    for counts in stats["events_by_hour"].values():
        by_hour_total.update(counts)
    assert dict(by_hour_total) == stats["events"]
    origin_total = Counter(stats["events_by_origin"]["probe"]) + Counter(stats["events_by_origin"]["organic"])
    assert dict(origin_total) == stats["events"]
    organic_checks = [
        r for r in by_msg(records, "[Staging] Ambiguity check completed") if not r["reqId"].startswith("sv-")
    ]
    assert stats["organic_ambiguity_checks"] == len(organic_checks)
    assert stats["organic_ambiguous"] == sum(r["status"] == "AMBIGUOUS" for r in organic_checks)


def test_bearer_token_guards_service_routes(simulator_factory):
    sim = simulator_factory(
        extra_args=["--token-env", "SIM_TEST_TOKEN"], env={"SIM_TEST_TOKEN": "t0k3n-value"}
    )
    body = {"message": NORMAL, "userId": "u-4"}
    with httpx.Client(base_url=sim.base_url, timeout=10) as client:
        assert client.get("/health").status_code == 200  # health stays open for deployment checks
        assert client.post("/v1/chat", json=body).status_code == 401
        wrong = client.post("/v1/chat", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = client.post("/v1/chat", json=body, headers={"Authorization": "Bearer t0k3n-value"})
        assert right.status_code == 200
    log_text = sim.log_path.read_text()
    assert "t0k3n-value" not in log_text
    assert sim.stats()["requests"]["by_status"]["401"] == 2


def test_non_ascii_authorization_is_compared_as_bytes(simulator_factory):
    sim = simulator_factory(extra_args=["--token-env", "SIM_TEST_TOKEN"], env={"SIM_TEST_TOKEN": "tök3n-välue"})
    body = {"message": NORMAL, "userId": "u-5"}
    with httpx.Client(base_url=sim.base_url, timeout=10) as client:
        wrong = client.post("/v1/chat", json=body, headers={
            "Authorization": "Bearer nöpe".encode(), "x-request-id": "sv-auth-non-ascii"})
        right = client.post("/v1/chat", json=body, headers={"Authorization": "Bearer tök3n-välue".encode()})
    assert (wrong.status_code, right.status_code) == (401, 200)
    completed = by_msg(json_records(sim.log_lines()), "request completed")
    assert [r["res"]["statusCode"] for r in completed if r["reqId"] == "sv-auth-non-ascii"] == [401]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("so what not", ("AMBIGUOUS", "MALFORMED_QUERY")),
        ("what about that one?", ("AMBIGUOUS", "DANGLING_REFERENCE")),
        ("which is better?", ("AMBIGUOUS", "UNDERSPECIFIED_COMPARISON")),
        ("do it but don't change anything", ("AMBIGUOUS", "CONTRADICTORY_REQUEST")),
        ("Which is better for a beginner, Python or Rust?", ("clear", "NONE")),
        (NORMAL, ("clear", "NONE")),
    ],
)
def test_ambiguity_check_is_a_function_of_the_text(message, expected):
    assert assess_ambiguity(message) == expected


def test_organic_messages_are_judged_as_generated():
    """The organic ambiguity rate is the share of ambiguous texts generated: each pool is judged as such."""
    assert all(assess_ambiguity(m)[0] == "clear" for m in ORGANIC_CLEAR_MESSAGES)
    assert all(assess_ambiguity(m)[0] == "AMBIGUOUS" for m in ORGANIC_AMBIGUOUS_MESSAGES)


def test_campaign_time_is_anchored_by_option_and_route(simulator_factory):
    hour_ms = 3_600_000
    started_ms = int(time.time() * 1000)
    sim = simulator_factory(profile="missing-pack", campaign_start_ms=started_ms - 2 * hour_ms - 1000)
    with httpx.Client(base_url=sim.base_url, timeout=10) as client, ThreadPoolExecutor(8) as pool:
        # Half the requests of the window lack a pack, at most one in all.
        list(
            pool.map(
                lambda n: client.post(
                    "/v1/chat",
                    json={"message": NORMAL, "userId": "u-5"},
                    headers={"x-request-id": f"sv-a{n}"},
                ),
                range(8),
            )
        )
    stats = sim.stats()
    assert stats["events"]["pack_missing"] == 1
    assert set(stats["events_by_hour"]) == {"2"}
    assert [f["hour"] for f in stats["faults"]] == [2, 2]  # the window opening, then the missing pack

    sim.set_campaign_start(started_ms + hour_ms)  # re-anchored: everything so far is before hour 0
    stats = sim.stats()
    assert stats["campaign_start_ms"] == started_ms + hour_ms
    assert set(stats["events_by_hour"]) == {"-1"}
    assert httpx.post(f"{sim.base_url}/_sim/campaign", json={"start_ms": "soon"}).status_code == 400
