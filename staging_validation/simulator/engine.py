"""The simulated staging service: chat pipeline, identity spine, organic users, faults in campaign time.

No HTTP here: `app.py` maps both dialects onto these methods and organic traffic calls them directly,
so both write the same telemetry. Every random choice of a request comes from an RNG seeded by the
simulator seed and the request's identity (its request id, user and text; the n-th organic request),
so the same seed and the same requests give the same events whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import random
import re
import time
import uuid

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.simulator.profiles import Knobs, MsRange, ResolvedProfile
from staging_validation.simulator.sparse_log import SparseTelemetry
from staging_validation.simulator.telemetry_log import (
    LEVEL_ERROR,
    LEVEL_INFO,
    LEVEL_WARN,
    MSG_AMBIGUITY,
    MSG_CHAT_ERROR,
    MSG_IDENTITY,
    MSG_PACK_BUILT,
    MSG_PACK_FALLBACK,
    MSG_PACK_MISSING,
    MSG_RELATIONSHIP,
    MSG_REQUEST_COMPLETED,
    TelemetryLog,
    governor_msg,
)

DOCUMENTED, ALTERNATE, SPARSE = "documented", "alternate", "sparse"
DIALECTS = (DOCUMENTED, ALTERNATE, SPARSE)
CHAT_ROUTE = {DOCUMENTED: "/v1/chat", ALTERNATE: "/api/v2/conversations/reply", SPARSE: "/api/chat"}
# (method, route) of the identity call an organic user makes
IDENTITY_CALL = {
    DOCUMENTED: ("POST", "/v1/identity/resolve"),
    ALTERNATE: ("POST", "/api/v2/accounts/resolve"),
    SPARSE: ("GET", "/api/identity/resolve"),
}
PROVIDERS = ("discord", "sovereign", "astralis", "console")
VIOLATION_TYPES = ("repetition", "locked_fact", "ungrounded", "posture")

# The ambiguity check: a deterministic function of the text, so a labelled prompt set is judged the
# same in every run. AMBIGUOUS when the text is only filler words ("so what not"), leads with a
# reference to nothing said ("what about that one?"), compares without saying what ("which is
# better?"), or contradicts itself ("do it but don't").
_FILLER_WORDS = frozenset(
    ["so", "what", "not", "um", "uh", "hmm", "huh", "like", "and", "or", "but", "the", "a", "an", "ok", "okay",
     "well", "yeah", "yes", "no", "just", "then"]
)
_DANGLING = re.compile(
    r"^(?:and |but |so |ok |okay )?(?:what about |how about |and |do |did |is |was |why |fix |change )?"
    r"(?:it|that|this|those|these|them|that one|the other one|the same)\b"
)
_COMPARISON = re.compile(r"\b(?:better|worse|best|worst|cheaper|faster|preferable)\b")
_CONTRADICTION = re.compile(r"\b(?:but (?:don't|do not|never)|yes and no|and also not)\b")

ORGANIC_CLEAR_MESSAGES = (
    "How do I reset my password on the console?",
    "Summarise what we discussed about the garden project last week.",
    "Can you draft a short note thanking the team for the release?",
    "What time zone is the Tuesday meeting scheduled in?",
    "Remind me which books I said I wanted to read this year.",
    "Explain the difference between a list and a tuple in Python.",
    "Give me three ideas for a vegetarian dinner tonight.",
    "What did I decide about the trip to Lisbon in May?",
    "Write a haiku about the first snow in the mountains.",
    "How many kilometres is a half marathon?",
)
ORGANIC_AMBIGUOUS_MESSAGES = (
    "so what not",
    "what about that one?",
    "which is better?",
    "do it but don't change anything",
    "and the other one",
    "um so yeah",
    "is it faster?",
    "fix it",
)

_OWNER_CONTEXT = ("owner", "companion_warm", "full")
_PUBLIC_CONTEXT = ("public", "assistant_neutral", "standard")


def assess_ambiguity(text: str) -> tuple[str, str]:
    """(status, reason) of the ambiguity check for a message."""
    normalized = re.sub(r"[^\w' ]+", " ", text.lower()).strip()
    words = normalized.split()
    if not words or all(word in _FILLER_WORDS for word in words):
        return "AMBIGUOUS", "MALFORMED_QUERY"
    if _CONTRADICTION.search(normalized):
        return "AMBIGUOUS", "CONTRADICTORY_REQUEST"
    if len(words) <= 6 and _DANGLING.match(normalized):
        return "AMBIGUOUS", "DANGLING_REFERENCE"
    if (
        len(words) <= 6
        and _COMPARISON.search(normalized)
        and " than " not in f" {normalized} "
        and " or " not in f" {normalized} "
    ):
        return "AMBIGUOUS", "UNDERSPECIFIED_COMPARISON"
    return "clear", "NONE"


def hashed_user_id(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:16]


def _user_fraction(user_id: str, purpose: str) -> float:
    """A stable number in [0, 1) per user, so per-user traits never change between requests or runs."""
    digest = hashlib.sha256(f"{purpose}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _draw_ms(rng: random.Random, span: MsRange) -> float:
    return round(rng.uniform(span.low, span.high), 1)


@dataclasses.dataclass(frozen=True)
class RelationshipContext:
    relationship_type: str
    voice_profile: str
    trust_level: str
    source: str


@dataclasses.dataclass
class ChatResult:
    status_code: int
    record_id: str = ""
    answer: str = ""
    ambiguous: bool = False
    relationship: RelationshipContext | None = None


class IdentityError(Exception):
    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


class StagingService:
    def __init__(
        self,
        profile: ResolvedProfile,
        log: TelemetryLog | SparseTelemetry,
        seed: int,
        timing: CampaignTiming,
        dialect: str,
    ):
        self.profile = profile
        self.log = log
        self.seed = seed
        self.timing = timing
        self.dialect = dialect
        self.refusing_connections = False
        self.faults: list[dict] = []
        self._request_counter = 0
        self._missing_packs_by_window: dict[tuple[int, ...], int] = {}
        self._identity_by_external: dict[tuple[str, str], str] = {}
        self._links: dict[str, list[tuple[str, str]]] = {}
        self._last_created: tuple[str, str] | None = None  # (provider, vi_user_id) of the newest identity
        self._organic_tasks: set[asyncio.Task] = set()
        self._schedule: dict = {"open": set(), "next_rotation_ms": None}

    # -- campaign time -------------------------------------------------------------------------
    def hour_now(self) -> float:
        return (time.time() * 1000 - self.timing.start_ms) / (self.timing.hour_seconds * 1000)

    def knobs_now(self) -> Knobs:
        return self.profile.knobs_at(self.hour_now())

    def reanchor(self, start_ms: int) -> None:
        """Move campaign hour 0 to `start_ms`; fault windows are then scheduled from there."""
        self.timing = CampaignTiming(start_ms=start_ms, hour_seconds=self.timing.hour_seconds)
        self._schedule = {"open": set(), "next_rotation_ms": None}

    def record_fault(self, name: str, detail: str, time_ms: int | None = None) -> None:
        time_ms = int(time.time() * 1000) if time_ms is None else time_ms
        self.faults.append(
            {"fault": name, "hour": self.timing.hour_of_ms(time_ms), "time_ms": time_ms, "detail": detail}
        )

    def _fault_names(self, window: tuple[int, ...]) -> str:
        return ",".join(self.profile.faults[i].name for i in window) or "baseline"

    # -- requests ------------------------------------------------------------------------------
    def next_request_id(self) -> str:
        self._request_counter += 1
        return f"req-{self._request_counter}"

    def request_rng(self, *identity: object) -> random.Random:
        return random.Random("|".join(str(part) for part in (self.seed, *identity)))

    def complete(self, request_id: str, method: str, url: str, status_code: int, started: float) -> None:
        self.log.write(
            MSG_REQUEST_COMPLETED,
            request_id=request_id,
            req={"method": method, "url": url},
            res={"statusCode": status_code},
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    # -- chat ----------------------------------------------------------------------------------
    async def chat(self, user_id: str, message: str, request_id: str, rng: random.Random) -> ChatResult:
        hour = self.hour_now()  # one regime per request, even if a window closes while it runs
        knobs, window = self.profile.knobs_at(hour), self.profile.open_faults(hour)
        user_hash = hashed_user_id(user_id)
        if rng.random() < knobs.slow_share:
            await asyncio.sleep(_draw_ms(rng, knobs.slow_ms) / 1000)
        await self._continuity_pack(knobs, window, user_hash, request_id, rng)
        if rng.random() < knobs.noise_rate:
            self.write_noise(rng)

        status, reason = assess_ambiguity(message)
        checked_in_ms = _draw_ms(rng, knobs.ambiguity_check_ms)
        await asyncio.sleep(checked_in_ms / 1000)
        confidence = round(rng.uniform(0.86, 0.99) if status == "clear" else rng.uniform(0.62, 0.95), 3)
        self.log.write(
            MSG_AMBIGUITY,
            request_id=request_id,
            status=status,
            reason=reason,
            input_length=len(message),
            confidence=confidence,
            checked_in_ms=checked_in_ms,
        )
        record_id = f"rec-{rng.getrandbits(64):016x}"
        if status == "AMBIGUOUS":
            await asyncio.sleep(_draw_ms(rng, knobs.clarification_ms) / 1000)
            answer = (
                "Could you say a bit more about what you mean? I want to be sure I answer the right question."
            )
            return ChatResult(200, record_id, answer, ambiguous=True)

        if rng.random() < knobs.error_rate:
            self.log.write(
                MSG_CHAT_ERROR,
                level=LEVEL_ERROR,
                request_id=request_id,
                err={
                    "type": "UpstreamModelError",
                    "message": "model backend returned 503",
                    "stack": "UpstreamModelError: model backend returned 503\n"
                    "    at ModelClient.complete (/app/dist/llm/client.js:88:13)\n"
                    "    at ChatHandler.draft (/app/dist/chat/handler.js:142:29)",
                },
            )
            return ChatResult(500, record_id)

        relationship = await self._resolve_relationship(knobs, user_id, user_hash, request_id, rng)
        await asyncio.sleep(_draw_ms(rng, knobs.llm_ms) / 1000)
        await self._govern(knobs, request_id, rng)
        topic = " ".join(message.split()[:6]).rstrip("?.!")
        answer = (
            f"Here is a considered answer about \u201c{topic}\u201d, "
            f"shaped for the {relationship.relationship_type} relationship."
        )
        return ChatResult(200, record_id, answer, ambiguous=False, relationship=relationship)

    async def _continuity_pack(
        self, knobs: Knobs, window: tuple[int, ...], user_hash: str, request_id: str, rng: random.Random
    ) -> None:
        built_in_ms = _draw_ms(rng, knobs.pack_ms)
        missing, fallback = rng.random(), rng.random()
        await asyncio.sleep(built_in_ms / 1000)
        if missing < knobs.missing_pack_rate and self._missing_pack_allowed(knobs, window):
            self.log.write(MSG_PACK_MISSING, level=LEVEL_ERROR, request_id=request_id, hashedUserId=user_hash)
            self.record_fault(
                self._fault_names(window), f"pack missing: reqId={request_id} hashedUserId={user_hash}"
            )
            return
        if fallback < knobs.fallback_rate:
            self.log.write(
                MSG_PACK_FALLBACK,
                level=LEVEL_WARN,
                request_id=request_id,
                hashedUserId=user_hash,
                reason=knobs.fallback_reason,
            )
            return
        total_facts = rng.randint(12, 160)
        locked = rng.randint(1, max(1, total_facts // 10))
        explicit = rng.randint(0, total_facts - locked)
        inferred = rng.randint(0, total_facts - locked - explicit)
        self.log.write(
            MSG_PACK_BUILT,
            request_id=request_id,
            hashedUserId=user_hash,
            total_facts=total_facts,
            authority_breakdown={
                "locked": locked,
                "explicit": explicit,
                "inferred": inferred,
                "ephemeral": total_facts - locked - explicit - inferred,
            },
            historical_summaries=rng.randint(0, 12),
            engagement_history=rng.randint(0, 40),
            size_bytes=int(rng.uniform(knobs.pack_size_kb.low, knobs.pack_size_kb.high) * 1024),
            built_in_ms=built_in_ms,
        )

    def _missing_pack_allowed(self, knobs: Knobs, window: tuple[int, ...]) -> bool:
        count = self._missing_packs_by_window.get(window, 0)
        if knobs.missing_pack_max is not None and count >= knobs.missing_pack_max:
            return False
        self._missing_packs_by_window[window] = count + 1
        return True

    def relationship_of(self, user_id: str) -> RelationshipContext:
        """The stable context of a user: owners by locked fact, others mostly from the database."""
        if "owner" in user_id.lower():
            return RelationshipContext(*_OWNER_CONTEXT, source="locked_fact")
        source = "guarded_clamp" if _user_fraction(user_id, "relationship-source") < 0.05 else "database"
        return RelationshipContext(*_PUBLIC_CONTEXT, source=source)

    async def _resolve_relationship(
        self, knobs: Knobs, user_id: str, user_hash: str, request_id: str, rng: random.Random
    ) -> RelationshipContext:
        resolved_in_ms = _draw_ms(rng, knobs.relationship_ms)
        flips = rng.random() < 0.5
        await asyncio.sleep(resolved_in_ms / 1000)
        context = self.relationship_of(user_id)
        if flips and _user_fraction(user_id, "relationship-flap") < knobs.relationship_flap_share:
            flipped = _PUBLIC_CONTEXT if context.relationship_type == "owner" else _OWNER_CONTEXT
            context = RelationshipContext(*flipped, source="database")
        self.log.write(
            MSG_RELATIONSHIP,
            request_id=request_id,
            hashedUserId=user_hash,
            source=context.source,
            relationship_type=context.relationship_type,
            voice_profile=context.voice_profile,
            trust_level=context.trust_level,
            resolved_in_ms=resolved_in_ms,
        )
        return context

    async def _govern(self, knobs: Knobs, request_id: str, rng: random.Random) -> None:
        for attempt in range(1, knobs.max_attempts + 1):
            regen_in_ms = 0.0  # attempt 1 checks the first draft: no regeneration
            if attempt > 1:
                regen_in_ms = round(knobs.regen_ms_median * math.exp(rng.gauss(0, knobs.regen_ms_sigma)), 1)
                await asyncio.sleep(regen_in_ms / 1000)
            pass_rate = knobs.first_attempt_pass_rate if attempt == 1 else knobs.regen_pass_rate
            violation = rng.choice(VIOLATION_TYPES)
            passed = rng.random() < pass_rate or attempt == knobs.max_attempts
            self.log.write(
                governor_msg(attempt, knobs.max_attempts),
                request_id=request_id,
                status="passed" if passed else "violation_detected",
                violation_type="none" if passed else violation,
                attempt=attempt,
                max_attempts=knobs.max_attempts,
                regen_in_ms=regen_in_ms,
            )
            if passed:
                return

    # -- identity spine ------------------------------------------------------------------------
    def _identity_line(
        self, request_id: str, op: str, provider, provider_user_id, vi_user_id, ok: bool
    ) -> None:
        self.log.write(
            MSG_IDENTITY,
            level=LEVEL_INFO if ok else LEVEL_ERROR,
            request_id=request_id,
            op=op,
            provider=provider,
            provider_user_id=provider_user_id,
            vi_user_id=vi_user_id,
            ok=ok,
        )

    def resolve_identity(
        self, provider: str, provider_user_id: str, request_id: str, op: str | None, create: bool
    ) -> str:
        """Existing id of a provider identity, or (when `create`) a new one; `op` is create or resolve,
        None for a service that creates on first resolve (create when new, else resolve)."""
        key = (provider, provider_user_id)
        vi_user_id = self._identity_by_external.get(key)
        if op is None:
            op = "resolve" if vi_user_id is not None else "create"
        if vi_user_id is None and not create:
            self._identity_line(request_id, op, provider, provider_user_id, None, ok=False)
            raise IdentityError(404, f"no account for {provider}:{provider_user_id}")
        if vi_user_id is None:
            vi_user_id = str(
                uuid.UUID(
                    int=self.request_rng("identity", provider, provider_user_id).getrandbits(128), version=4
                )
            )
            hour = self.hour_now()
            window = self.profile.open_faults(hour)
            if (
                self.profile.knobs_at(hour).identity_merge
                and self._last_created
                and self._last_created[0] != provider
            ):
                vi_user_id = self._last_created[1]
                self.record_fault(
                    self._fault_names(window),
                    f"identity merge: {provider}:{provider_user_id} got the id of "
                    f"a {self._last_created[0]} identity",
                )
            self._identity_by_external[key] = vi_user_id
            self._links.setdefault(vi_user_id, []).append(key)
            self._last_created = (provider, vi_user_id)
        self._identity_line(request_id, op, provider, provider_user_id, vi_user_id, ok=True)
        return vi_user_id

    def link_identity(
        self, vi_user_id: str, provider: str, provider_user_id: str, request_id: str
    ) -> list[tuple[str, str]]:
        key = (provider, provider_user_id)
        owner = self._identity_by_external.get(key)
        problem = None
        if vi_user_id not in self._links:
            problem = IdentityError(404, f"unknown user {vi_user_id}")
        elif owner is not None and owner != vi_user_id:
            problem = IdentityError(409, f"{provider}:{provider_user_id} is linked to another user")
        self._identity_line(request_id, "link", provider, provider_user_id, vi_user_id, ok=problem is None)
        if problem is not None:
            raise problem
        if owner is None:
            self._identity_by_external[key] = vi_user_id
            self._links[vi_user_id].append(key)
        return list(self._links[vi_user_id])

    def lookup_identity(self, vi_user_id: str, request_id: str) -> list[tuple[str, str]]:
        links = self._links.get(vi_user_id)
        self._identity_line(request_id, "lookup", None, None, vi_user_id, ok=links is not None)
        if links is None:
            raise IdentityError(404, f"unknown user {vi_user_id}")
        return list(links)

    # -- background behaviour ------------------------------------------------------------------
    def write_noise(self, rng: random.Random) -> None:
        """Console output a real service mixes into its log: never JSON objects."""
        choice = rng.randrange(3)
        if choice == 0:
            self.log.write_unparsed(
                rng.choice(
                    (
                        "[nodemon] watching 214 files",
                        "GET /v1/chat 500 fallback route hit by health checker (not an error)",
                        "Warning: pack cache fallback disabled; set PACK_CACHE=1 to enable",
                    )
                )
            )
        elif choice == 1:
            self.log.write_unparsed(
                "Error: connect ECONNRESET 10.0.4.17:6379\n"
                "    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)\n"
                "    at RedisClient.reconnect (/app/node_modules/redis/dist/client.js:412:9)\n"
                "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)"
            )
        else:
            _, line = self.log.pino_line(
                MSG_PACK_BUILT, LEVEL_INFO, None, {"hashedUserId": "0" * 16, "total_facts": 42}
            )
            self.log.write_unparsed(line[: rng.randint(20, len(line) - 2)])

    async def organic_traffic(self, requests_per_second: float, stop: asyncio.Event) -> None:
        """Background users arriving as a Poisson process; paused while connections are refused."""
        arrivals = self.request_rng("organic-arrivals")
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        index = 0
        while not stop.is_set():
            next_at += arrivals.expovariate(requests_per_second)
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_at - loop.time()))
                return
            except TimeoutError:
                pass
            index += 1
            if self.refusing_connections:
                continue
            task = asyncio.create_task(self._organic_request(index))
            self._organic_tasks.add(task)
            task.add_done_callback(self._organic_tasks.discard)

    async def _organic_request(self, index: int) -> None:
        started = time.perf_counter()
        rng = self.request_rng("organic", index)
        knobs = self.knobs_now()
        request_id = self.next_request_id()
        user_index = rng.randrange(knobs.organic_users)
        if rng.random() < knobs.organic_identity_share:
            provider = PROVIDERS[user_index % len(PROVIDERS)]
            op = None if self.dialect == SPARSE else "resolve"
            self.resolve_identity(provider, f"{provider}-{user_index:04d}", request_id, op, create=True)
            self.complete(request_id, *IDENTITY_CALL[self.dialect], 200, started)
            return
        role = "owner" if user_index % 20 == 0 else "user"
        user_id = f"organic-{role}-{user_index:04d}"
        pool = (
            ORGANIC_AMBIGUOUS_MESSAGES
            if rng.random() < knobs.organic_ambiguity_rate
            else ORGANIC_CLEAR_MESSAGES
        )
        message = rng.choice(pool)
        result = await self.chat(user_id, message, request_id, rng)
        self.complete(request_id, "POST", CHAT_ROUTE[self.dialect], result.status_code, started)

    async def drain_organic(self, timeout_s: float) -> None:
        """Let organic requests in flight finish, as HTTP ones do, so the log ends with whole requests."""
        if self._organic_tasks:
            _, pending = await asyncio.wait(list(self._organic_tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def scheduler_tick(self) -> None:
        """Record fault windows opening and closing; rotate the log when due; toggle the outage."""
        now_ms = int(time.time() * 1000)
        hour = self.hour_now()
        state = self._schedule
        open_set = set(self.profile.open_faults(hour))
        hour_ms = self.timing.hour_seconds * 1000
        for index in sorted(open_set - state["open"]):
            fault = self.profile.faults[index]
            at_ms = int(self.timing.start_ms + fault.at_hour * hour_ms)
            settings = ", ".join(f"{k}={v}" for k, v in fault.set.items())
            self.record_fault(fault.name, f"window opens: {settings}", time_ms=at_ms)
        for index in sorted(state["open"] - open_set):
            fault = self.profile.faults[index]
            end_ms = (
                int(self.timing.start_ms + fault.end_hour() * hour_ms) if fault.end_hour() <= hour else now_ms
            )
            self.record_fault(fault.name, "window closes", time_ms=end_ms)
        state["open"] = open_set
        knobs = self.profile.knobs_at(hour)
        self.refusing_connections = knobs.refuse_connections
        if knobs.rotate_every_hours is None:
            state["next_rotation_ms"] = None
        elif state["next_rotation_ms"] is None:
            state["next_rotation_ms"] = now_ms + knobs.rotate_every_hours * hour_ms
        elif now_ms >= state["next_rotation_ms"]:
            mode = "rename" if len(self.log.rotations) % 2 == 0 else "copytruncate"
            self.log.rotate(mode)
            state["next_rotation_ms"] += knobs.rotate_every_hours * hour_ms

    def stats(self) -> dict:
        return {
            "campaign_start_ms": self.timing.start_ms,
            "hour_seconds": self.timing.hour_seconds,
            "profile": self.profile.name,
            "dialect": self.dialect,
            "seed": self.seed,
            **self.log.summary(self.timing),
            "faults": list(self.faults),
            "rotations": list(self.log.rotations),
        }
