"""The simulator's HTTP surface: the documented, alternate or sparse dialect, plus the `/_sim/` side routes.

Every service request gets a request id (the incoming `x-request-id`, else `req-<n>`), passes the
optional bearer auth and the rate limit, and ends with exactly one `request completed` line, written
before the last byte of the response so a client that has its answer can read the ground truth at once.
The health route stays open without a token, as deployment health checks usually are.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from staging_validation.simulator.engine import ALTERNATE, SPARSE, ChatResult, IdentityError, StagingService

REQUEST_ID_HEADER = "x-request-id"
ALTERNATE_USER_HEADER = "x-vi-user"
SPARSE_USER_HEADER = "x-user"
SPARSE_DEVICE_HEADER = "x-device-id"
STREAM_EVENT_PAUSE_S = 0.005

FEATURES = {
    "ambiguityGateEnabled": True,
    "relationshipModelEnabled": True,
    "identitySpineEnabled": True,
    "continuityPackRequired": True,
}


class BadRequest(Exception):
    pass


class RateLimiter:
    """Accepts at most `rps` requests in any sliding second."""

    def __init__(self) -> None:
        self._accepted: collections.deque[float] = collections.deque()

    def allow(self, rps: float | None) -> bool:
        if rps is None:
            return True
        now = time.monotonic()
        while self._accepted and now - self._accepted[0] >= 1.0:
            self._accepted.popleft()
        if len(self._accepted) >= rps:
            return False
        self._accepted.append(now)
        return True


class RequestContext:
    def __init__(self, service: StagingService, request: Request):
        self.service = service
        self.request = request
        self.request_id = request.headers.get(REQUEST_ID_HEADER) or service.next_request_id()
        self.started = time.perf_counter()
        self.rng = service.request_rng("http", self.request_id)

    def complete(self, status_code: int) -> None:
        url = self.request.url.path + (f"?{self.request.url.query}" if self.request.url.query else "")
        self.service.complete(self.request_id, self.request.method, url, status_code, self.started)

    async def json_body(self, *required: str) -> dict:
        try:
            body = json.loads(await self.request.body() or b"null")
        except ValueError:
            raise BadRequest("body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        for field in required:
            if not isinstance(body.get(field), str) or not body[field]:
                raise BadRequest(f"field {field!r} must be a non-empty string")
        return body


Handler = Callable[[RequestContext], Awaitable[Response]]


def build_app(service: StagingService, token: str | None) -> Starlette:
    limiter = RateLimiter()

    def service_route(path: str, handler: Handler, methods: list[str], open_route: bool = False) -> Route:
        async def endpoint(request: Request) -> Response:
            context = RequestContext(service, request)
            headers = {REQUEST_ID_HEADER: context.request_id}
            if not limiter.allow(service.knobs_now().rate_limit_rps):
                response: Response = JSONResponse(
                    {"error": "rate limited"}, 429, headers={**headers, "retry-after": "1"}
                )
            elif token is not None and not open_route and not _authorized(request, token):
                response = JSONResponse(
                    {"error": "unauthorized"}, 401, headers={**headers, "www-authenticate": "Bearer"}
                )
            else:
                try:
                    response = await handler(context)
                except BadRequest as exc:
                    response = JSONResponse({"error": str(exc)}, 400)
                except IdentityError as exc:
                    response = JSONResponse({"error": str(exc)}, exc.status_code)
                response.headers.update(headers)
            if not isinstance(response, StreamingResponse):  # a stream completes itself before its last event
                context.complete(response.status_code)
            return response

        return Route(path, endpoint, methods=methods)

    dialect_routes = {ALTERNATE: _alternate_routes, SPARSE: _sparse_routes}.get(service.dialect, _documented_routes)
    routes = dialect_routes(service, service_route)

    async def stats(request: Request) -> Response:
        return JSONResponse(service.stats())

    async def campaign(request: Request) -> Response:
        try:
            start_ms = json.loads(await request.body()).get("start_ms")
        except (ValueError, AttributeError):
            start_ms = None
        if not isinstance(start_ms, int) or isinstance(start_ms, bool):
            return JSONResponse({"error": 'body must be {"start_ms": int}'}, 400)
        service.reanchor(start_ms)
        return JSONResponse({"campaign_start_ms": start_ms, "hour_seconds": service.timing.hour_seconds})

    async def not_found(context: RequestContext) -> Response:
        return JSONResponse({"error": "not found"}, 404)

    all_methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            *routes,
            Route("/_sim/stats", stats, methods=["GET"]),
            Route("/_sim/campaign", campaign, methods=["POST"]),
            service_route("/{path:path}", not_found, all_methods, open_route=True),
        ]
    )


def _authorized(request: Request, token: str) -> bool:
    # Bytes, because compare_digest refuses str with non-ASCII characters (Starlette decodes headers as
    # latin-1, so encoding back gives the bytes the client sent).
    sent = request.headers.get("authorization", "").encode("latin-1")
    return hmac.compare_digest(sent, f"Bearer {token}".encode())


def _stream(context: RequestContext, events: list[dict]) -> StreamingResponse:
    async def body():
        for event in events[:-1]:
            yield f"data: {json.dumps(event)}\n\n"
            await asyncio.sleep(STREAM_EVENT_PAUSE_S)
        context.complete(200)
        yield f"data: {json.dumps(events[-1])}\n\n"

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={REQUEST_ID_HEADER: context.request_id}
    )


def _chunks(text: str, words_per_chunk: int = 4) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)] or [""]


def _documented_routes(service: StagingService, service_route) -> list[Route]:
    def chat_body(result: ChatResult) -> dict:
        relationship = result.relationship
        return {
            "recordId": result.record_id,
            "content": result.answer,
            "status": "clarification_needed" if result.ambiguous else "ok",
            "ambiguity_detected": result.ambiguous,
            "relationship_context": None
            if relationship is None
            else {
                "relationship_type": relationship.relationship_type,
                "voice_profile": relationship.voice_profile,
                "trust_level": relationship.trust_level,
            },
        }

    async def run_chat(context: RequestContext) -> ChatResult:
        body = await context.json_body("message", "userId")
        return await service.chat(body["userId"], body["message"], context.request_id, context.rng)

    async def health(context: RequestContext) -> Response:
        return JSONResponse({"status": "ok", "version": "1.1.0", "config": FEATURES})

    async def chat(context: RequestContext) -> Response:
        result = await run_chat(context)
        if result.status_code != 200:
            return JSONResponse({"error": "internal error", "recordId": result.record_id}, result.status_code)
        return JSONResponse(chat_body(result))

    async def chat_stream(context: RequestContext) -> Response:
        result = await run_chat(context)
        if result.status_code != 200:
            return JSONResponse({"error": "internal error", "recordId": result.record_id}, result.status_code)
        events = [{"type": "start", "recordId": result.record_id}]
        events += [{"type": "delta", "content": chunk} for chunk in _chunks(result.answer)]
        events.append({"type": "done", **chat_body(result)})
        return _stream(context, events)

    def identity(op: str):
        async def handler(context: RequestContext) -> Response:
            body = await context.json_body("provider", "provider_user_id")
            vi_user_id = service.resolve_identity(
                body["provider"], body["provider_user_id"], context.request_id, op, create=True
            )
            return JSONResponse({"vi_user_id": vi_user_id})

        return handler

    async def link(context: RequestContext) -> Response:
        body = await context.json_body("vi_user_id", "provider", "provider_user_id")
        links = service.link_identity(
            body["vi_user_id"], body["provider"], body["provider_user_id"], context.request_id
        )
        return JSONResponse({"vi_user_id": body["vi_user_id"], "providers": _documented_links(links)})

    async def providers(context: RequestContext) -> Response:
        links = service.lookup_identity(context.request.path_params["vi_user_id"], context.request_id)
        return JSONResponse(_documented_links(links))

    return [
        service_route("/health", health, ["GET"], open_route=True),
        service_route("/v1/chat", chat, ["POST"]),
        service_route("/v1/chat/stream", chat_stream, ["POST"]),
        service_route("/v1/identity/create", identity("create"), ["POST"]),
        service_route("/v1/identity/resolve", identity("resolve"), ["POST"]),
        service_route("/v1/identity/link", link, ["POST"]),
        service_route("/v1/identity/providers/{vi_user_id}", providers, ["GET"]),
    ]


def _documented_links(links: list[tuple[str, str]]) -> list[dict]:
    return [{"provider": provider, "provider_user_id": external} for provider, external in links]


def _alternate_routes(service: StagingService, service_route) -> list[Route]:
    def reply_data(result: ChatResult) -> dict:
        relationship = result.relationship
        return {
            "id": result.record_id,
            "reply": {"text": result.answer, "category": "clarification" if result.ambiguous else "answer"},
            "relationship": None
            if relationship is None
            else {
                "type": relationship.relationship_type,
                "voice": relationship.voice_profile,
                "trust": relationship.trust_level,
            },
        }

    async def run_reply(context: RequestContext) -> ChatResult:
        user = context.request.headers.get(ALTERNATE_USER_HEADER)
        if not user:
            raise BadRequest("header X-Vi-User is required")
        body = await context.json_body("text")
        return await service.chat(user, body["text"], context.request_id, context.rng)

    async def status(context: RequestContext) -> Response:
        features = {
            "ambiguity_gate": FEATURES["ambiguityGateEnabled"],
            "relationship_model": FEATURES["relationshipModelEnabled"],
            "identity_spine": FEATURES["identitySpineEnabled"],
            "continuity_required": FEATURES["continuityPackRequired"],
        }
        return JSONResponse({"service": {"state": "up", "features": features}})

    async def reply(context: RequestContext) -> Response:
        result = await run_reply(context)
        if result.status_code != 200:
            return JSONResponse({"errors": [{"code": "internal"}]}, result.status_code)
        return JSONResponse({"data": reply_data(result)})

    async def reply_stream(context: RequestContext) -> Response:
        result = await run_reply(context)
        if result.status_code != 200:
            return JSONResponse({"errors": [{"code": "internal"}]}, result.status_code)
        events = [{"event": "reply.start", "data": {"id": result.record_id}}]
        events += [{"event": "reply.delta", "data": {"text": chunk}} for chunk in _chunks(result.answer)]
        events.append({"event": "reply.done", "data": reply_data(result)})
        return _stream(context, events)

    async def resolve(context: RequestContext) -> Response:
        body = await context.json_body("source", "external_id")
        create = body.get("create", False)
        if not isinstance(create, bool):
            raise BadRequest("field 'create' must be a boolean")
        op = "create" if create else "resolve"
        account_id = service.resolve_identity(
            body["source"], body["external_id"], context.request_id, op, create=create
        )
        return JSONResponse({"account": {"id": account_id}})

    async def add_link(context: RequestContext) -> Response:
        body = await context.json_body("source", "external_id")
        account_id = context.request.path_params["account_id"]
        links = service.link_identity(account_id, body["source"], body["external_id"], context.request_id)
        return JSONResponse({"account": {"id": account_id}, "links": _alternate_links(links)})

    async def list_links(context: RequestContext) -> Response:
        links = service.lookup_identity(context.request.path_params["account_id"], context.request_id)
        return JSONResponse({"links": _alternate_links(links)})

    async def links(context: RequestContext) -> Response:
        handler = add_link if context.request.method == "POST" else list_links
        return await handler(context)

    return [
        service_route("/api/v2/status", status, ["GET"], open_route=True),
        service_route("/api/v2/conversations/reply", reply, ["POST"]),
        service_route("/api/v2/conversations/reply/stream", reply_stream, ["POST"]),
        service_route("/api/v2/accounts/resolve", resolve, ["POST"]),
        service_route("/api/v2/accounts/{account_id}/links", links, ["GET", "POST"]),
    ]


def _alternate_links(links: list[tuple[str, str]]) -> list[dict]:
    return [{"source": provider, "external_id": external} for provider, external in links]


def _sparse_routes(service: StagingService, service_route) -> list[Route]:
    """Less than the docs promise: health without feature flags, answers without relationship context,
    identity by a GET that creates on first resolve. Chat and identity calls need a device UUID header;
    a chat user stays bound to the first one it sent (another one is refused with 409)."""
    devices: dict[str, str] = {}

    def device_id(context: RequestContext) -> str:
        device = context.request.headers.get(SPARSE_DEVICE_HEADER, "")
        try:
            uuid.UUID(device)
        except ValueError:
            raise BadRequest("header X-Device-Id must be a UUID") from None
        return device

    def answer(result: ChatResult) -> dict:
        return {"id": result.record_id, "reply": result.answer, "needs_clarification": result.ambiguous}

    async def run_chat(context: RequestContext) -> ChatResult:
        user = context.request.headers.get(SPARSE_USER_HEADER)
        if not user:
            raise BadRequest("header X-User is required")
        if devices.setdefault(user, device_id(context)) != device_id(context):
            raise IdentityError(409, f"user {user} is bound to another device")
        body = await context.json_body("message")
        return await service.chat(user, body["message"], context.request_id, context.rng)

    async def health(context: RequestContext) -> Response:
        return JSONResponse({"status": "ok", "version": "1.1.0"})

    async def chat(context: RequestContext) -> Response:
        result = await run_chat(context)
        if result.status_code != 200:
            return JSONResponse({"error": "internal"}, result.status_code)
        return JSONResponse(answer(result))

    async def chat_stream(context: RequestContext) -> Response:
        result = await run_chat(context)
        if result.status_code != 200:
            return JSONResponse({"error": "internal"}, result.status_code)
        events: list[dict] = [{"delta": chunk} for chunk in _chunks(result.answer)]
        events.append({"done": True, **answer(result)})
        return _stream(context, events)

    async def resolve(context: RequestContext) -> Response:
        provider = context.request.query_params.get("provider")
        external_id = context.request.query_params.get("external_id")
        if not provider or not external_id:
            raise BadRequest("query parameters provider and external_id are required")
        device_id(context)
        user_id = service.resolve_identity(provider, external_id, context.request_id, None, create=True)
        return JSONResponse({"user": {"id": user_id}})

    async def links(context: RequestContext) -> Response:
        user_id = context.request.path_params["user_id"]
        if context.request.method == "POST":
            body = await context.json_body("provider", "external_id")
            found = service.link_identity(user_id, body["provider"], body["external_id"], context.request_id)
        else:
            found = service.lookup_identity(user_id, context.request_id)
        return JSONResponse({"identities": _documented_links(found)})

    return [
        service_route("/healthz", health, ["GET"], open_route=True),
        service_route("/api/chat", chat, ["POST"]),
        service_route("/api/chat/stream", chat_stream, ["POST"]),
        service_route("/api/identity/resolve", resolve, ["GET"]),
        service_route("/api/identity/{user_id}/links", links, ["GET", "POST"]),
    ]
