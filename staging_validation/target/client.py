"""`TargetClient`: one connection-reusing HTTP client that turns every request into a `ProbeRecord`.

Nothing here raises on what the target does: a timeout, a refused connection, an error status or a body
that is not JSON becomes a record with its outcome class and error text. Every request is timed from its
*scheduled* start (latency includes any wait before it could be sent, so a slow client or server cannot
hide lateness) and carries a probe request id (`<prefix><probe>-<client tag>-<n>`, unique across
clients) that telemetry can join on. A 429 is waited out and retried, a bounded number of times, except
where the caller measures load (the stress probe), where it is the result. A response body is read up
to the profile's `http.max_body_bytes` and cut off there (`body_truncated`), streams included. An
operation the profile declares not exposed is never sent: its record has outcome `not_exposed`; a value
declared not exposed is left empty and named in the record's `not_exposed`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.config_files import ConfigError
from staging_validation.schemas.outcome import Outcome, outcome_for_status
from staging_validation.schemas.probe_records import ProbeRecord
from staging_validation.target.profile import (
    PLACEHOLDERS,
    HealthFeaturePaths,
    NotExposed,
    RelationshipPaths,
    RequestSpec,
    TargetProfile,
    fill_template,
    first_present,
    json_path_get,
    user_uuid,
)

ANSWER_MAX_CHARS = 200
ERROR_BODY_MAX_CHARS = 200
# A functional probe asks whether the release works, so a 429 is waited out (the throttling still shows
# in telemetry and in the record's `rate_limited_retries`); bounded so a throttled target cannot stall
# a probe for long.
RATE_LIMIT_RETRIES = 4
RETRY_AFTER_DEFAULT_S = 1.0
RETRY_AFTER_MAX_S = 5.0


def resolve_base_url(profile: TargetProfile, base_url: str | None = None) -> str:
    """`base_url` (else the profile's) without its trailing slash; ConfigError unless an http(s) URL with a host."""
    given = base_url or profile.base_url
    url = given.rstrip("/")
    try:
        parts = urlsplit(url)
        # `.port` raises ValueError for a port that is not a number from 0 to 65535.
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid or any(char.isspace() for char in url):
        raise ConfigError(f"base_url {given!r}: must be an http:// or https:// URL with a host")
    return url


def bearer_token(profile: TargetProfile) -> str | None:
    """The token from the variable the profile names; ConfigError (naming the variable) if required but unset."""
    token = os.environ.get(profile.token_env) if profile.token_env else None
    if not token and profile.token_required:
        raise ConfigError(
            f"token_env: the profile requires a bearer token but ${profile.token_env} is unset or empty"
        )
    return token or None


class TargetClient:
    """Async context manager around one `httpx.AsyncClient` configured from a target profile."""

    def __init__(self, profile: TargetProfile, base_url: str | None = None):
        self.profile = profile
        self.base_url = resolve_base_url(profile, base_url)
        self._headers: dict[str, str] = {}
        token = bearer_token(profile)
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        # A tag per client keeps request ids unique across clients and runs hitting the same target.
        self._client_tag = secrets.token_hex(3)
        self._request_numbers = itertools.count(1)
        self._http: httpx.AsyncClient | None = None
        # Schedules are wall-clock seconds, but waits and latencies use the monotonic clock through
        # this anchor, so a wall-clock step never distorts a measurement.
        self._anchor_wall = time.time()
        self._anchor_mono = time.monotonic()

    async def __aenter__(self) -> TargetClient:
        settings = self.profile.http
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            timeout=httpx.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
            ),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def now(self) -> float:
        """Wall-clock seconds, advancing with the monotonic clock."""
        return self._anchor_wall + (time.monotonic() - self._anchor_mono)

    async def sleep_until(self, wall_s: float) -> None:
        await asyncio.sleep(max(0.0, wall_s - self.now()))

    # -- operations -------------------------------------------------------------------------------

    async def health(
        self, probe: str, timing: CampaignTiming, *, case: str = "health", at: float | None = None
    ) -> tuple[ProbeRecord, dict[str, bool | None]]:
        """The health record and each of the four features' value (None when absent, not boolean or not
        exposed; the record's `not_exposed` names the features the profile declares not exposed)."""
        record, document = await self._exchange(probe, timing, case, "health", at=at)
        features: dict[str, bool | None] = {}
        for feature in HEALTH_FEATURES:
            path = self._readable(record, f"extract.health_features.{feature}")
            value = json_path_get(document, path) if document is not None and path is not None else None
            features[feature] = value if isinstance(value, bool) else None
        return record, features

    async def chat(
        self,
        probe: str,
        timing: CampaignTiming,
        *,
        case: str,
        user: str,
        message: str,
        at: float | None = None,
        retry_rate_limited: bool = True,
    ) -> ProbeRecord:
        """`retry_rate_limited=False` for load generation, where a 429 is the measurement."""
        record, document = await self._exchange(
            probe,
            timing,
            case,
            "chat",
            at=at,
            user=user,
            values={"message": message},
            retry_rate_limited=retry_rate_limited,
        )
        if document is not None:
            self._extract_answer(record, document)
        return record

    async def stream(
        self,
        probe: str,
        timing: CampaignTiming,
        *,
        case: str,
        user: str,
        message: str,
        at: float | None = None,
    ) -> ProbeRecord:
        record, _ = await self._exchange(
            probe, timing, case, "stream", at=at, user=user, values={"message": message}, streamed=True
        )
        return record

    async def identity_link(
        self,
        probe: str,
        timing: CampaignTiming,
        *,
        case: str,
        vi_user_id: str,
        provider: str,
        provider_user_id: str,
        at: float | None = None,
    ) -> ProbeRecord:
        record, _ = await self._exchange(
            probe,
            timing,
            case,
            "identity_link",
            at=at,
            values={"vi_user_id": vi_user_id, "provider": provider, "provider_user_id": provider_user_id},
        )
        record.vi_user_id = vi_user_id
        return record

    async def identity_lookup(
        self, probe: str, timing: CampaignTiming, *, case: str, vi_user_id: str, at: float | None = None
    ) -> tuple[ProbeRecord, list[tuple[str, str]] | None]:
        """The lookup record and the (provider, provider user id) pairs linked to the user, if readable."""
        record, document = await self._exchange(
            probe, timing, case, "identity_lookup", at=at, values={"vi_user_id": vi_user_id}
        )
        record.vi_user_id = vi_user_id
        if document is None or self._readable(record, "extract.links") is None:
            return record, None
        paths = self.profile.extract.links
        assert not isinstance(paths, NotExposed)
        items = json_path_get(document, paths.items)
        if not isinstance(items, list):
            record.error = f"reverse lookup: no list at {paths.items or '<response>'!r}"
            return record, None
        links = [
            (str(json_path_get(item, paths.provider)), str(json_path_get(item, paths.provider_user_id)))
            for item in items
        ]
        record.answer = _truncate(", ".join(f"{p}:{u}" for p, u in links))
        return record, links

    def dropped(
        self,
        probe: str,
        timing: CampaignTiming,
        *,
        case: str,
        operation: str,
        user: str,
        at: float,
        reason: str,
    ) -> ProbeRecord:
        """The record of a request that was due at `at` but was never sent (counted, never skipped).

        Its outcome is `dropped`: the validator's shortfall, never counted against the target.
        """
        spec = self._spec(operation)
        route, method = ("", "") if isinstance(spec, NotExposed) else (spec.route, spec.method)
        record = self._new_record(probe, timing, case, user, route, method, at)
        record.outcome = Outcome.DROPPED
        record.dropped = True
        record.send_lag_ms = (self.now() - at) * 1000.0
        record.error = f"dropped: {reason}"
        return record

    # -- mechanics --------------------------------------------------------------------------------

    def _spec(self, operation: str) -> RequestSpec | NotExposed:
        return getattr(self.profile.requests, operation)

    def _readable(self, record: ProbeRecord, path: str) -> str | None:
        """The JSON path the profile gives at `path` (e.g. `extract.identity_id`), or None when it is not
        exposed, which the record then names."""
        missing = self.profile.not_exposed(path)
        if missing is not None:
            note_not_exposed(record, missing)
            return None
        value = self.profile
        for segment in path.split("."):
            value = getattr(value, segment)
        return value

    def _new_record(
        self,
        probe: str,
        timing: CampaignTiming,
        case: str,
        user: str,
        route: str,
        method: str,
        at: float,
    ) -> ProbeRecord:
        return ProbeRecord(
            time=datetime.fromtimestamp(at, tz=UTC),
            campaign_s=timing.campaign_seconds(at),
            probe=probe,
            case=case,
            user=user,
            route=route,
            method=method,
            outcome=Outcome.OK,
            latency_ms=None,
        )

    async def identity_for_provider(
        self,
        operation: str,
        probe: str,
        timing: CampaignTiming,
        *,
        case: str,
        provider: str,
        provider_user_id: str,
        at: float | None = None,
    ) -> ProbeRecord:
        """`identity_create` or `identity_resolve`: the identity id the service gives a provider's user."""
        record, document = await self._exchange(
            probe,
            timing,
            case,
            operation,
            at=at,
            values={"provider": provider, "provider_user_id": provider_user_id},
        )
        path = self._readable(record, "extract.identity_id")
        if document is not None and path is not None:
            identity = json_path_get(document, path)
            record.vi_user_id = None if identity is None else str(identity)
        return record

    def _extract_answer(self, record: ProbeRecord, document: Any) -> None:
        record_id_paths = self._readable(record, "extract.record_id")
        record_id = first_present(document, record_id_paths) if record_id_paths is not None else None
        record.record_id = None if record_id is None else str(record_id)
        answer_paths = self._readable(record, "extract.answer")
        answer = first_present(document, answer_paths) if answer_paths is not None else None
        record.answer = None if answer is None else _truncate(str(answer))
        rule = self._readable(record, "extract.ambiguity")
        if rule is not None:
            verdict = json_path_get(document, rule.field)
            if rule.equals is not None:
                record.ambiguous = None if verdict is None else verdict == rule.equals
            else:
                record.ambiguous = verdict if isinstance(verdict, bool) else None
        for column in RELATIONSHIP_COLUMNS:
            path = self._readable(record, f"extract.relationship.{column}")
            value = json_path_get(document, path) if path is not None else None
            setattr(record, column, None if value is None else str(value))

    def _build_request(
        self, spec: RequestSpec, user: str, values: dict[str, Any], at: float
    ) -> tuple[str, dict[str, str], dict[str, Any] | None, dict[str, str]]:
        """Route, query parameters, JSON body and headers with every placeholder filled."""
        filled: dict[str, Any] = dict.fromkeys(PLACEHOLDERS, "")
        filled.update(values, user=user, timestamp=int(at * 1000), request_uuid=str(uuid.uuid4()),
                      user_uuid=user_uuid(user) if user else "")
        route = fill_template(spec.route, {k: quote(str(v), safe="") for k, v in filled.items()})
        query = {name: str(fill_template(value, filled)) for name, value in spec.query.items()}
        body = fill_template(spec.body, filled) if spec.body is not None else None
        headers = {name: str(fill_template(value, filled)) for name, value in spec.headers.items()}
        conveyance = self.profile.user
        if user and conveyance.location == "header":
            headers[conveyance.name] = user
        elif user and conveyance.location == "query":
            query[conveyance.name] = user
        elif user:
            body = {**(body or {}), conveyance.name: user}
        return route, query, body, headers

    async def _exchange(
        self,
        probe: str,
        timing: CampaignTiming,
        case: str,
        operation: str,
        *,
        at: float | None,
        user: str = "",
        values: dict[str, Any] | None = None,
        streamed: bool = False,
        retry_rate_limited: bool = True,
    ) -> tuple[ProbeRecord, Any]:
        """Send one request at its scheduled time; the record and the parsed JSON body (None if unusable).

        A 429 is retried after its `Retry-After` (at most RATE_LIMIT_RETRIES times) unless
        `retry_rate_limited` is False; latency still runs from the scheduled time.
        """
        if self._http is None:
            raise RuntimeError("TargetClient used outside `async with`")
        scheduled = self.now() if at is None else at
        spec = self._spec(operation)
        if isinstance(spec, NotExposed):
            record = self._new_record(probe, timing, case, user, "", "", scheduled)
            record.outcome = Outcome.NOT_EXPOSED
            note_not_exposed(record, f"requests.{operation}: {spec.not_exposed}")
            return record, None
        route, query, body, headers = self._build_request(spec, user, values or {}, scheduled)
        record = self._new_record(probe, timing, case, user, route, spec.method, scheduled)
        telemetry = self.profile.telemetry
        record.request_id = (
            f"{telemetry.probe_request_id_prefix}{probe}-{self._client_tag}-{next(self._request_numbers)}"
        )
        headers[telemetry.request_id_header] = record.request_id

        await self.sleep_until(scheduled)
        record.send_lag_ms = (self.now() - scheduled) * 1000.0
        retries_left = RATE_LIMIT_RETRIES if retry_rate_limited else 0
        while True:
            document, retry_after_s = await self._attempt(record, spec, route, query, body, headers, streamed)
            if retry_after_s is None or retries_left == 0:
                break
            retries_left -= 1
            record.rate_limited_retries += 1
            await asyncio.sleep(retry_after_s)
        record.latency_ms = (self.now() - scheduled) * 1000.0
        return record, document

    async def _attempt(
        self,
        record: ProbeRecord,
        spec: RequestSpec,
        route: str,
        query: dict[str, str],
        body: dict[str, Any] | None,
        headers: dict[str, str],
        streamed: bool,
    ) -> tuple[Any, float | None]:
        """One send, its outcome written to `record`; the parsed JSON body and, on a 429, the wait asked for."""
        assert self._http is not None
        document = None
        sent = self.now()
        record.error = None
        try:
            async with asyncio.timeout(self.profile.http.request_timeout_s):
                request = self._http.build_request(
                    spec.method, route, params=query or None, json=body, headers=headers
                )
                response = await self._http.send(request, stream=True)
                try:
                    content = await self._read_capped(record, response)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            record.outcome = Outcome.TIMEOUT
            record.error = f"timeout after {self.now() - sent:.3f}s"
        except httpx.HTTPError as exc:  # refused, reset, protocol errors: the exchange never completed
            record.outcome = Outcome.CONNECTION_ERROR
            record.error = f"connection error: {type(exc).__name__}: {exc}".rstrip(": ")
        else:
            record.http_status = response.status_code
            record.outcome = outcome_for_status(response.status_code)
            text = content.decode(response.encoding or "utf-8", errors="replace")
            if not response.is_success:
                record.error = f"HTTP {response.status_code}: {_truncate(text, ERROR_BODY_MAX_CHARS)}"
            elif record.body_truncated:
                record.error = (f"response body longer than the {self.profile.http.max_body_bytes}-byte cap "
                                "(http.max_body_bytes): cut off there")
            if streamed and response.is_success:
                prefix = self.profile.extract.sse.event_prefix
                record.sse_events = sum(line.startswith(prefix) for line in text.splitlines())
            elif response.is_success and not record.body_truncated:
                try:
                    document = json.loads(content)
                except ValueError:
                    record.error = f"response is not JSON: {_truncate(text, ERROR_BODY_MAX_CHARS)!r}"
            if record.outcome == Outcome.RATE_LIMITED:
                return document, _retry_after_s(response.headers.get("retry-after"))
        return document, None


    async def _read_capped(self, record: ProbeRecord, response: httpx.Response) -> bytes:
        """The body up to `http.max_body_bytes`; the rest is never read (closing the response drops it)."""
        cap = self.profile.http.max_body_bytes
        content = bytearray()
        record.body_truncated = False
        async for chunk in response.aiter_bytes():
            room = cap - len(content)
            if len(chunk) > room:
                content += chunk[:room]
                record.body_truncated = True
                break
            content += chunk
        record.body_bytes = len(content)
        return bytes(content)


HEALTH_FEATURES = tuple(HealthFeaturePaths.model_fields)
RELATIONSHIP_COLUMNS = tuple(RelationshipPaths.model_fields)


def note_not_exposed(record: ProbeRecord, item: str) -> None:
    """Add `"<profile path>: <reason>"` to the record's not-exposed list (once)."""
    items = record.not_exposed.split("; ") if record.not_exposed else []
    if item not in items:
        record.not_exposed = "; ".join([*items, item])


def _retry_after_s(header: str | None) -> float:
    """The `Retry-After` wait in seconds, bounded; the default when absent, an HTTP date or not finite."""
    try:
        seconds = float(header) if header is not None else RETRY_AFTER_DEFAULT_S
    except ValueError:
        seconds = RETRY_AFTER_DEFAULT_S
    if not math.isfinite(seconds):  # float() accepts "nan" and "inf", which no sleep can honour
        seconds = RETRY_AFTER_DEFAULT_S
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def _truncate(text: str, limit: int = ANSWER_MAX_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
