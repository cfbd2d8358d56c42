"""The gateway's HTTP server: authenticate, rate-limit, route by the traffic table, mirror,
proxy with pooled connections, retry where it is safe, break circuits, shed load, drain.

Retries are safe when the backend cannot have acted on the request: the connection was refused,
or it answered 503 (shedding or draining). A connection dropped mid-request is retried for
inference (it has no side effects) but not for chat (an upstream LLM may have spent the
tokens). Timeouts are never retried. Each attempt is counted against the revision that made it,
so a failing candidate shows in the rollout analysis even when a retry hid it from the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from cutover.api.contract import GATEWAY_REQUEST_DURATION, GATEWAY_REQUESTS, LATENCY_BUCKETS, SHADOW_COMPARISONS

from ..breaker import CircuitBreaker
from ..fallback import REVISION_HEADER
from ..metrics import BREAKER_STATES
from ..protocol import HEADER_LENGTH
from .keys import DEFAULT_TIERS, ApiKey, Denied, KeyStore, Limiter, Tier, authorize, retry_after_header
from .routing import Backend, Route, choose, for_version, mirrors_for, route_from
from .shadow import Outcome, compare_chat, compare_inference
from .upstream import ConnectFailed, Disconnected, Upstream, UpstreamError

log = logging.getLogger("cutover.gateway")
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept-Encoding", HEADER_LENGTH, "X-Request-Id")
"""Content-Encoding is not among them: aiohttp decodes the body it names, and the decoded body is
what goes on (with its own Content-Length)."""
DECODED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})
"""Request Content-Encodings the gateway reads (aiohttp decodes gzip, deflate, br and zstd)."""
FORWARDED_RESPONSE_HEADERS = tuple(
    (name, name.lower()) for name in ("Content-Type", "Content-Encoding", HEADER_LENGTH, REVISION_HEADER, "Retry-After")
)
DIVERGENCE_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
VERSION_SEGMENT = re.compile(r"^(/v2/models/[^/?]+)/versions/[^/?]+")
"""The ``/versions/{version}`` part of an Open Inference Protocol path."""


@dataclass
class GatewayConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    retries: int = 1
    """Extra attempts per request, on another healthy revision when there is one."""
    backend_timeout: float = 30.0
    max_in_flight: int = 4096
    max_mirrors_in_flight: int = 256
    """Mirrored requests in progress beyond which mirroring is skipped (never queued)."""
    breaker_failures: int = 5
    breaker_open_seconds: float = 10.0
    max_request_bytes: int = 64 << 20
    auth: bool = True
    tiers: dict[str, Tier] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    shutdown_delay: float = 0.0
    shutdown_grace: float = 30.0


class GatewayMetrics:
    """Labels namespace, model (the model's name), revision and role, as the analysis reads them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # The series the analysis engine reads are named in the contract (cutover.api.contract).
        requests, duration = GATEWAY_REQUESTS, GATEWAY_REQUEST_DURATION
        self._requests = Counter(requests.name, requests.help, requests.labels, registry=self.registry)
        self._duration = Histogram(
            duration.name, duration.help, duration.labels, buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.rate_limited = Counter(
            "cutover_gateway_rate_limited",
            "Requests refused over a rate limit or quota",
            ["tier"],
            registry=self.registry,
        )
        self.denied = Counter("cutover_gateway_denied", "Requests refused by auth", ["code"], registry=self.registry)
        self.retries = Counter("cutover_gateway_retries", "Attempts retried", ["reason"], registry=self.registry)
        self.shed = Counter(
            "cutover_gateway_shed", "Requests shed because the gateway is saturated", registry=self.registry
        )
        comparisons = SHADOW_COMPARISONS
        self._comparisons = Counter(comparisons.name, comparisons.help, comparisons.labels, registry=self.registry)
        self._divergence = Histogram(
            "cutover_gateway_shadow_divergence",
            "Largest absolute difference between mirrored and live outputs",
            ["namespace", "model", "revision"],
            buckets=DIVERGENCE_BUCKETS,
            registry=self.registry,
        )
        self.mirror_skipped = Counter(
            "cutover_gateway_mirror_skipped", "Mirrors skipped at capacity", registry=self.registry
        )
        self._breaker = Gauge(
            "cutover_gateway_circuit_breaker_state",
            "0 closed, 1 half-open, 2 open",
            ["namespace", "model", "revision"],
            registry=self.registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def request(self, route: Route, backend: Backend, code: int, seconds: float) -> None:
        values = (route.namespace, route.model, backend.revision, backend.role)
        self._child(self._requests, *values, str(code)).inc()
        self._child(self._duration, *values).observe(seconds)

    def comparison(self, route: Route, backend: Backend, outcome: Outcome) -> None:
        values = (route.namespace, route.model, backend.revision)
        self._child(self._comparisons, *values, str(outcome.agree).lower()).inc()
        if outcome.divergence is not None:
            self._child(self._divergence, *values).observe(outcome.divergence)

    def breaker(self, route: Route, backend: Backend, state: str) -> None:
        value = BREAKER_STATES[str(state)]
        self._child(self._breaker, route.namespace, route.model, backend.revision).set(value)


@dataclass(frozen=True)
class Outgoing:
    """The client's request as it goes to a revision (and, copied, to its mirrors)."""

    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    idempotent: bool
    """Whether it may be resent after a dropped connection (inference yes, chat no)."""


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]
    backend: Backend | None


class BadRequest(Exception):
    """Client input the gateway refuses before routing it; ``status`` is the 4xx to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def request_body(request: web.Request) -> bytes:
    """The request's body, decoded from its Content-Encoding. Raises ``BadRequest``: 415 for an
    encoding the gateway cannot decode, 400 for a body that does not decode as it says."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in DECODED_ENCODINGS:
        raise BadRequest(415, f"Content-Encoding {encoding!r} is not supported; send gzip, deflate, br, zstd or none")
    try:
        return await request.read()
    except RequestPayloadError as error:
        reason = " ".join(str(error).split())
        raise BadRequest(400, f"the request body cannot be read: {reason}") from None


def model_name(body: bytes) -> str | None:
    """The ``model`` of a chat completion request body; None when the body is not a JSON object
    naming one (not JSON, not UTF-8, nested too deep to parse)."""
    try:
        name = json.loads(body).get("model")
    except (ValueError, AttributeError, RecursionError):
        return None
    return name if isinstance(name, str) else None


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(
        status, json.dumps({"error": message}).encode(), {"Content-Type": "application/json", **(headers or {})}, None
    )


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self.keys = KeyStore()
        self.limiter = Limiter(tiers=config.tiers)
        self.routes: dict[str, Route] = {}
        """By the model name clients call."""
        self._objects: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._resolve: Callable[[str, str], str | None] = lambda namespace, service: (
            f"http://{service}.{namespace}.svc:8080"
        )
        self._breakers: dict[str, CircuitBreaker] = {}
        self._upstream = Upstream()
        self._mirrors: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self.unlisted: set[tuple[str, str | None]] = {("md", None)}
        """The (kind, namespace) lists still to come, "md" or "keys"; ready once none is left (watch() sets them)."""
        self.draining = False

    # ---- the routing table -----------------------------------------------------------------

    def set_resolver(self, resolve: Callable[[str, str], str | None]) -> None:
        self._resolve = resolve
        self._rebuild()

    def replace_deployments(self, objects: Iterable[Mapping[str, Any]], namespace: str | None = None) -> None:
        """After a (re)list: every ModelDeployment of ``namespace`` (all when None)."""
        for key in [k for k in self._objects if namespace is None or k[0] == namespace]:
            del self._objects[key]
        for obj in objects:
            meta = obj.get("metadata", {})
            self._objects[(meta.get("namespace", ""), meta.get("name", ""))] = obj
        self._rebuild()

    def update_deployment(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        meta = obj.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if deleted:
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        self._rebuild()

    def _rebuild(self) -> None:
        routes: dict[str, Route] = {}
        for key in sorted(
            self._objects, key=lambda k: self._objects[k].get("metadata", {}).get("creationTimestamp", "")
        ):
            route = route_from(self._objects[key], self._resolve)
            if route is None:
                continue
            if route.model in routes:
                log.warning(
                    "model %r is served by %s/%s and %s/%s; routing to the older",
                    route.model,
                    routes[route.model].namespace,
                    routes[route.model].deployment,
                    route.namespace,
                    route.deployment,
                )
                continue
            routes[route.model] = route
        self.routes = routes

    # ---- backends --------------------------------------------------------------------------

    def _breaker(self, backend: Backend) -> CircuitBreaker:
        breaker = self._breakers.get(backend.url)
        if breaker is None:
            breaker = self._breakers[backend.url] = CircuitBreaker(
                self.config.breaker_failures, self.config.breaker_open_seconds
            )
        return breaker

    def _healthy(self, backend: Backend) -> bool:
        breaker = self._breakers.get(backend.url)
        return breaker is None or breaker.state != "open"

    async def close(self) -> None:
        for task in list(self._mirrors):
            task.cancel()
        await self._upstream.close()

    # ---- HTTP ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_request_bytes, middlewares=[self._errors])
        app.router.add_get("/v2/health/live", self.live)
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/gateway/routes", self.table)
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            app.router.add_get(prefix, self.model)
            app.router.add_get(prefix + "/ready", self.model)
            app.router.add_get(prefix + "/config", self.model)
            app.router.add_post(prefix + "/infer", self.model)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return web.json_response({"error": error.reason}, status=error.status)
        except BadRequest as error:
            return web.json_response({"error": str(error)}, status=error.status)
        except Exception as error:
            log.exception("%s %s failed", request.method, request.path)
            return web.json_response({"error": f"internal error: {error}"}, status=500)

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        if self.draining or self.unlisted:
            names = {"md": "ModelDeployments", "keys": "API keys"}
            waiting = ", ".join(sorted(f"{names[kind]} in {ns or 'all namespaces'}" for kind, ns in self.unlisted))
            reason = "shutting down" if self.draining else f"waiting for the first list of {waiting}"
            return web.json_response({"ready": False, "error": reason}, status=503)
        return web.json_response({"ready": True, "models": len(self.routes)})

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _authorize(self, request: web.Request, route: Route | None, model: str | None) -> ApiKey | None:
        if not self.config.auth:
            return None
        try:
            return authorize(self.keys, self.limiter, request.headers, model, route.min_tier if route else None)
        except Denied as denied:
            if denied.status == 429:
                self.metrics.rate_limited.labels(denied.tier).inc()
            else:
                self.metrics.denied.labels(str(denied.status)).inc()
            raise

    async def table(self, request: web.Request) -> web.Response:
        try:
            key = self._authorize(request, None, None)
        except Denied as denied:
            return _refused(denied)
        if self.config.auth and (key is None or key.tier != "admin"):
            return _respond(_error(403, "the routing table needs an admin key"))
        table = {
            model: {
                "namespace": r.namespace,
                "deployment": r.deployment,
                "backends": [vars(b) | {"healthy": self._healthy(b)} for b in r.backends],
                "mirrors": [vars(b) for b in r.mirrors],
                "assignment": vars(r.assignment) if r.assignment else None,
            }
            for model, r in self.routes.items()
        }
        return web.json_response(table)

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        route = self.routes.get(name)
        try:
            self._authorize(request, route, name)
        except Denied as denied:
            return _refused(denied)
        if route is None:
            return _respond(_error(404, f"unknown model {name!r}"))
        version = request.match_info.get("version")
        if version is not None:
            # Only a revision serving that version can answer: never split it by weight.
            pinned = for_version(route, version)
            if pinned is None:
                served = ", ".join(sorted({repr(b.version) for b in route.backends if b.version is not None}))
                return _respond(
                    _error(404, f"unknown version {version!r} of model {name!r}; live versions: {served or 'none'}")
                )
            route = pinned
        body = await request_body(request) if request.method == "POST" else b""
        return _respond(await self._proxy(route, request, body, idempotent=True))

    async def chat(self, request: web.Request) -> web.Response:
        body = await request_body(request)
        name = model_name(body)
        route = self.routes.get(name) if name is not None else None
        try:
            self._authorize(request, route, name)
        except Denied as denied:
            return _refused(denied)
        if name is None:
            return _respond(_error(400, "the request needs a JSON body with a model name"))
        if route is None:
            return _respond(_error(404, f"unknown model {name!r}"))
        return _respond(await self._proxy(route, request, body, idempotent=False))

    async def _proxy(self, route: Route, request: web.Request, body: bytes, *, idempotent: bool) -> Answer:
        if self.in_flight >= self.config.max_in_flight:
            self.metrics.shed.inc()
            return _error(503, f"overloaded: {self.in_flight} requests in progress", {"Retry-After": "1"})
        self.in_flight += 1
        try:
            choice = choose(route, request.headers, request.cookies, healthy=self._healthy)
            outgoing = Outgoing(
                request.method,
                request.rel_url.raw_path_qs,
                body,
                {k: v for k in FORWARDED_REQUEST_HEADERS if (v := request.headers.get(k)) is not None},
                idempotent,
            )
            mirrors = mirrors_for(route, choice.backend) if route.mirrors else []
            live: asyncio.Future[Answer] | None = None
            if mirrors:
                live = asyncio.get_running_loop().create_future()
                # The copy asks for whatever the mirror serves: a version named in the path is
                # the live revision's, which the mirror may not serve.
                copy = replace(outgoing, path=VERSION_SEGMENT.sub(r"\1", outgoing.path, count=1))
                for mirror in mirrors:
                    self._start_mirror(route, mirror, copy, live)
            answer = await self._attempts(route, choice.backend, outgoing)
            if live is not None:
                live.set_result(answer)
            if choice.set_cookie is not None and answer.status < 500:
                name, value = choice.set_cookie
                answer.headers["Set-Cookie"] = f"{name}={value}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax"
            return answer
        finally:
            self.in_flight -= 1

    async def _attempts(self, route: Route, backend: Backend, outgoing: Outgoing) -> Answer:
        tried: list[Backend] = []
        answer: Answer | None = None
        for attempt in range(1 + self.config.retries):
            tried.append(backend)
            answer, retry_reason = await self._send(route, backend, outgoing)
            if retry_reason is None or attempt == self.config.retries:
                break
            self.metrics.retries.labels(retry_reason).inc()
            others = [b for b in route.backends if b not in tried and self._healthy(b)]
            backend = others[0] if others else backend
        assert answer is not None
        return answer

    async def _send(self, route: Route, backend: Backend, outgoing: Outgoing) -> tuple[Answer, str | None]:
        """One attempt; the answer, and why it may be retried (None: it may not)."""
        breaker = self._breaker(backend)
        if not breaker.allow():
            self.metrics.breaker(route, backend, breaker.state)
            return _error(
                503, f"revision {backend.revision} is failing; its circuit is open", {"Retry-After": "1"}
            ), "open"
        started = time.perf_counter()
        try:
            response = await self._upstream.request(
                outgoing.method,
                backend.url,
                outgoing.path,
                headers=outgoing.headers.items(),
                body=outgoing.body,
                timeout=self.config.backend_timeout,
            )
        except ConnectFailed as error:
            return self._failed(
                route, backend, breaker, 502, f"revision {backend.revision} unreachable: {error}", started
            ), "connect"
        except Disconnected as error:
            answer = self._failed(
                route, backend, breaker, 502, f"revision {backend.revision} dropped the connection: {error}", started
            )
            return answer, "disconnect" if outgoing.idempotent else None
        except TimeoutError:
            return self._failed(route, backend, breaker, 504, f"revision {backend.revision} timed out", started), None
        status = response.status
        out = {name: v for name, lower in FORWARDED_RESPONSE_HEADERS if (v := response.headers.get(lower)) is not None}
        before = breaker.state
        if status >= 500:
            breaker.record_failure()
        else:
            breaker.record_success()
        if breaker.state != before:
            self.metrics.breaker(route, backend, breaker.state)
        self.metrics.request(route, backend, status, time.perf_counter() - started)
        return Answer(status, response.body, out, backend), "shed" if status == 503 else None

    def _failed(
        self, route: Route, backend: Backend, breaker: CircuitBreaker, status: int, message: str, started: float
    ) -> Answer:
        breaker.record_failure()
        self.metrics.breaker(route, backend, breaker.state)
        self.metrics.request(route, backend, status, time.perf_counter() - started)
        log.warning("%s", message)
        return _error(status, message)

    # ---- mirroring -------------------------------------------------------------------------

    def _start_mirror(self, route: Route, mirror: Backend, outgoing: Outgoing, live: asyncio.Future[Answer]) -> None:
        if len(self._mirrors) >= self.config.max_mirrors_in_flight or outgoing.method != "POST":
            self.metrics.mirror_skipped.inc()
            return
        task = asyncio.create_task(self._mirror(route, mirror, outgoing, live))
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _mirror(self, route: Route, mirror: Backend, outgoing: Outgoing, live: asyncio.Future[Answer]) -> None:
        """Send the copy, wait for the live answer, compare; never touches the client's answer."""
        started = time.perf_counter()
        status, payload, length = 502, b"", None
        try:
            response = await self._upstream.request(
                "POST",
                mirror.url,
                outgoing.path,
                headers=outgoing.headers.items(),
                body=outgoing.body,
                timeout=self.config.backend_timeout,
            )
            status, payload, length = response.status, response.body, response.headers.get(HEADER_LENGTH.lower())
        except (UpstreamError, TimeoutError) as error:
            log.debug("mirror to %s failed: %s", mirror.revision, error)
        self.metrics.request(route, mirror, status, time.perf_counter() - started)
        answer = await live
        if answer.status != 200:
            return  # nothing to compare against
        outcome: Outcome | None = Outcome(False)  # the mirror failed where the live revision answered
        if status == 200:
            try:
                if outgoing.path.partition("?")[0].endswith("/chat/completions"):
                    outcome = compare_chat(answer.body, payload, route.comparison)
                else:
                    live_length = answer.headers.get(HEADER_LENGTH)
                    outcome = compare_inference(answer.body, live_length, payload, length, route.comparison)
            except Exception as error:  # a shape the comparison did not foresee: never agreement
                log.warning("comparing the answer of %s failed: %r", mirror.revision, error)
        if outcome is not None:  # None: the answers cannot be compared, and count neither way
            self.metrics.comparison(route, mirror, outcome)


def _refused(denied: Denied) -> web.Response:
    """401, 403, or 429 with the seconds until a token or the next day's quota."""
    headers = {"Retry-After": retry_after_header(denied.retry_after)} if denied.retry_after else None
    return _respond(_error(denied.status, str(denied), headers))


def _respond(answer: Answer) -> web.Response:
    return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
