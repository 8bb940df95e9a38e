"""Each fault profile produces the effect it names, seen in the log it writes and in /_sim/stats.

Campaign hours are compressed (0.5–1 s) and organic traffic is on, so faults scheduled at hour 2 fire
within seconds; every wait is a condition polled with a deadline.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx

from staging_validation_tests.simulator.log_reading import (
    assert_all_pino,
    by_msg,
    governor_lines,
    json_records,
    percentile,
)

NORMAL = "Summarise what we discussed about the garden project last week."


def chat(base_url: str, user: str, request_id: str, message: str = NORMAL) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat",
        json={"message": message, "userId": user},
        headers={"x-request-id": request_id},
        timeout=15,
    )


def first_attempt_share(records: list[dict]) -> float:
    """Share of drafts passed on attempt 1, over attempt-1 lines: every request writes one, slow or not."""
    first = [r for r in governor_lines(records) if r["attempt"] == 1]
    return sum(r["status"] == "passed" for r in first) / len(first)


def regen_path_ms(records: list[dict]) -> list[float]:
    per_request: dict[str, float] = defaultdict(float)
    for record in governor_lines(records):
        if record["attempt"] >= 2:
            per_request[record["reqId"]] += record["regen_in_ms"]
    return list(per_request.values())


def contexts_by_user(records: list[dict]) -> dict[str, set[tuple]]:
    contexts: dict[str, set[tuple]] = defaultdict(set)
    for r in by_msg(records, "[Staging] Relationship resolved"):
        contexts[r["hashedUserId"]].add((r["relationship_type"], r["voice_profile"], r["trust_level"]))
    return contexts


def fault_names(stats: dict) -> list[str]:
    return [fault["fault"] for fault in stats["faults"]]


def wait_until_refusing(sim, refusing: bool, timeout_s: float = 10.0) -> None:
    """Poll the health route until connections are refused (or accepted again), with a deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{sim.base_url}/health", timeout=2)
            answered = True
        except httpx.ConnectError:
            answered = False
        if answered != refusing:
            return
        time.sleep(0.02)  # polling interval of a deadline wait
    raise AssertionError(f"simulator never {'refused' if refusing else 'accepted'} connections")


# Nothing is in flight during an outage, so a shutdown has nothing to wait for.
OUTAGE_SHUTDOWN_DEADLINE_S = 3.0


def terminate_within(sim, timeout_s: float) -> int:
    started = time.monotonic()
    sim.process.terminate()
    try:
        return sim.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"simulator still running {time.monotonic() - started:.1f} s after SIGTERM") from None


def test_healthy_baseline(simulator_factory):
    sim = simulator_factory(organic_rps=800, hour_seconds=0.5)
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda i: chat(sim.base_url, "probe-user-42", f"sv-h-{i}").json(), range(5)))
    assert len({json.dumps(a["relationship_context"], sort_keys=True) for a in answers}) == 1
    sim.wait_for(lambda s: s["organic_ambiguity_checks"] >= 600, what="600 organic requests")
    stats, lines = sim.snapshot()
    records = assert_all_pino(lines)

    assert 0.005 <= stats["organic_ambiguous"] / stats["organic_ambiguity_checks"] <= 0.04
    assert 0.87 <= first_attempt_share(records) <= 0.97
    assert percentile(regen_path_ms(records), 0.99) <= 3000
    assert "pack_missing" not in stats["events"] and "pack_fallback" not in stats["events"]
    assert stats["faults"] == [] and stats["error_lines"] == 0 and stats["unparsed_lines"] == 0
    assert all(len(contexts) == 1 for contexts in contexts_by_user(records).values())
    sources = [r["source"] for r in by_msg(records, "[Staging] Relationship resolved")]
    assert sources.count("database") / len(sources) > 0.8


def test_missing_pack_fires_once_at_hour_two(simulator_factory):
    sim = simulator_factory(profile="missing-pack", organic_rps=200, hour_seconds=0.25)
    sim.wait_for(lambda s: fault_names(s).count("missing-pack") >= 3, what="missing-pack window closed")
    stats = sim.final_stats()
    records = assert_all_pino(sim.log_lines())

    missing = by_msg(records, "[Staging] ContinuityPack missing: no continuity pack for request")
    assert len(missing) == stats["events"]["pack_missing"] == 1
    assert missing[0]["level"] == 50 and missing[0]["hashedUserId"]
    assert {hour for hour, counts in stats["events_by_hour"].items() if "pack_missing" in counts} == {"2"}
    request_lines = [r["msg"] for r in records if r.get("reqId") == missing[0]["reqId"]]
    assert request_lines[1] == "[Staging] Ambiguity check completed"  # the request ran on without a pack
    assert any("pack missing" in fault["detail"] and fault["hour"] == 2 for fault in stats["faults"])


def test_pack_fallback_within_its_window(simulator_factory):
    # Hours long enough that a busy machine still serves a few hundred requests inside the window.
    sim = simulator_factory(profile="pack-fallback", organic_rps=200, hour_seconds=2.0)
    sim.wait_for(lambda s: s["events"].get("pack_fallback", 0) >= 3, what="3 fallbacks")
    stats = sim.final_stats()
    fallbacks = by_msg(
        assert_all_pino(sim.log_lines()), "[Staging] ContinuityPack fallback: using default pack"
    )
    assert len(fallbacks) == stats["events"]["pack_fallback"]
    assert all(r["level"] == 40 and r["reason"] == "pack_store_timeout" for r in fallbacks)
    assert {hour for hour, counts in stats["events_by_hour"].items() if "pack_fallback" in counts} <= {
        "2",
        "3",
    }


def organic_ambiguity_rate(sim, samples: int) -> float:
    sim.wait_for(lambda s: s["organic_ambiguity_checks"] >= samples, what=f"{samples} organic requests")
    stats, lines = sim.snapshot()
    checks = by_msg(json_records(lines), "[Staging] Ambiguity check completed")
    organic = [r for r in checks if not r["reqId"].startswith("sv-")]
    assert stats["organic_ambiguous"] == sum(r["status"] == "AMBIGUOUS" for r in organic)
    return stats["organic_ambiguous"] / stats["organic_ambiguity_checks"]


def test_ambiguity_review_rate(simulator_factory):
    assert (
        0.05
        <= organic_ambiguity_rate(simulator_factory(profile="ambiguity-review", organic_rps=800), 800)
        <= 0.10
    )


def test_ambiguity_high_rate(simulator_factory):
    assert (
        0.10
        < organic_ambiguity_rate(simulator_factory(profile="ambiguity-high", organic_rps=800), 800)
        <= 0.16
    )


def test_governor_regen_heavy(simulator_factory):
    sim = simulator_factory(profile="governor-regen-heavy", organic_rps=800)
    sim.wait_for(lambda s: s["events"].get("governor_pass", 0) >= 700, what="governor lines")
    _, lines = sim.snapshot()
    assert 0.55 <= first_attempt_share(json_records(lines)) <= 0.75


def test_governor_slow_regen_path_p99_over_3s(simulator_factory):
    sim = simulator_factory(profile="governor-slow", organic_rps=300)

    def slow_regen_paths(stats: dict) -> int:
        return sum(ms > 3000 for ms in regen_path_ms(json_records(sim.log_lines())))

    # Slow requests finish last, so wait for a few of them rather than for a number of requests.
    sim.wait_for(lambda s: slow_regen_paths(s) >= 3, timeout_s=20, what="3 regen paths over 3 s")
    _, lines = sim.snapshot()
    paths = regen_path_ms(json_records(lines))
    assert percentile(paths, 0.99) > 3000 and percentile(paths, 0.5) > 1000


def test_relationship_flap(simulator_factory):
    sim = simulator_factory(profile="relationship-flap", organic_rps=150, hour_seconds=0.25)
    sim.wait_for(lambda s: "relationship-flap" in fault_names(s), what="flap window open")
    users = [f"probe-user-{n}" for n in range(10)]
    with ThreadPoolExecutor(10) as pool:
        answers = list(
            pool.map(
                lambda job: (job[0], chat(sim.base_url, job[0], f"sv-f-{job[1]}").json()),
                [(u, i) for u in users for i in range(4)],
            )
        )
    seen: dict[str, set[str]] = defaultdict(set)
    for user, answer in answers:
        seen[user].add(json.dumps(answer["relationship_context"], sort_keys=True))
    assert any(len(contexts) > 1 for contexts in seen.values())

    stats, lines = sim.snapshot()
    records = assert_all_pino(lines)
    opened_ms = next(f["time_ms"] for f in stats["faults"] if f["fault"] == "relationship-flap")
    before = contexts_by_user([r for r in records if r["time"] < opened_ms])
    assert all(len(contexts) == 1 for contexts in before.values())
    resolved = by_msg(records, "[Staging] Relationship resolved")
    changed_users = {user for user, contexts in contexts_by_user(resolved).items() if len(contexts) > 1}
    assert changed_users
    assert all(
        r["source"] != "locked_fact"
        for r in resolved
        if r["hashedUserId"] in changed_users and r["relationship_type"] == "owner"
    )


def test_identity_merge_from_hour_two(simulator_factory):
    # No background users: one of theirs created between the two below would take the merge instead.
    sim = simulator_factory(profile="identity-merge", organic_rps=0, hour_seconds=0.25)

    def create(provider: str, external: str) -> str:
        response = httpx.post(
            f"{sim.base_url}/v1/identity/create",
            json={"provider": provider, "provider_user_id": external},
            timeout=10,
        )
        return response.json()["vi_user_id"]

    # The clock is set by hand so the first pair is created before hour 2 however slowly the machine runs.
    sim.set_campaign_start(int((time.time() + 3600) * 1000))  # hour 0 is an hour away
    assert create("discord", "before-d") != create("sovereign", "before-s")
    sim.set_campaign_start(int((time.time() - 2 * 0.25) * 1000))  # hour 2 has begun
    sim.wait_for(lambda s: "identity-merge" in fault_names(s), what="merge window open")
    assert create("discord", "after-d") == create("sovereign", "after-s")

    stats = sim.final_stats()
    identity = [
        r for r in by_msg(assert_all_pino(sim.log_lines()), "[Staging] Identity operation") if r["ok"]
    ]
    providers_by_id: dict[str, set[str]] = defaultdict(set)
    for r in identity:
        if r["op"] in ("create", "resolve"):
            providers_by_id[r["vi_user_id"]].add(r["provider"])
    assert any(len(providers) > 1 for providers in providers_by_id.values())
    assert any(f["detail"].startswith("identity merge") and f["hour"] >= 2 for f in stats["faults"])


def test_error_burst(simulator_factory):
    sim = simulator_factory(profile="error-burst", organic_rps=300, hour_seconds=0.5)
    sim.wait_for(lambda s: fault_names(s).count("error-burst") >= 2, what="burst over")
    stats = sim.final_stats()
    records = assert_all_pino(sim.log_lines())
    errors = by_msg(records, "Unhandled error in chat handler")
    assert len(errors) >= 3 and stats["error_lines"] == len(errors)
    assert all(r["level"] == 50 and "stack" in r["err"] for r in errors)
    assert stats["requests"]["by_status"]["500"] == len(errors)
    burst_start = stats["campaign_start_ms"] + 2 * 500
    # Decided when a request starts inside the window, written after its pack build and ambiguity check.
    assert all(burst_start <= r["time"] < burst_start + 125 + 400 for r in errors)
    assert [hour for hour, counts in stats["events_by_hour"].items() if "error" in counts] == ["2"]


def test_slow_requests_over_two_seconds(simulator_factory):
    sim = simulator_factory(profile="slow", organic_rps=200, hour_seconds=0.25)

    def slow_completions(stats: dict) -> int:
        lines = by_msg(json_records(sim.log_lines()), "request completed")
        return sum(r["duration_ms"] >= 2000 for r in lines)

    sim.wait_for(lambda s: slow_completions(s) >= 8, timeout_s=20, what="8 requests over 2 s")
    assert "slow" in fault_names(sim.stats())


def test_rate_limit_answers_429_above_the_rate(simulator_factory):
    sim = simulator_factory(profile="rate-limit", organic_rps=50)
    with ThreadPoolExecutor(16) as pool:
        responses = list(
            pool.map(
                lambda i: httpx.get(
                    f"{sim.base_url}/health", headers={"x-request-id": f"sv-r-{i}"}, timeout=10
                ),
                range(16),
            )
        )
    limited = [r for r in responses if r.status_code == 429]
    assert len(limited) >= 10 and all(r.headers["retry-after"] == "1" for r in limited)
    stats = sim.final_stats()
    assert stats["requests"]["by_status"]["429"] == len(limited)
    completed = by_msg(assert_all_pino(sim.log_lines()), "request completed")
    assert all(r["reqId"].startswith("sv-") for r in completed if r["res"]["statusCode"] == 429)
    assert any(not r["reqId"].startswith("sv-") for r in completed)  # organic traffic went on


def test_outage_refuses_connections_then_recovers(simulator_factory):
    sim = simulator_factory(profile="outage", organic_rps=50, hour_seconds=1.0)
    wait_until_refusing(sim, refusing=True)
    wait_until_refusing(sim, refusing=False)
    closed = sim.wait_for(lambda s: fault_names(s).count("outage") == 2, what="outage closed")
    closed_ms = closed["faults"][-1]["time_ms"]

    def pack_times() -> list[int]:
        return [r["time"] for r in by_msg(json_records(sim.log_lines()), "[Staging] ContinuityPack built")]

    sim.wait_for(lambda s: max(pack_times()) >= closed_ms, what="organic traffic resumed")
    stats = sim.final_stats()
    outage = [f for f in stats["faults"] if f["fault"] == "outage"]
    assert [f["detail"].split(":")[0] for f in outage] == ["window opens", "window closes"]
    assert outage[0]["hour"] == 2
    records = assert_all_pino(sim.log_lines())
    assert len({r["pid"] for r in records}) == 1  # the same process came back
    # A service that is down serves no one: no request starts (writes its pack line) inside the window,
    # allowing 250 ms for the scheduler tick and the pack build of requests already under way.
    assert not [t for t in pack_times() if outage[0]["time_ms"] + 250 <= t < outage[1]["time_ms"]]


def test_sigterm_during_an_outage_exits_promptly_with_final_stats(simulator_factory):
    sim = simulator_factory(profile="outage", organic_rps=20, hour_seconds=3600.0)
    # A quarter past hour 2: inside the half-hour outage window, which then stays open for minutes.
    sim.set_campaign_start(int((time.time() - 2.25 * 3600) * 1000))
    wait_until_refusing(sim, refusing=True)

    assert terminate_within(sim, OUTAGE_SHUTDOWN_DEADLINE_S) == 0
    stats = json.loads(sim.final_stats_path.read_text())
    assert [(f["fault"], f["detail"].split(":")[0], f["hour"]) for f in stats["faults"]] == [
        ("outage", "window opens", 2)
    ]


def test_sigterm_while_rebinding_after_an_outage_stops_retrying(simulator_factory):
    """Another process holds the port when the outage ends: the retries give way to a shutdown at once."""
    sim = simulator_factory(profile="outage", hour_seconds=2.0)
    start_ms = sim.stats()["campaign_start_ms"]
    wait_until_refusing(sim, refusing=True)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", sim.port))
        squatter.listen()
        # The window (hours 2 to 2.5) has closed: the simulator is now retrying to bind the taken port.
        sim_closed_s = start_ms / 1000 + 2.5 * 2.0 + 0.5
        while time.time() < sim_closed_s:
            time.sleep(0.02)  # polling interval of a wait on the campaign clock
        returncode = terminate_within(sim, OUTAGE_SHUTDOWN_DEADLINE_S)

    assert returncode == 0
    assert "cannot listen again" not in sim.stderr_path.read_text()
    stats = json.loads(sim.final_stats_path.read_text())
    assert [f["detail"].split(":")[0] for f in stats["faults"]] == ["window opens", "window closes"]


def test_noisy_logs_interleave_unparsed_lines(simulator_factory):
    sim = simulator_factory(profile="noisy-logs", organic_rps=150)
    sim.wait_for(lambda s: s["unparsed_lines"] >= 30, what="30 unparsed lines")
    stats = sim.final_stats()
    lines = sim.log_lines()
    assert len(lines) == stats["lines_total"]
    unparsed = [line for line in lines if not line.startswith("{") or not _is_json_object(line)]
    assert len(unparsed) == stats["unparsed_lines"] == sum(stats["unparsed_by_hour"].values())
    assert any(line.startswith("    at ") for line in unparsed)  # multi-line stack traces
    assert any(line.startswith("{") for line in unparsed)  # truncated JSON
    assert len(json_records(lines)) == stats["lines_total"] - stats["unparsed_lines"]


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_log_rotation_loses_no_line(simulator_factory):
    sim = simulator_factory(profile="log-rotation", organic_rps=100, hour_seconds=1.0)
    sim.wait_for(lambda s: len(s["rotations"]) >= 2, what="two rotations")
    stats = sim.final_stats()
    rotations = stats["rotations"]
    assert {r["mode"] for r in rotations[:2]} == {"rename", "copytruncate"}
    current = assert_all_pino(sim.log_lines())
    rotated = assert_all_pino(sim.log_path.with_name(sim.log_path.name + ".1").read_text().splitlines())
    before_last = rotations[-2]["lines_total"] if len(rotations) > 1 else 0
    assert len(rotated) == rotations[-1]["lines_total"] - before_last
    assert len(current) == stats["lines_total"] - rotations[-1]["lines_total"]
    assert rotated[-1]["time"] <= current[0]["time"]


def test_profile_file_option_loads_an_edited_copy(simulator_factory, tmp_path):
    edited = tmp_path / "my-profiles.yaml"
    edited.write_text(
        "profiles:\n  all-fallback:\n    description: every pack falls back\n"
        "    knobs: {fallback_rate: 1.0}\n"
    )
    sim = simulator_factory(profile="all-fallback", extra_args=["--profile-file", str(edited)])
    chat(sim.base_url, "u-1", "sv-edited")
    assert sim.stats()["events"]["pack_fallback"] == 1
