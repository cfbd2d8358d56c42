"""The gateway's HTTP server: the routes clients call, and the wiring of the parts behind them.

Each request is authenticated and rate-limited (``keys``), routed by the traffic table the
operator writes (``routing``), shed when ``max_in_flight`` requests are in progress, copied to
mirrored revisions (``mirror``, compared by ``shadow``), sent with retries behind circuit breakers
(``proxy``), and counted (``metrics``). This module turns HTTP into those calls and their
answers back into HTTP; client input it cannot use is a 4xx with a JSON error body, here, before
anything is routed. Errors as JSON bodies, the health and metrics endpoints are the serving
runtime's (``cutover.serving.http``).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from cutover.api.contract import GATEWAY_PORT, REQUEST_ID_HEADER, REVISION_HEADER

from ..errors import InvalidInput
from ..http import (
    INLINE_BYTES,
    OWN_DECODING,
    EventStream,
    json_body,
    json_errors,
    live,
    prometheus,
    readiness,
    request_body,
)
from ..openai import error_body, error_object, event
from ..protocol import HEADER_LENGTH, decode_index_request
from ..tracing import TRACE_HEADERS, Tracing, propagated
from ..tracing import middleware as tracing_middleware
from .feedback import DEFAULT_CAPACITY, DEFAULT_WINDOW, MAX_BODY_BYTES, Feedback, parse
from .keys import DEFAULT_TIERS, ApiKey, Denied, KeyStore, Limiter, Tier, authorize, forbidden, retry_after_header
from .metrics import GatewayMetrics
from .mirror import Mirrors, mirrored_copy
from .proxy import Answer, Outgoing, Proxy, error_answer
from .routing import Resolver, Route, RoutingTable, choose, for_version, mirrors_for, unknown_version
from .upstream import Disconnected, Upstream

log = logging.getLogger("cutover.gateway")
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept-Encoding", HEADER_LENGTH, REQUEST_ID_HEADER, *TRACE_HEADERS)
"""Content-Encoding is not among them: ``http.request_body`` decodes the body it names, and the
decoded body is what goes on (with its own Content-Length). ``traceparent`` goes on as sent while
the gateway does not trace; tracing, each attempt sends its own span's."""
SERVER_NAME = "cutover-gateway"
"""The server metadata's name, over HTTP (``GET /v2``) and gRPC (``gateway/grpc_proxy.py``)."""
STICKY_COOKIE_ATTRIBUTES = "Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax"
"""The A/B assignment cookie: the whole site, 30 days, out of scripts' reach."""


@dataclass
class GatewayConfig:
    host: str = "0.0.0.0"
    port: int = GATEWAY_PORT
    retries: int = 1
    """Extra attempts per request, on another healthy revision when there is one."""
    backend_timeout: float = 30.0
    max_in_flight: int = 4096
    max_mirrors_in_flight: int = 256
    """Mirrored requests in progress beyond which mirroring is skipped (never queued)."""
    breaker_failures: int = 5
    breaker_open_seconds: float = 10.0
    max_request_bytes: int = 64 << 20
    grpc_port: int | None = None
    """The Open Inference Protocol's gRPC port (``gateway/grpc_proxy.py``; 0 picks one); None: no gRPC."""
    auth: bool = True
    tiers: dict[str, Tier] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    shutdown_delay: float = 0.0
    shutdown_grace: float = 30.0
    otlp_endpoint: str | None = None
    """The OTLP/HTTP collector's base URL spans are exported to (``serving/tracing.py``); None: no tracing."""
    feedback_window: float = DEFAULT_WINDOW
    """Seconds after an answer during which its ground truth is taken (``gateway/feedback.py``)."""
    feedback_max_answers: int = DEFAULT_CAPACITY
    """Rows of answers kept for feedback (an answer of n rows counts n), oldest dropped first: the
    store's memory bound."""


def model_name(body: bytes) -> str | None:
    """The ``model`` of a chat completion request body; None when the body is not a JSON object
    naming one (not JSON, not UTF-8, nested too deep to parse)."""
    try:
        name = json.loads(body).get("model")
    except (ValueError, AttributeError, RecursionError):
        return None
    return name if isinstance(name, str) else None


def outgoing(request: web.Request, body: bytes, *, idempotent: bool) -> Outgoing:
    """The client's request as it goes on: method, path and query as sent, ``body`` (decoded),
    and the headers a revision reads."""
    headers = {k: v for k in FORWARDED_REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
    return Outgoing(request.method, request.rel_url.raw_path_qs, body, headers, idempotent)


class Gateway:
    """One gateway: its routing table, keys, limiter, proxy, mirrors and metrics, and the
    aiohttp application (``app()``) that serves them; ``tracing`` is off unless given."""

    def __init__(self, config: GatewayConfig, tracing: Tracing | None = None) -> None:
        self.config = config
        self.tracing = tracing or Tracing()
        self.metrics = GatewayMetrics()
        self.keys = KeyStore()
        self.limiter = Limiter(tiers=config.tiers)
        self.routing = RoutingTable()
        self._upstream = Upstream()
        self.proxy = Proxy(config, self._upstream, self.metrics, self.tracing)
        self.mirrors = Mirrors(config, self._upstream, self.metrics, self.tracing)
        self.feedback = Feedback(self.metrics, capacity=config.feedback_max_answers, window=config.feedback_window)
        self._breakers = self.proxy.breakers
        """The proxy's breakers, by backend URL (tests read them)."""
        self._mirrors = self.mirrors.tasks
        """The mirrors in progress (tests wait for them)."""
        self.in_flight = 0
        self.unlisted: set[tuple[str, str | None]] = {("md", None)}
        """The (kind, namespace) lists still to come, "md" or "keys"; ready once none is left (watch() sets them)."""
        self.draining = False

    # ---- the routing table -----------------------------------------------------------------

    @property
    def routes(self) -> dict[str, Route]:
        """By the model name clients call."""
        return self.routing.routes

    def set_resolver(self, resolve: Resolver) -> None:
        self.routing.set_resolver(resolve)

    def replace_deployments(self, objects: Iterable[Mapping[str, Any]], namespace: str | None = None) -> None:
        """After a (re)list: every ModelDeployment of ``namespace`` (all when None)."""
        self.routing.replace(objects, namespace)

    def update_deployment(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        self.routing.update(obj, deleted)

    async def close(self) -> None:
        self.mirrors.cancel()
        await self._upstream.close()

    # ---- the request path, free of HTTP -----------------------------------------------------

    async def forward(
        self, route: Route, request: Outgoing, headers: Mapping[str, str], cookies: Mapping[str, str]
    ) -> Answer:
        """The answer to ``request`` on ``route``: shed at capacity (503), else chosen by weight
        or sticky assignment (``headers``, ``cookies``), mirrored, and proxied with retries; an
        inference answer kept for feedback when the route takes it (``gateway/feedback.py``)."""
        if self.in_flight >= self.config.max_in_flight:
            self.metrics.shed()
            return error_answer(503, f"overloaded: {self.in_flight} requests in progress", {"Retry-After": "1"})
        self.in_flight += 1
        answer: Answer | None = None
        try:
            choice = choose(route, headers, cookies, healthy=self.proxy.healthy)
            mirrors = mirrors_for(route, choice.backend) if route.mirrors else []
            live: asyncio.Future[Answer] | None = None
            if mirrors:
                live = asyncio.get_running_loop().create_future()
                copy = mirrored_copy(request)
                for mirror in mirrors:
                    self.mirrors.start(route, mirror, copy, live)
            try:
                answer = await self.proxy.forward(route, choice.backend, request)
            except BaseException:
                if live is not None:  # the client left (a gRPC deadline): no answer to compare the mirrors' with
                    live.set_result(error_answer(499, "the client closed the request"))
                raise
            if live is not None and answer.stream is not None:
                answer.live = live  # set once the stream has been sent on whole
            elif live is not None:
                live.set_result(answer)
            if choice.set_cookie is not None and answer.status < 500:
                name, value = choice.set_cookie
                answer.headers["Set-Cookie"] = f"{name}={value}; {STICKY_COOKIE_ATTRIBUTES}"
            if route.feedback is not None and answer.status == 200 and request.path.split("?")[0].endswith("/infer"):
                self.feedback.keep(route, answer)  # over HTTP and gRPC (gateway/grpc_proxy.py) alike
            return answer
        finally:
            if answer is None or answer.stream is None:  # a stream is in flight until sent on (_stream)
                self.in_flight -= 1

    # ---- HTTP ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.max_request_bytes,
            middlewares=[tracing_middleware(self.tracing, _routed), json_errors(body=error_body)],
            handler_args=OWN_DECODING,
        )
        app.router.add_get("/v2/health/live", live)
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/v2", server_metadata)
        app.router.add_get("/metrics", prometheus(self.metrics.registry))
        app.router.add_get("/gateway/routes", self.table)
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            app.router.add_get(prefix, self.model)
            app.router.add_get(prefix + "/ready", self.model)
            app.router.add_get(prefix + "/config", self.model)
            app.router.add_get(prefix + "/stats", self.model)
            app.router.add_post(prefix + "/infer", self.model)
            app.router.add_post(prefix + "/explain", self.explain)
        app.router.add_post("/v2/models/{name}/feedback", self.give_feedback)
        app.router.add_post("/v2/repository/index", self.repository_index)
        # The revision refuses loading and unloading with its reason (the operator owns models).
        app.router.add_post("/v2/repository/models/{name}/{action:load|unload}", self.model)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def ready(self, request: web.Request) -> web.Response:
        """Ready once every watched list has arrived, until draining."""
        if self.draining or self.unlisted:
            names = {"md": "ModelDeployments", "keys": "API keys"}
            waiting = ", ".join(sorted(f"{names[kind]} in {ns or 'all namespaces'}" for kind, ns in self.unlisted))
            return readiness("shutting down" if self.draining else f"waiting for the first list of {waiting}")
        return readiness(None, models=len(self.routes))

    def authorize(self, headers: Mapping[str, str], route: Route | None, model: str | None) -> ApiKey | None:
        """The caller's key (None with auth off) if the request may go on now; raises ``Denied``
        (401, 403, 429) otherwise, counted. ``headers`` are matched case-insensitively when they
        are a ``CIMultiDict`` (HTTP's headers, gRPC's metadata in ``gateway/grpc_proxy.py``)."""
        if not self.config.auth:
            return None
        try:
            return authorize(self.keys, self.limiter, headers, model, route.min_tier if route else None)
        except Denied as denied:
            self.metrics.refused(denied)
            raise

    async def table(self, request: web.Request) -> web.Response:
        try:
            key = self.authorize(request.headers, None, None)
        except Denied as denied:
            return _refused(denied)
        if self.config.auth and (key is None or key.tier != "admin"):
            return _respond(error_answer(403, "the routing table needs an admin key"))
        table = {
            model: {
                "namespace": r.namespace,
                "deployment": r.deployment,
                "backends": [vars(b) | {"healthy": self.proxy.healthy(b)} for b in r.backends],
                "mirrors": [vars(b) for b in r.mirrors],
                "assignment": vars(r.assignment) if r.assignment else None,
            }
            for model, r in self.routes.items()
        }
        return json_body(table)

    async def repository_index(self, request: web.Request) -> web.Response:
        """Triton's model repository index of the models the gateway routes and the caller's key
        may call: one entry per model and version, READY while a revision serving it is healthy
        (its circuit not open), else UNAVAILABLE. The body may be empty or ``{"ready": true}``."""
        try:
            key = self.authorize(request.headers, None, None)
        except Denied as denied:
            return _refused(denied)
        ready_only = decode_index_request(await request_body(request, self.config.max_request_bytes))
        return json_body(self.index(key, ready_only=ready_only))

    def index(self, key: ApiKey | None, *, ready_only: bool = False) -> list[dict[str, str]]:
        """The repository index ``key`` may see (all with auth off): name, version, state
        (READY or UNAVAILABLE) and the reason; only the READY entries with ``ready_only``."""
        index = []
        for model, route in sorted(self.routes.items()):
            if key is not None and forbidden(key, self.limiter.tiers, model, route.min_tier) is not None:
                continue
            healthy: dict[str, bool] = {}
            for backend in route.backends:
                version = backend.version or ""
                healthy[version] = healthy.get(version, False) or self.proxy.healthy(backend)
            for version, up in sorted(healthy.items()):
                if up or not ready_only:
                    reason = "" if up else "every revision serving it is failing (circuit open)"
                    index.append(
                        {"name": model, "version": version, "state": "READY" if up else "UNAVAILABLE", "reason": reason}
                    )
        return index

    def _route(self, request: web.Request) -> Route | web.Response:
        """The route of the model (and version) a request names, once its key may call it; else
        the refusal to answer."""
        name = request.match_info["name"]
        route = self.routes.get(name)
        try:
            self.authorize(request.headers, route, name)
        except Denied as denied:
            return _refused(denied)
        if route is None:
            return _respond(error_answer(404, f"unknown model {name!r}"))
        version = request.match_info.get("version")
        if version is not None:
            # Only a revision serving that version can answer: never split it by weight.
            pinned = for_version(route, version)
            if pinned is None:
                return _respond(error_answer(404, unknown_version(route, name, version)))
            route = pinned
        return route

    async def model(self, request: web.Request) -> web.Response:
        route = self._route(request)
        if isinstance(route, web.Response):
            return route
        body = await request_body(request, self.config.max_request_bytes) if request.method == "POST" else b""
        sent = outgoing(request, body, idempotent=True)
        return _respond(await self.forward(route, sent, request.headers, request.cookies))

    async def explain(self, request: web.Request) -> web.Response:
        """An explanation (``serving/explain.py``) by the revision that would answer the same
        infer: the one named in ``Cutover-Revision`` (every answer carries it, so a client
        explains the answer it got; 404 once that revision is no longer live), else the one infer
        would choose (weights, sticky header or cookie). One attempt, never mirrored, outside the
        request series and circuit breakers (``Proxy.once``)."""
        route = self._route(request)
        if isinstance(route, web.Response):
            return route
        revision = request.headers.get(REVISION_HEADER)
        if revision:
            backend = next((b for b in route.backends if b.revision == revision), None)
            if backend is None:
                live = ", ".join(b.revision for b in route.backends) or "none"
                message = f"revision {revision!r} of model {route.model!r} is not live; live revisions: {live}"
                return _respond(error_answer(404, message))
        else:
            backend = choose(route, request.headers, request.cookies, healthy=self.proxy.healthy).backend
        body = await request_body(request, self.config.max_request_bytes)
        return _respond(await self.proxy.once(backend, outgoing(request, body, idempotent=True)))

    async def give_feedback(self, request: web.Request) -> web.Response:
        """Ground truth for answers of the model (``gateway/feedback.py``): the key must be one
        that may call the model. A body of more than INLINE_BYTES is parsed on a thread, so the
        answers the gateway forwards meanwhile are not held behind it."""
        route = self._route(request)
        if isinstance(route, web.Response):
            return route
        if route.feedback is None:
            message = f"model {route.model!r} takes no feedback: its ModelDeployment does not set spec.feedback"
            return _respond(error_answer(404, message))
        try:
            body = await request_body(request, min(MAX_BODY_BYTES, self.config.max_request_bytes))
            items, batch = await asyncio.to_thread(parse, body) if len(body) > INLINE_BYTES else parse(body)
            status, answer = self.feedback.take(route, items, batch)
        except InvalidInput as error:
            return _respond(error_answer(400, str(error)))
        return json_body(answer, status=status)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """An OpenAI chat completion, whole or streamed (sent on as it arrives); the gateway's
        own errors here are OpenAI's error object, as the revisions' are."""
        body = await request_body(request, self.config.max_request_bytes)
        name = model_name(body)
        route = self.routes.get(name) if name is not None else None
        try:
            self.authorize(request.headers, route, name)
        except Denied as denied:
            return _openai(_refusal(denied))
        if name is None:
            return _openai(error_answer(400, "the request needs a JSON body with a model name"))
        if route is None:
            return _openai(error_answer(404, f"unknown model {name!r}"))
        sent = replace(outgoing(request, body, idempotent=False), streams=True)
        answer = await self.forward(route, sent, request.headers, request.cookies)
        if answer.stream is None:
            return _openai(answer)
        return await self._stream(request, answer)

    async def _stream(self, request: web.Request, answer: Answer) -> web.StreamResponse:
        """Send a streamed answer on piece by piece as the revision writes it (its headers with the
        first piece, ``EventStream``). A revision that
        breaks off, or is silent for ``backend_timeout`` seconds, ends it with an error event
        (the status was sent with the first byte; the revision counts its own failure); a
        client that leaves closes the revision's connection. The request is in flight until the
        end, and the answer's mirrors get it whole then."""
        assert answer.stream is not None and answer.backend is not None
        response = EventStream(status=answer.status, headers=propagated(answer.headers))  # when traced
        pieces: list[bytes] = []
        status = answer.status
        try:
            await response.prepare(request)
            try:
                async for piece in answer.stream.pieces(self.config.backend_timeout):
                    if answer.live is not None:
                        pieces.append(piece)
                    await response.send(piece)
                await response.finish()
            except (Disconnected, TimeoutError) as error:
                status = 504 if isinstance(error, TimeoutError) else 502
                failure = f"revision {answer.backend.revision} {'went silent' if status == 504 else error} mid-stream"
                log.warning("%s", failure)
                await response.write_eof(event(error_object(status, failure)))
        except ConnectionResetError:
            log.info("a client left a stream from revision %s", answer.backend.revision)
        finally:
            response.abandon()  # nothing, once written whole
            answer.stream.close()
            self.in_flight -= 1
            if answer.live is not None:
                answer.live.set_result(replace(answer, status=status, body=b"".join(pieces), stream=None))
        return response


async def server_metadata(request: web.Request) -> web.Response:
    """``GET /v2``: the gateway's own server metadata, which clients such as perf_analyzer ask for
    before anything else (it answered 404). No extensions are claimed here: what a model offers
    is its revisions', and each model's routes (``/config``, ``/stats``) are theirs."""
    return json_body({"name": SERVER_NAME, "version": importlib.metadata.version("cutover"), "extensions": []})


def _routed(request: web.Request) -> bool:
    """Whether a request goes to a model's revisions (traced), rather than to the gateway itself."""
    return request.path.startswith("/v2/models/") or request.path == "/v1/chat/completions"


def _refused(denied: Denied) -> web.Response:
    """401, 403, or 429 with the seconds until a token or the next day's quota."""
    return _respond(_refusal(denied))


def _refusal(denied: Denied) -> Answer:
    headers = {"Retry-After": retry_after_header(denied.retry_after)} if denied.retry_after else None
    return error_answer(denied.status, str(denied), headers)


def _openai(answer: Answer) -> web.Response:
    """``answer``, with the gateway's own error (not a revision's answer) as OpenAI's error object."""
    if answer.backend is None and answer.status >= 400:
        body = error_object(answer.status, json.loads(answer.body)["error"])
        answer = replace(answer, body=json.dumps(body).encode())
    return _respond(answer)


def _respond(answer: Answer) -> web.Response:
    return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
