"""Generate a realistic day of staging telemetry in the documented pino format, with its ground truth.

    python benchmarks/generate_day.py --megabytes 550 --seed 7 --out benchmarks/out/day.log

writes `day.log` and `day.log.truth.json`. The format is docs/ARCHITECTURE.md's telemetry table: compact
pino JSON (`level, time, pid, hostname, reqId`, the event's fields, then `msg`, as pino orders them),
per-request line order (message received, pack built / missing / fallback, ambiguity check, then — unless
AMBIGUOUS — relationship resolved and one governor line per attempt until `passed`, then
`request completed`), concurrent requests interleaved by time. Noise the parser must survive and the
runbook's greps trip over: plain-text console lines, multi-line stack traces, truncated JSON, request ids,
times and durations containing "500", prompt previews containing "fallback", "default pack", "missing ...
pack", "error", "timeout".

The truth is counted from the lines actually written (a truncated line is unparsed, and its event is
lost), with the keys of the simulator's `/_sim/stats` plus the runbook's metrics in its order. Percentiles
use linear interpolation between closest ranks — position (n-1)·q over the sorted values — which is
DuckDB's `quantile_cont` and numpy's default `percentile` method.

Hours are generated independently (seeded from `--seed` and the hour) in worker processes, so the output
does not depend on the number of workers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import random
import sys
import time
from array import array
from collections import Counter
from pathlib import Path

HOUR_MS = 3_600_000
DEFAULT_DAY_START_MS = 1_795_392_000_000  # 2026-11-23T00:00:00Z
HOSTNAME = "vi-brain-stg-2"
WORKER_PIDS = (4211, 4217, 4223, 4229)
USER_COUNT = 20_000
PROBE_PREFIX = "sv-"
PROBE_SHARE = 0.02
IDENTITY_SHARE = 0.04
HEALTH_CHECK_EVERY_MS = 30_000
POOL_STATS_EVERY_MS = 60_000
MAX_GOVERNOR_ATTEMPTS = 5

# Share of a day's requests in each hour (UTC): quiet night, busy afternoon.
HOUR_WEIGHTS = tuple(1.0 + 0.45 * math.sin(2 * math.pi * (hour - 9) / 24) for hour in range(24))

PROMPTS = (
    "what is the fallback plan if my flight gets cancelled?",
    "my order req-15003 never arrived and the page said error 500",
    "is there a default packing list for a weekend hike?",
    "I am missing a backpack strap, where can I buy one?",
    "no, continuity editing in film — explain the 180 degree rule",
    "why does my router keep giving a timeout after 500 seconds",
    "explain exception handling in python with an example",
    "summarise yesterday's conversation about the garden",
    "remind me what I said about my sister's birthday",
    "write a haiku about autumn rain",
    "how many grams of flour in 2 cups",
    "translate \\\"good morning\\\" into Portuguese",
    "what's the capital of Australia",
    "help me plan a 3 day trip to Kyoto",
    "draft a polite email declining the meeting",
    "compare it with the other one",
    "so what not",
    "what about that thing from before",
    "is the blue or the red better",
    "make it shorter but also longer",
    "recommend a book like the last one I loved",
    "calculate 15% tip on 85.50",
    "café au lait or flat white? ☕",
    "what did we decide about the budget",
    "how do I reset my password",
    "tell me a joke about databases",
    "what's a good name for a grey cat",
    "explain the difference between TCP and UDP",
    "give me a recipe with chickpeas and spinach",
    "who won the 1500 m final in 2024",
)
AMBIGUITY_REASONS = (
    ("MALFORMED_QUERY", 0.35),
    ("DANGLING_REFERENCE", 0.30),
    ("UNDERSPECIFIED_COMPARISON", 0.20),
    ("CONTRADICTORY_REQUEST", 0.15),
)
RELATIONSHIP_SOURCES = (("database", 0.60), ("default", 0.20), ("locked_fact", 0.15), ("guarded_clamp", 0.05))
VIOLATION_TYPES = (("repetition", 0.40), ("ungrounded", 0.30), ("posture", 0.20), ("locked_fact", 0.10))
IDENTITY_OPS = (("resolve", 0.50), ("create", 0.20), ("lookup", 0.20), ("link", 0.10))
IDENTITY_ROUTES = {
    "create": ("POST", "/v1/identity/create"),
    "resolve": ("POST", "/v1/identity/resolve"),
    "link": ("POST", "/v1/identity/link"),
}
IDENTITY_FAILURE_STATUS = {"create": 500, "resolve": 404, "link": 409, "lookup": 404}
TIMEOUT_STATUSES = ("408", "504")  # what a "timeout" is: the request ended in one of these statuses
PROVIDERS = ("discord", "sovereign", "astralis", "console")
FALLBACK_REASONS = ("pack_store_timeout", "pack_store_unavailable", "budget_exceeded")
STACK_FRAMES = (
    "    at buildPack (/app/dist/continuity/pack.js:88:17)",
    "    at async ContinuityService.forRequest (/app/dist/continuity/service.js:41:9)",
    "    at async chatHandler (/app/dist/routes/chat.js:112:20)",
    "    at async /app/node_modules/fastify/lib/handleRequest.js:95:7",
    "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
)
CONSOLE_LINES = (
    "> vi-brain@1.1.0 start",
    "> node dist/server.js",
    "(node:4211) Warning: Setting the NODE_TLS_REJECT_UNAUTHORIZED environment variable to '0' is insecure",
    "[pool] connection to db-staging-2 re-established after 500ms",
    "Warning: no cached continuity snapshot for shard 7, rebuilding default pack index",
    "GC pause 41ms (scavenge)",
)
# Failure outcomes of a chat request: probability, HTTP status, error message or None (no error line).
CHAT_FAILURES = (
    (0.004, 400, None),
    (0.003, 429, None),
    (0.0012, 500, ("TypeError", "Cannot read properties of undefined (reading 'facts')")),
    (0.0004, 503, ("UpstreamUnavailableError", "model backend returned 503")),
    (0.0004, 504, ("TimeoutError", "upstream model timeout after 30000 ms")),
)
PREVIEW_SAMPLE_SHARE = 0.25  # the service logs a prompt preview for a sample of chat requests
PACK_MISSING_SHARE = 0.0002
PACK_FALLBACK_SHARE = 0.0005
CONSOLE_STACK_SHARE = 0.5  # errors whose stack is also printed to stderr as plain text
CONSOLE_LINE_EVERY_REQUESTS = 3000
TRUNCATED_LINE_SHARE = 0.00003

EVENT_KINDS = (
    "pack_built",
    "pack_missing",
    "pack_fallback",
    "ambiguity_check",
    "relationship_resolved",
    "governor_pass",
    "request_completed",
    "identity_op",
    "error",
    "other",
)


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    roll = rng.random()
    for value, share in weighted:
        roll -= share
        if roll < 0:
            return value
    return weighted[-1][0]


def _tenths(value: int) -> str:
    """A duration held as integer tenths of a ms, written as pino would print the float."""
    return f"{value // 10}.{value % 10}"


def _user_table() -> list[tuple[str, str, str, str, str]]:
    """Per user: hashed id, relationship type, voice, trust, usual source — fixed, so the day is deterministic."""
    users = []
    for index in range(USER_COUNT):
        hashed = hashlib.sha256(f"user-{index}".encode()).hexdigest()[:16]
        owner = index % 11 == 0
        users.append(
            (
                hashed,
                "owner" if owner else "public",
                "warm_personal" if owner else "neutral_helpful",
                "high" if owner else ("medium" if index % 3 else "low"),
                _pick(random.Random(index), RELATIONSHIP_SOURCES),
            )
        )
    return users


class HourTruth:
    """Counts of one hour's written lines, merged by the parent into the day's truth."""

    def __init__(self) -> None:
        self.events: Counter = Counter()
        self.events_by_hour: dict[int, Counter] = {}
        self.events_by_origin: dict[str, Counter] = {"probe": Counter(), "organic": Counter()}
        self.unparsed_by_hour: Counter = Counter()
        self.error_lines = 0
        self.lines = 0
        self.requests: Counter = Counter()  # total / organic / probe
        self.by_status: Counter = Counter()
        self.organic_ambiguous = 0
        self.organic_ambiguity_checks = 0
        self.ambiguity_status: Counter = Counter()
        self.ambiguity_reason: Counter = Counter()
        self.relationship_source: Counter = Counter()
        self.relationship_type: Counter = Counter()
        self.violation_type: Counter = Counter()
        self.passed_attempts: Counter = Counter()
        self.governor_requests = 0
        self.identity_ops: Counter = Counter()
        self.size_bytes_sum = 0
        self.built_in_tenths_sum = 0
        self.checked_in_tenths_sum = 0
        self.durations_tenths = array("q")
        self.regen_path_tenths = array("q")


class HourWriter:
    """Builds one hour: records (time, seq, text, truth-kind...) sorted by time, then counted and joined."""

    def __init__(self, seed: int, hour: int, day_start_ms: int, first_request_number: int, users) -> None:
        self.rng = random.Random(seed * 1_000_003 + hour)
        self.hour = hour
        self.hour_start_ms = day_start_ms + hour * HOUR_MS
        self.day_start_ms = day_start_ms
        self.request_number = first_request_number
        self.users = users
        self.records: list[tuple] = []
        self.seq = 0
        self.truth = HourTruth()

    # -- emitting ---------------------------------------------------------------------------------------
    def _emit(self, time_ms: int, text: str, kind: str | None, level: int, origin: str, facts=None) -> bool:
        """Queue one JSON line; returns False if it was written truncated (its event is then lost)."""
        self.seq += 1
        if self.rng.random() < TRUNCATED_LINE_SHARE:
            cut = self.rng.randrange(12, len(text) - 2)
            self.records.append((time_ms, self.seq, text[:cut], None, 0, origin, 1))
            return False
        self.records.append((time_ms, self.seq, text, kind, level, origin, 0))
        if facts is not None:
            facts()
        return True

    def _emit_plain(self, time_ms: int, text: str) -> None:
        self.seq += 1
        self.records.append((time_ms, self.seq, text, None, 0, "", text.count("\n") + 1))

    def _head(self, level: int, time_ms: int, request_id: str) -> str:
        pid = WORKER_PIDS[self.rng.randrange(4)]
        return f'{{"level":{level},"time":{time_ms},"pid":{pid},"hostname":"{HOSTNAME}","reqId":"{request_id}",'

    def _incoming(self, time_ms, request_id, origin, method, url) -> None:
        text = (
            self._head(30, time_ms, request_id)
            + f'"req":{{"method":"{method}","url":"{url}"}},"msg":"incoming request"}}'
        )
        self._emit(time_ms, text, "other", 30, origin)

    def _completed(self, time_ms, request_id, origin, method, url, status, duration_tenths) -> None:
        text = (
            self._head(30, time_ms, request_id)
            + f'"req":{{"method":"{method}","url":"{url}"}},"res":{{"statusCode":{status}}},'
            f'"duration_ms":{_tenths(duration_tenths)},"msg":"request completed"}}'
        )
        truth = self.truth

        def count() -> None:
            truth.by_status[status] += 1
            truth.durations_tenths.append(duration_tenths)

        self._emit(time_ms, text, "request_completed", 30, origin, count)

    def _error(self, time_ms, request_id, origin, err_type, message) -> None:
        stack = "\\n".join((f"{err_type}: {message}",) + STACK_FRAMES)
        text = (
            self._head(50, time_ms, request_id)
            + f'"err":{{"type":"{err_type}","message":"{message}","stack":"{stack}"}},'
            '"msg":"Unhandled error in chat handler"}'
        )
        self._emit(time_ms, text, "error", 50, origin)
        if self.rng.random() < CONSOLE_STACK_SHARE:
            self._emit_plain(time_ms, "\n".join((f"{err_type}: {message}",) + STACK_FRAMES))

    def _next_request_id(self, origin: str) -> str:
        self.request_number += 1
        if origin == "probe":
            return f"{PROBE_PREFIX}day-{self.request_number:07d}"
        return f"req-{self.request_number}"

    # -- requests ---------------------------------------------------------------------------------------
    def chat_request(self, start_ms: int) -> None:
        rng = self.rng
        truth = self.truth
        origin = "probe" if rng.random() < PROBE_SHARE else "organic"
        request_id = self._next_request_id(origin)
        truth.requests["total"] += 1
        truth.requests[origin] += 1
        user = self.users[rng.randrange(USER_COUNT)]
        user_hash = user[0]
        prompt = PROMPTS[rng.randrange(len(PROMPTS))]
        now = start_ms
        self._incoming(now, request_id, origin, "POST", "/v1/chat")
        if rng.random() < PREVIEW_SAMPLE_SHARE:
            self._emit(
                now,
                self._head(30, now, request_id)
                + f'"userId":"{user_hash}","preview":"{prompt}","input_length":{len(prompt)},'
                '"msg":"chat message received"}',
                "other",
                30,
                origin,
            )
        failure = None
        roll = rng.random()
        for share, status, error in CHAT_FAILURES:
            roll -= share
            if roll < 0:
                failure = (status, error)
                break
        if failure is not None and failure[1] is None:  # rejected before any staging work
            status = failure[0]
            if status == 429:
                self._emit(
                    now + 1,
                    self._head(40, now + 1, request_id) + f'"userId":"{user_hash}","msg":"rate limit exceeded"}}',
                    "other",
                    40,
                    origin,
                )
            self._completed(now + 2, request_id, origin, "POST", "/v1/chat", status, rng.randrange(5, 60))
            return

        pack_roll = rng.random()
        if pack_roll < PACK_MISSING_SHARE:
            now += rng.randrange(1, 20)
            self._emit(
                now,
                self._head(50, now, request_id)
                + f'"hashedUserId":"{user_hash}",'
                + '"msg":"[Staging] ContinuityPack missing: no continuity pack for request"}',
                "pack_missing",
                50,
                origin,
            )
        elif pack_roll < PACK_MISSING_SHARE + PACK_FALLBACK_SHARE:
            now += rng.randrange(50, 400)
            reason = FALLBACK_REASONS[rng.randrange(len(FALLBACK_REASONS))]
            self._emit(
                now,
                self._head(40, now, request_id)
                + f'"hashedUserId":"{user_hash}","reason":"{reason}",'
                + '"msg":"[Staging] ContinuityPack fallback: using default pack"}',
                "pack_fallback",
                40,
                origin,
            )
        else:
            built_tenths = int(rng.lognormvariate(3.6, 0.5) * 10) + 5
            now += built_tenths // 10
            total_facts = rng.randrange(4, 120)
            locked = rng.randrange(0, 1 + total_facts // 8)
            explicit = rng.randrange(0, 1 + (total_facts - locked) // 2)
            inferred = rng.randrange(0, 1 + total_facts - locked - explicit)
            ephemeral = total_facts - locked - explicit - inferred
            size_bytes = 900 + total_facts * rng.randrange(180, 520)

            def count_pack() -> None:
                truth.size_bytes_sum += size_bytes
                truth.built_in_tenths_sum += built_tenths

            self._emit(
                now,
                self._head(30, now, request_id)
                + f'"hashedUserId":"{user_hash}","total_facts":{total_facts},"authority_breakdown":'
                f'{{"locked":{locked},"explicit":{explicit},"inferred":{inferred},"ephemeral":{ephemeral}}},'
                f'"historical_summaries":{rng.randrange(0, 12)},"engagement_history":{rng.randrange(0, 400)},'
                f'"size_bytes":{size_bytes},"built_in_ms":{_tenths(built_tenths)},'
                '"msg":"[Staging] ContinuityPack built"}',
                "pack_built",
                30,
                origin,
                count_pack,
            )

        ambiguous_share = 0.30 if origin == "probe" else 0.035
        if prompt in ("so what not", "compare it with the other one", "make it shorter but also longer"):
            ambiguous_share = 0.9
        ambiguous = rng.random() < ambiguous_share
        status_text, reason = ("AMBIGUOUS", _pick(rng, AMBIGUITY_REASONS)) if ambiguous else ("clear", "NONE")
        checked_tenths = int(rng.lognormvariate(2.3, 0.4) * 10) + 2
        now += checked_tenths // 10 + 1
        confidence = rng.randrange(55, 100)

        def count_check() -> None:
            truth.checked_in_tenths_sum += checked_tenths
            truth.ambiguity_status[status_text] += 1
            truth.ambiguity_reason[reason] += 1
            if origin == "organic":
                truth.organic_ambiguity_checks += 1
                truth.organic_ambiguous += status_text == "AMBIGUOUS"

        self._emit(
            now,
            self._head(30, now, request_id)
            + f'"status":"{status_text}","reason":"{reason}","input_length":{len(prompt)},'
            f'"confidence":0.{confidence:02d},"checked_in_ms":{_tenths(checked_tenths)},'
            '"msg":"[Staging] Ambiguity check completed"}',
            "ambiguity_check",
            30,
            origin,
            count_check,
        )
        if ambiguous:
            duration = (now - start_ms) * 10 + rng.randrange(200, 3000)
            self._completed(start_ms + duration // 10, request_id, origin, "POST", "/v1/chat", 200, duration)
            return

        _, relationship_type, voice, trust, usual_source = user
        source = usual_source if rng.random() < 0.9 else _pick(rng, RELATIONSHIP_SOURCES)
        now += rng.randrange(1, 15)

        def count_relationship() -> None:
            truth.relationship_source[source] += 1
            truth.relationship_type[relationship_type] += 1

        self._emit(
            now,
            self._head(30, now, request_id)
            + f'"hashedUserId":"{user_hash}","source":"{source}","relationship_type":"{relationship_type}",'
            f'"voice_profile":"{voice}","trust_level":"{trust}","resolved_in_ms":{_tenths(rng.randrange(5, 150))},'
            '"msg":"[Staging] Relationship resolved"}',
            "relationship_resolved",
            30,
            origin,
            count_relationship,
        )

        if failure is not None:
            status, error = failure
            assert error is not None  # a failure without an error was rejected (and returned) before staging work
            err_type, message = error
            wait = 30_000 if status == 504 else rng.randrange(5, 400)
            now += wait
            self._error(now, request_id, origin, err_type, message)
            duration = (now - start_ms) * 10 + rng.randrange(0, 10)
            self._completed(start_ms + duration // 10, request_id, origin, "POST", "/v1/chat", status, duration)
            return

        now += int(rng.lognormvariate(6.4, 0.45))  # the model drafts the answer
        passed_attempt = None
        regen_path_tenths = 0
        saw_governor_line = False
        for attempt in range(1, MAX_GOVERNOR_ATTEMPTS + 1):
            passes = rng.random() < (0.88 if attempt == 1 else 0.72)
            violation = "none" if passes else _pick(rng, VIOLATION_TYPES)
            regen_tenths = (
                int(rng.lognormvariate(3.0, 0.5) * 10)
                if attempt == 1
                else int(rng.lognormvariate(6.6, 0.5) * 10)
            )
            now += regen_tenths // 10 + 1
            written = self._emit(
                now,
                self._head(30, now, request_id)
                + f'"status":"{"passed" if passes else "violation_detected"}","violation_type":"{violation}",'
                f'"attempt":{attempt},"max_attempts":{MAX_GOVERNOR_ATTEMPTS},"regen_in_ms":{_tenths(regen_tenths)},'
                f'"msg":"[Staging] Governor pass {attempt}/{MAX_GOVERNOR_ATTEMPTS}"}}',
                "governor_pass",
                30,
                origin,
            )
            if written:
                saw_governor_line = True
                truth.violation_type[violation] += 1
                if attempt >= 2:
                    regen_path_tenths += regen_tenths
                if passes:
                    passed_attempt = attempt
            if passes:
                break
        if saw_governor_line:
            truth.governor_requests += 1
        if passed_attempt is not None:
            truth.passed_attempts[passed_attempt] += 1
        if regen_path_tenths:
            truth.regen_path_tenths.append(regen_path_tenths)
        duration = (now - start_ms) * 10 + rng.randrange(0, 200)
        self._completed(start_ms + duration // 10, request_id, origin, "POST", "/v1/chat", 200, duration)

    def identity_request(self, start_ms: int) -> None:
        rng = self.rng
        truth = self.truth
        request_id = self._next_request_id("organic")
        truth.requests["total"] += 1
        truth.requests["organic"] += 1
        op = _pick(rng, IDENTITY_OPS)
        ok = rng.random() >= 0.01
        provider = PROVIDERS[rng.randrange(len(PROVIDERS))]
        provider_user_id = f"{provider[:2]}-{rng.randrange(10**9):09d}"
        # Drawn in this order, so a seed still gives the same day.
        time_low, time_mid, time_high, clock, node = (rng.getrandbits(bits) for bits in (32, 16, 12, 12, 48))
        vi_user_id = f"{time_low:08x}-{time_mid:04x}-4{time_high:03x}-a{clock:03x}-{node:012x}"
        method, url = IDENTITY_ROUTES.get(op, ("GET", f"/v1/identity/providers/{vi_user_id}"))
        self._incoming(start_ms, request_id, "organic", method, url)
        now = start_ms + rng.randrange(2, 40)
        level = 30 if ok else 50
        self._emit(
            now,
            self._head(level, now, request_id)
            + f'"op":"{op}","provider":"{provider}","provider_user_id":"{provider_user_id}",'
            f'"vi_user_id":"{vi_user_id}","ok":{"true" if ok else "false"},"msg":"[Staging] Identity operation"}}',
            "identity_op",
            level,
            "organic",
            lambda: truth.identity_ops.update((op if ok else f"{op}_failed",)),
        )
        status = 200 if ok else IDENTITY_FAILURE_STATUS[op]
        duration = (now - start_ms) * 10 + rng.randrange(5, 80)
        self._completed(start_ms + duration // 10, request_id, "organic", method, url, status, duration)

    def health_check(self, start_ms: int) -> None:
        request_id = self._next_request_id("organic")
        self.truth.requests["total"] += 1
        self.truth.requests["organic"] += 1
        duration = self.rng.randrange(3, 40)
        self._incoming(start_ms, request_id, "organic", "GET", "/health")
        self._completed(start_ms + duration // 10, request_id, "organic", "GET", "/health", 200, duration)

    def periodic_other(self, time_ms: int, intact: bool = False) -> None:
        pid = WORKER_PIDS[self.rng.randrange(4)]
        text = (
            f'{{"level":30,"time":{time_ms},"pid":{pid},"hostname":"{HOSTNAME}","active":{self.rng.randrange(0, 20)},'
            f'"idle":{self.rng.randrange(0, 20)},"waiting":0,"msg":"db pool stats"}}'
        )
        if intact:
            self.seq += 1
            self.records.append((time_ms, self.seq, text, "other", 30, "organic", 0))
        else:
            self._emit(time_ms, text, "other", 30, "organic")

    # -- the hour ---------------------------------------------------------------------------------------
    def build(self, chat_requests: int) -> tuple[bytes, HourTruth]:
        rng = self.rng
        start = self.hour_start_ms
        # The hour opens with an intact pool stats line, so a chunk never starts with an unparsed line.
        self.periodic_other(start, intact=True)
        for offset in range(POOL_STATS_EVERY_MS, HOUR_MS, POOL_STATS_EVERY_MS):
            self.periodic_other(start + offset)
        arrivals = sorted(rng.randrange(HOUR_MS - 1000) for _ in range(chat_requests))
        health_times = range(HEALTH_CHECK_EVERY_MS // 2, HOUR_MS, HEALTH_CHECK_EVERY_MS)
        events = [(offset, 0) for offset in arrivals] + [(offset, 1) for offset in health_times]
        events.sort()
        for index, (offset, what) in enumerate(events):
            at = start + offset + 1
            if what == 1:
                self.health_check(at)
            elif rng.random() < IDENTITY_SHARE:
                self.identity_request(at)
            else:
                self.chat_request(at)
            if index % CONSOLE_LINE_EVERY_REQUESTS == CONSOLE_LINE_EVERY_REQUESTS - 1:
                self._emit_plain(at, CONSOLE_LINES[rng.randrange(len(CONSOLE_LINES))])
        self.records.sort(key=lambda record: (record[0], record[1]))
        return self._count_and_join()

    def _count_and_join(self) -> tuple[bytes, HourTruth]:
        truth = self.truth
        events, by_hour, by_origin = truth.events, truth.events_by_hour, truth.events_by_origin
        day_start = self.day_start_ms
        current_hour = self.hour
        texts = []
        for time_ms, _, text, kind, level, origin, unparsed in self.records:
            texts.append(text)
            if unparsed:
                truth.unparsed_by_hour[current_hour] += unparsed
                truth.lines += unparsed
                continue
            truth.lines += 1
            current_hour = (time_ms - day_start) // HOUR_MS
            events[kind] += 1
            hour_counter = by_hour.get(current_hour)
            if hour_counter is None:
                hour_counter = by_hour[current_hour] = Counter()
            hour_counter[kind] += 1
            by_origin[origin][kind] += 1
            if level >= 50:
                truth.error_lines += 1
        texts.append("")
        return "\n".join(texts).encode(), truth


_USERS = None


def _build_hour(task: tuple[int, int, int, int, int]) -> tuple[bytes, HourTruth]:
    global _USERS
    if _USERS is None:
        _USERS = _user_table()
    seed, hour, day_start_ms, first_request_number, chat_requests = task
    return HourWriter(seed, hour, day_start_ms, first_request_number, _USERS).build(chat_requests)


def percentile_linear(sorted_values, q: float) -> float | None:
    """Linear interpolation between closest ranks (DuckDB quantile_cont, numpy percentile default)."""
    n = len(sorted_values)
    if n == 0:
        return None
    position = (n - 1) * q
    low = math.floor(position)
    high = min(low + 1, n - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _percentiles(tenths: array) -> dict:
    values = sorted(value / 10 for value in tenths)
    return {name: percentile_linear(values, q) for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def _mean(total: float, count: int) -> float | None:
    return total / count if count else None


def runbook_metrics(truth: dict) -> list[list]:
    """The runbook final analysis's lines, in its order, with what each is meant to count."""
    events = truth["events"]
    ambiguity, relationship, governor = truth["ambiguity"], truth["relationship"], truth["governor"]
    averages = truth["averages"]

    def whole(value: float | None) -> int | None:  # the runbook prints awk's int(): truncation
        return None if value is None else int(value)

    violations = governor["by_violation_type"]
    return [
        ["Missing-pack events", events["pack_missing"]],
        ["Default-pack fallbacks", events["pack_fallback"]],
        ["Total builds", events["pack_built"]],
        ["Avg size", whole(averages["pack_size_bytes"])],
        ["Avg build time", whole(averages["pack_build_ms"])],
        ["Total checks", events["ambiguity_check"]],
        ["Detected ambiguous", ambiguity["by_status"].get("AMBIGUOUS", 0)],
        ["Clear requests", ambiguity["by_status"].get("clear", 0)],
        ["MALFORMED_QUERY", ambiguity["by_reason"].get("MALFORMED_QUERY", 0)],
        ["DANGLING_REFERENCE", ambiguity["by_reason"].get("DANGLING_REFERENCE", 0)],
        ["UNDERSPECIFIED_COMPARISON", ambiguity["by_reason"].get("UNDERSPECIFIED_COMPARISON", 0)],
        ["CONTRADICTORY_REQUEST", ambiguity["by_reason"].get("CONTRADICTORY_REQUEST", 0)],
        ["Avg check latency", whole(averages["check_latency_ms"])],
        ["Total resolutions", events["relationship_resolved"]],
        ["Owner mode", relationship["by_type"].get("owner", 0)],
        ["Public mode", relationship["by_type"].get("public", 0)],
        ["Locked fact", relationship["by_source"].get("locked_fact", 0)],
        ["Database", relationship["by_source"].get("database", 0)],
        ["Default", relationship["by_source"].get("default", 0)],
        ["Total passes", events["governor_pass"]],
        ["0 violations (passed)", violations.get("none", 0)],
        ["1+ violations", sum(n for kind, n in violations.items() if kind != "none")],
        ["Repetition", violations.get("repetition", 0)],
        ["Locked fact", violations.get("locked_fact", 0)],
        ["Ungrounded", violations.get("ungrounded", 0)],
        ["Posture", violations.get("posture", 0)],
        ["Link operations",
         truth["identity"]["by_op"].get("link", 0) + truth["identity"]["by_op"].get("link_failed", 0)],
        ["Total errors", truth["error_lines"]],
        ["HTTP 5xx", truth["requests"]["by_status_class"].get("5xx", 0)],
        ["Timeouts", sum(truth["requests"]["by_status"].get(status, 0) for status in TIMEOUT_STATUSES)],
    ]


def _merge(hours: list[HourTruth], chunks: list[dict], args_summary: dict) -> dict:
    def total(counters) -> dict:
        merged: Counter = Counter()
        for counter in counters:
            merged.update(counter)
        return dict(sorted(merged.items()))

    events = {kind: 0 for kind in EVENT_KINDS}
    events.update(total(h.events for h in hours))
    events_by_hour: dict[int, Counter] = {}
    unparsed_by_hour: Counter = Counter()
    for h in hours:
        for hour, counter in h.events_by_hour.items():
            events_by_hour.setdefault(hour, Counter()).update(counter)
        unparsed_by_hour.update(h.unparsed_by_hour)
    by_status = total(h.by_status for h in hours)
    by_class: Counter[str] = Counter()
    for status, n in by_status.items():
        by_class[f"{status // 100}xx"] += n
    durations = array("q")
    regen_paths = array("q")
    for h in hours:
        durations.extend(h.durations_tenths)
        regen_paths.extend(h.regen_path_tenths)
    passed = total(h.passed_attempts for h in hours)
    passed_requests = sum(passed.values())
    requests = total(h.requests for h in hours)
    truth = {
        "generator": args_summary,
        "lines_total": sum(h.lines for h in hours),
        "events": events,
        "events_by_hour": {str(hour): dict(sorted(c.items())) for hour, c in sorted(events_by_hour.items())},
        "events_by_origin": {
            origin: total(h.events_by_origin[origin] for h in hours) for origin in ("probe", "organic")
        },
        "error_lines": sum(h.error_lines for h in hours),
        "unparsed_lines": sum(unparsed_by_hour.values()),
        "unparsed_by_hour": {str(hour): n for hour, n in sorted(unparsed_by_hour.items())},
        "requests": {
            "total": requests.get("total", 0),
            "organic": requests.get("organic", 0),
            "probe": requests.get("probe", 0),
            "by_status": {str(status): n for status, n in by_status.items()},
            "by_status_class": dict(sorted(by_class.items())),
        },
        "organic_ambiguous": sum(h.organic_ambiguous for h in hours),
        "organic_ambiguity_checks": sum(h.organic_ambiguity_checks for h in hours),
        "ambiguity": {
            "by_status": total(h.ambiguity_status for h in hours),
            "by_reason": total(h.ambiguity_reason for h in hours),
        },
        "relationship": {
            "by_source": total(h.relationship_source for h in hours),
            "by_type": total(h.relationship_type for h in hours),
        },
        "governor": {
            "by_violation_type": total(h.violation_type for h in hours),
            "requests_with_governor_lines": sum(h.governor_requests for h in hours),
            "passed_requests": passed_requests,
            "passed_attempt_distribution": {str(attempt): n for attempt, n in passed.items()},
            "zero_regeneration_share": _mean(passed.get(1, 0), passed_requests),
            "regen_path_requests": len(regen_paths),
            "regen_path_latency_ms": _percentiles(regen_paths),
        },
        "identity": {"by_op": total(h.identity_ops for h in hours)},
        "averages": {
            "pack_size_bytes": _mean(sum(h.size_bytes_sum for h in hours), events["pack_built"]),
            "pack_build_ms": _mean(sum(h.built_in_tenths_sum for h in hours) / 10, events["pack_built"]),
            "check_latency_ms": _mean(sum(h.checked_in_tenths_sum for h in hours) / 10, events["ambiguity_check"]),
        },
        "latency_ms": {
            **_percentiles(durations),
            "over": "duration_ms of every request_completed line",
            "method": "linear interpolation between closest ranks, position (n-1)*q "
            "(DuckDB quantile_cont, numpy percentile default)",
        },
        "chunks": chunks,
    }
    truth["runbook_metrics"] = runbook_metrics(truth)
    return truth


def _requests_per_hour(total_requests: int) -> list[int]:
    weight_sum = sum(HOUR_WEIGHTS)
    counts = [int(total_requests * weight / weight_sum) for weight in HOUR_WEIGHTS]
    counts[15] += total_requests - sum(counts)
    return counts


def _calibrate(seed: int, day_start_ms: int) -> tuple[float, float, float, float]:
    """Bytes and lines of an hour with no chat traffic, and per extra arrival, from two trial hours."""
    users = _user_table()
    trial = 4000
    empty, _ = HourWriter(seed, 0, day_start_ms, 0, users).build(0)
    busy, _ = HourWriter(seed, 0, day_start_ms, 0, users).build(trial)
    return (
        len(empty),
        empty.count(b"\n"),
        (len(busy) - len(empty)) / trial,
        (busy.count(b"\n") - empty.count(b"\n")) / trial,
    )


def generate(out: Path, *, megabytes: float | None, lines: int | None, seed: int, day_start_ms: int,
             workers: int) -> dict:
    fixed_bytes, fixed_lines, bytes_per_arrival, lines_per_arrival = _calibrate(seed, day_start_ms)
    if lines is not None:
        arrivals = max(0, round((lines - 24 * fixed_lines) / lines_per_arrival))
    else:
        assert megabytes is not None  # the caller gives exactly one of megabytes, lines
        arrivals = max(0, round((megabytes * 1e6 - 24 * fixed_bytes) / bytes_per_arrival))
    per_hour = _requests_per_hour(arrivals)
    first_numbers = []
    running = 0
    for _hour, count in enumerate(per_hour):
        first_numbers.append(running)
        running += count + HOUR_MS // HEALTH_CHECK_EVERY_MS
    tasks = [(seed, hour, day_start_ms, first_numbers[hour], per_hour[hour]) for hour in range(24)]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    hours: list[HourTruth] = []
    chunks = []
    offset = 0
    with multiprocessing.get_context("fork").Pool(workers) as pool, open(partial, "wb") as sink:
        for hour, (payload, hour_truth) in enumerate(pool.imap(_build_hour, tasks)):
            sink.write(payload)
            chunks.append({"hour": hour, "offset": offset, "bytes": len(payload), "lines": hour_truth.lines,
                           "events": sum(hour_truth.events.values()),
                           "unparsed": sum(hour_truth.unparsed_by_hour.values())})
            offset += len(payload)
            hours.append(hour_truth)
    summary = {"seed": seed, "day_start_ms": day_start_ms, "hour_seconds": 3600, "bytes": offset,
               "chat_and_identity_arrivals": arrivals, "probe_request_id_prefix": PROBE_PREFIX}
    truth = _merge(hours, chunks, summary)
    truth_path = out.with_name(out.name + ".truth.json")
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    os.replace(partial, out)
    return truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--megabytes", type=float, help="approximate size of the log (10^6 bytes)")
    size.add_argument("--lines", type=int, help="approximate number of lines")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True, help="log path; the truth goes to <out>.truth.json")
    parser.add_argument("--day-start-ms", type=int, default=DEFAULT_DAY_START_MS)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if (args.megabytes is not None and args.megabytes <= 0) or (args.lines is not None and args.lines <= 0):
        parser.error("the size must be positive")
    started = time.perf_counter()
    truth = generate(args.out, megabytes=args.megabytes, lines=args.lines, seed=args.seed,
                     day_start_ms=args.day_start_ms, workers=args.workers)
    print(
        f"{args.out}: {truth['generator']['bytes'] / 1e6:.1f} MB, {truth['lines_total']:,} lines, "
        f"{truth['requests']['total']:,} requests in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
