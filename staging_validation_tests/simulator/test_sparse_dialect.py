"""The sparse dialect: a deployment that exposes less than its docs, and logs elsewhere and mostly unreadably."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import httpx

from staging_validation_tests.simulator.log_reading import json_records

NORMAL = "How do I reset my password on the console?"
AMBIGUOUS = "so what not"
NOT_EXPOSED_MSGS = ("ContinuityPack", "Ambiguity check", "Relationship resolved", "Governor pass")


def sparse_client(sim) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, timeout=10)


def test_sparse_routes_expose_less_than_the_docs(simulator_factory):
    sim = simulator_factory(dialect="sparse")
    device = str(uuid.uuid4())
    user = {"X-User": "owner-7", "X-Device-Id": device}
    with sparse_client(sim) as client:
        assert client.get("/healthz").json() == {"status": "ok", "version": "1.1.0"}  # no feature flags
        assert client.get("/health").status_code == 404

        answer = client.post("/api/chat", json={"message": NORMAL}, headers=user).json()
        assert set(answer) == {"id", "reply", "needs_clarification"}  # no relationship context
        assert answer["needs_clarification"] is False and answer["reply"]
        clarification = client.post("/api/chat", json={"message": AMBIGUOUS}, headers=user).json()
        assert clarification["needs_clarification"] is True
        stream = client.post("/api/chat/stream", json={"message": NORMAL}, headers=user)
        events = [json.loads(line[6:]) for line in stream.text.splitlines() if line.startswith("data: ")]
        assert len(events) >= 2 and set(events[-1]) == {"done", "id", "reply", "needs_clarification"}

        assert client.post("/api/chat", json={"message": NORMAL}, headers={"X-User": "u-1"}).status_code == 400
        bad_device = client.post("/api/chat", json={"message": NORMAL},
                                 headers={"X-User": "u-1", "X-Device-Id": "not-a-uuid"})
        assert bad_device.status_code == 400 and "UUID" in bad_device.json()["error"]
        other_device = client.post("/api/chat", json={"message": NORMAL},
                                   headers={"X-User": "owner-7", "X-Device-Id": str(uuid.uuid4())})
        assert other_device.status_code == 409  # a user stays bound to its first device

        def resolve(provider: str, external_id: str) -> httpx.Response:
            return client.get("/api/identity/resolve", params={"provider": provider, "external_id": external_id},
                              headers={"X-Device-Id": device})

        first = resolve("discord", "d-1")
        assert first.status_code == 200  # created on first resolve, no create call
        account = first.json()["user"]["id"]
        assert resolve("discord", "d-1").json()["user"]["id"] == account
        assert resolve("sovereign", "s-1").json()["user"]["id"] != account
        assert client.get("/api/identity/resolve", params={"provider": "discord"},
                          headers={"X-Device-Id": device}).status_code == 400
        linked = client.post(f"/api/identity/{account}/links", json={"provider": "astralis", "external_id": "a-1"})
        assert linked.status_code == 200
        assert client.get(f"/api/identity/{account}/links").json() == {"identities": [
            {"provider": "discord", "provider_user_id": "d-1"},
            {"provider": "astralis", "provider_user_id": "a-1"},
        ]}
        assert client.get("/api/identity/nobody/links").status_code == 404

    stdout = json_records(sim.log_lines())
    assert not [r for r in stdout if any(part in r["msg"] for part in NOT_EXPOSED_MSGS)]
    identity = [r for r in stdout if r["msg"].startswith("identity: ")]
    # The operation is only in the message: a profile's telemetry rule has to set it as a constant.
    assert [(r["msg"], r["ok"]) for r in identity] == [
        ("identity: user created", True), ("identity: user resolved", True), ("identity: user created", True),
        ("identity: provider linked", True), ("identity: providers listed", True),
        ("identity: providers listed", False),
    ]
    assert all("op" not in r for r in identity)
    governor = [json.loads(line) for line in sim.events_log_path.read_text().splitlines()]
    assert governor and {r["level"] for r in governor} == {"info"}  # string levels
    assert all(r["event"] == "governor.attempt" and r["ts"].endswith("Z") for r in governor)
    answered = {r["reqId"] for r in stdout if r["msg"] == "request completed" and r["res"]["statusCode"] == 200
                and r["req"]["url"].startswith("/api/chat")}
    # The two clear requests were governed; the clarification short-circuits before the governor.
    assert len(answered) == 3 and len({r["request_id"] for r in governor} & answered) == 2



def test_sparse_ground_truth_covers_both_files(simulator_factory):
    sim = simulator_factory(dialect="sparse", organic_rps=40.0)
    sim.wait_for(lambda stats: stats["requests"]["organic"] >= 60, what="60 organic requests")
    stats = sim.final_stats()
    stdout_lines = sim.log_lines()
    events_lines = sim.events_log_path.read_text().splitlines()

    stdout = json_records(stdout_lines)
    governor = json_records(events_lines)
    assert len(governor) == len(events_lines)  # the governor file is all JSON
    assert stats["files"]["stdout"] == {"path": str(sim.log_path), "lines_total": len(stdout_lines),
                                        "unparsed_lines": len(stdout_lines) - len(stdout)}
    assert stats["files"]["events"]["lines_total"] == len(events_lines)
    # About 90 % of the stdout log is multi-line console output that no JSON reader can use.
    unreadable = stats["files"]["stdout"]["unparsed_lines"] / stats["files"]["stdout"]["lines_total"]
    assert 0.85 <= unreadable <= 0.95
    # Both files together are the ground truth, classified as the documented events would be.
    counted = Counter()
    for record in stdout:
        if record["msg"] == "request completed":
            counted["request_completed"] += 1
        elif record["msg"].startswith("identity: "):
            counted["identity_op"] += 1
        elif record["level"] >= 50:
            counted["error"] += 1
        else:
            counted["other"] += 1
    counted["governor_pass"] = len(governor)
    assert stats["events"] == dict(counted)
    assert stats["lines_total"] == len(stdout_lines) + len(events_lines)
    assert stats["unparsed_lines"] == len(stdout_lines) - len(stdout)
    assert stats["requests"]["total"] == counted["request_completed"]
    assert stats["organic_ambiguity_checks"] == 0  # not logged: nothing to count
    created = [r for r in stdout if r["msg"] == "identity: user created"]
    assert created, "organic users resolve identities, the first resolve creates"
