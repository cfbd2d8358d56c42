"""Sending a client's request to a revision: one attempt, then retries where they are safe, each
revision behind its own circuit breaker.

Retries are safe when the backend cannot have acted on the request: the connection was refused,
or it answered 503 with ``Retry-After`` (shedding, or the model still loading; a 503 without it,
such as a SafetyPolicy that cannot be applied, is final). A connection dropped mid-request is retried for
inference (it has no side effects) but not for chat (an upstream LLM may have spent the
tokens). Timeouts are never retried. Each attempt is counted against the revision that made it,
so a failing candidate shows in the rollout analysis even when a retry hid it from the client.

A retry goes to another healthy revision of the route when there is one (the first in the
route's order not tried yet), else to the same one. A revision is healthy while its breaker is
not open; an open breaker refuses the attempt at once with a 503 (reason ``open``), which is
itself retried elsewhere.

A streamed answer (an event stream: ``stream: true`` chat) is handed on at its headers, its body
following as it arrives (``Answer.stream``); the retry decision is made on the status, before any
byte reaches the client, so nothing is retried once the client has part of an answer. Its attempt
is counted (and its breaker told) when the headers arrive, so its duration is the time to the
first byte; a revision that breaks off later is counted by the revision itself.

Nothing here knows HTTP servers: an ``Outgoing`` request goes in, an ``Answer`` comes out, and
every failure is an answer with the status the client gets (502 unreachable or dropped, 503
circuit open, 504 timed out) and a JSON error body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from cutover.api.contract import REVISION_HEADER

from ..breaker import CircuitBreaker
from ..compression import decoded
from ..protocol import HEADER_LENGTH
from ..tracing import SpanKind, Tracing, answered, propagated
from .metrics import GatewayMetrics
from .routing import Backend, Route
from .upstream import BodyStream, ConnectFailed, Disconnected, Upstream

log = logging.getLogger("cutover.gateway")
FORWARDED_RESPONSE_HEADERS = tuple(
    (name, name.lower()) for name in ("Content-Type", "Content-Encoding", HEADER_LENGTH, REVISION_HEADER, "Retry-After")
)
"""The revision's response headers the client gets: (as sent on, as the upstream parser keys them)."""


class RetryReason(StrEnum):
    """Why an attempt may be retried; the value is the ``reason`` label of ``cutover_gateway_retries_total``."""

    CONNECT = "connect"
    """No connection: the revision never saw the request."""
    DISCONNECT = "disconnect"
    """The connection dropped after the request was sent (retried only when idempotent)."""
    SHED = "shed"
    """The revision answered 503 with Retry-After: shedding load, or its model still loading."""
    OPEN = "open"
    """The revision's circuit is open: the attempt was not made."""


@dataclass(frozen=True)
class Outgoing:
    """The client's request as it goes to a revision (and, copied, to its mirrors)."""

    method: str
    path: str
    """Path and query, as the client sent them."""
    body: bytes
    headers: dict[str, str]
    idempotent: bool
    """Whether it may be resent after a dropped connection (inference yes, chat no)."""
    streams: bool = False
    """Whether an event-stream answer is handed on at its headers (``Answer.stream``: chat)."""


READ_ANSWER_BYTES = 4 << 20
"""The most bytes of an answer, decoded, that the gateway reads itself (4 MiB): to keep it for
feedback (``gateway/feedback.py``) or compare it with a mirror's (``gateway/mirror.py``). Reading
is JSON or tensor decoding on the event loop that every client's request waits on (about 15 ms a
MB of JSON, ``serving/offload.py``): a 36 MB answer would hold it about half a second. A
classifier's answer of a three-class row takes about 60 bytes, so the bound reads answers of some
70,000 rows."""


@dataclass
class Answer:
    """What the client gets: a revision's answer, or the gateway's own error (``backend`` None)."""

    status: int
    body: bytes
    headers: dict[str, str]
    backend: Backend | None
    stream: BodyStream | None = None
    """The body as it arrives, for a streamed answer (``body`` is empty then)."""
    live: asyncio.Future[Answer] | None = None
    """For a streamed answer that is mirrored: set with the whole answer once it was sent on."""

    def readable_body(self) -> bytes | None:
        """The body as the revision wrote it, for the gateway's own reading: decoded from the
        ``Content-Encoding`` it went to the client with; None when it does not decode or is over
        READ_ANSWER_BYTES (a compressed one is stopped there, not decoded whole)."""
        try:
            return decoded(self.body, self.headers.get("Content-Encoding"), READ_ANSWER_BYTES)
        except ValueError:  # TooLarge among them
            return None


def error_answer(status: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    """The gateway's own answer: ``{"error": message}`` with ``status`` and any extra ``headers``."""
    return Answer(
        status, json.dumps({"error": message}).encode(), {"Content-Type": "application/json", **(headers or {})}, None
    )


class ProxySettings(Protocol):
    """What the proxy reads of the gateway's configuration, at each attempt (tests change it)."""

    retries: int
    backend_timeout: float
    breaker_failures: int
    breaker_open_seconds: float


class Proxy:
    """Attempts, retries and the circuit breakers of every revision, by its URL."""

    def __init__(
        self, settings: ProxySettings, upstream: Upstream, metrics: GatewayMetrics, tracing: Tracing | None = None
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.metrics = metrics
        self.tracing = tracing or Tracing()
        """Each attempt a CLIENT span whose ``traceparent`` the revision gets."""
        self.breakers: dict[str, CircuitBreaker] = {}
        """By backend URL, created with the first attempt."""

    def healthy(self, backend: Backend) -> bool:
        """Whether ``backend`` may be chosen: its breaker, if it has one yet, is not open."""
        breaker = self.breakers.get(backend.url)
        return breaker is None or breaker.state != "open"

    def _breaker(self, backend: Backend) -> CircuitBreaker:
        breaker = self.breakers.get(backend.url)
        if breaker is None:
            breaker = self.breakers[backend.url] = CircuitBreaker(
                self.settings.breaker_failures, self.settings.breaker_open_seconds
            )
        return breaker

    async def forward(self, route: Route, backend: Backend, outgoing: Outgoing) -> Answer:
        """The answer to ``outgoing``, from ``backend`` or, after up to ``retries`` safe retries,
        another revision of ``route``; the last attempt's answer when every one failed."""
        tried: list[Backend] = []
        answer: Answer | None = None
        for attempt in range(1 + self.settings.retries):
            tried.append(backend)
            attributes = {"http.request.method": outgoing.method, "cutover.revision": backend.revision}
            with self.tracing.span(outgoing.method, attributes, SpanKind.CLIENT) as span:
                sent = outgoing if span is None else replace(outgoing, headers=propagated(outgoing.headers))
                answer, retry = await self._send(route, backend, sent)
                if span is not None:
                    answered(span, answer.status)
            if retry is None or attempt == self.settings.retries:
                break
            self.metrics.retried(retry)
            others = [b for b in route.backends if b not in tried and self.healthy(b)]
            backend = others[0] if others else backend
        assert answer is not None
        return answer

    async def once(self, backend: Backend, outgoing: Outgoing) -> Answer:
        """One attempt at ``backend`` alone, outside its circuit breaker, the retries and the
        request series the rollout's analysis reads: for explanations, which must reach the
        revision they name and are not its traffic (an explanation refused as busy is no failure)."""
        try:
            response = await self.upstream.request(
                outgoing.method,
                backend.url,
                outgoing.path,
                headers=outgoing.headers.items(),
                body=outgoing.body,
                timeout=self.settings.backend_timeout,
            )
        except (ConnectFailed, Disconnected) as error:
            return error_answer(502, f"revision {backend.revision} unreachable: {error}")
        except TimeoutError:
            return error_answer(504, f"revision {backend.revision} timed out")
        out = {name: v for name, lower in FORWARDED_RESPONSE_HEADERS if (v := response.headers.get(lower)) is not None}
        return Answer(response.status, response.body, out, backend)

    async def _send(self, route: Route, backend: Backend, outgoing: Outgoing) -> tuple[Answer, RetryReason | None]:
        """One attempt; the answer, and why it may be retried (None: it may not)."""
        breaker = self._breaker(backend)
        if not breaker.allow():
            self.metrics.breaker(route, backend, breaker.state)
            message = f"revision {backend.revision} is failing; its circuit is open"
            return error_answer(503, message, {"Retry-After": "1"}), RetryReason.OPEN
        started = time.perf_counter()
        try:
            response = await self.upstream.request(
                outgoing.method,
                backend.url,
                outgoing.path,
                headers=outgoing.headers.items(),
                body=outgoing.body,
                timeout=self.settings.backend_timeout,
                stream=outgoing.streams,
            )
        except ConnectFailed as error:
            message = f"revision {backend.revision} unreachable: {error}"
            return self._failed(route, backend, breaker, 502, message, started), RetryReason.CONNECT
        except Disconnected as error:
            message = f"revision {backend.revision} dropped the connection: {error}"
            answer = self._failed(route, backend, breaker, 502, message, started)
            return answer, RetryReason.DISCONNECT if outgoing.idempotent else None
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
        # A 503 with Retry-After is shedding or a model still loading: another attempt may succeed.
        # One without it is a refusal that another attempt would repeat (a SafetyPolicy that
        # cannot be applied, failClosed) or one that must not be dodged by asking another revision.
        shed = status == 503 and "Retry-After" in out
        return Answer(status, response.body, out, backend, response.stream), RetryReason.SHED if shed else None

    def _failed(
        self, route: Route, backend: Backend, breaker: CircuitBreaker, status: int, message: str, started: float
    ) -> Answer:
        breaker.record_failure()
        self.metrics.breaker(route, backend, breaker.state)
        self.metrics.request(route, backend, status, time.perf_counter() - started)
        log.warning("%s", message)
        return error_answer(status, message)
