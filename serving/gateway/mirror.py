"""Shadow traffic: a copy of a live request sent to each mirrored revision in the background, its
answer compared with the live one (``shadow.compare``) and counted per revision.

A mirror never touches the client's answer: the copy goes out beside the live attempt, waits for
the live answer, compares and counts, and nothing waits for it. It is sent once (no retries, no
circuit breaker: a failing mirror is what the comparison should see), only for POST (an infer or
chat call; the GETs of metadata have nothing to compare), and skipped, never queued, when
``max_mirrors_in_flight`` copies are in progress, so a slow candidate cannot hold the gateway's
memory. Each mirrored answer (or failure, as 502) counts as a request of its revision with role
as in the traffic table, which is how the analysis sees a shadow candidate's errors and latency.
Answers over ``proxy.READ_ANSWER_BYTES`` are not compared (neither pair counts).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import replace
from typing import Protocol

from ..protocol import HEADER_LENGTH
from ..tracing import SpanKind, Tracing, answered, propagated
from .metrics import GatewayMetrics
from .proxy import READ_ANSWER_BYTES, Answer, Outgoing
from .routing import Backend, Route
from .shadow import compare
from .upstream import Upstream, UpstreamError

log = logging.getLogger("cutover.gateway")
VERSION_SEGMENT = re.compile(r"^(/v2/models/[^/?]+)/versions/[^/?]+")
"""The ``/versions/{version}`` part of an Open Inference Protocol path."""


def mirrored_copy(outgoing: Outgoing) -> Outgoing:
    """The copy a mirror gets. It asks for whatever the mirror serves: a version named in the path
    is the live revision's, which the mirror may not serve. It asks for an uncompressed answer:
    only the comparison reads it."""
    headers = {k: v for k, v in outgoing.headers.items() if k.lower() != "accept-encoding"}
    return replace(outgoing, path=VERSION_SEGMENT.sub(r"\1", outgoing.path, count=1), headers=headers)


class MirrorSettings(Protocol):
    """What mirroring reads of the gateway's configuration."""

    max_mirrors_in_flight: int
    backend_timeout: float


class Mirrors:
    """The mirrored requests in progress."""

    def __init__(
        self, settings: MirrorSettings, upstream: Upstream, metrics: GatewayMetrics, tracing: Tracing | None = None
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.metrics = metrics
        self.tracing = tracing or Tracing()
        """Each copy a CLIENT span ``mirror``, a child of the live request's span."""
        self.tasks: set[asyncio.Task[None]] = set()
        """One per copy in progress; a task leaves when it ends."""

    def start(self, route: Route, mirror: Backend, copy: Outgoing, live: asyncio.Future[Answer]) -> None:
        """Send ``copy`` to ``mirror`` in the background and compare its answer with ``live`` once
        that is set (the caller must set it); skipped at capacity or for a method other than POST."""
        if len(self.tasks) >= self.settings.max_mirrors_in_flight or copy.method != "POST":
            self.metrics.mirror_skipped()
            return
        task = asyncio.create_task(self._mirror(route, mirror, copy, live))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _mirror(self, route: Route, mirror: Backend, copy: Outgoing, live: asyncio.Future[Answer]) -> None:
        started = time.perf_counter()
        status, payload, length = 502, b"", None
        with self.tracing.span("mirror", {"cutover.revision": mirror.revision}, SpanKind.CLIENT) as span:
            try:
                response = await self.upstream.request(
                    "POST",
                    mirror.url,
                    copy.path,
                    headers=(copy.headers if span is None else propagated(copy.headers)).items(),
                    body=copy.body,
                    timeout=self.settings.backend_timeout,
                )
                status, payload, length = response.status, response.body, response.headers.get(HEADER_LENGTH.lower())
            except (UpstreamError, TimeoutError) as error:
                log.debug("mirror to %s failed: %s", mirror.revision, error)
            if span is not None:
                answered(span, status)
        self.metrics.request(route, mirror, status, time.perf_counter() - started)
        answer = await live
        if answer.status != 200 or len(payload) > READ_ANSWER_BYTES:
            return  # nothing to compare against, or too large to read here
        live_body = answer.readable_body()  # as it went to the client, compressed if the client asked
        if live_body is None:
            return  # the live answer cannot be read here: nothing to compare against
        outcome = compare(
            copy.path,
            live_body,
            answer.headers.get(HEADER_LENGTH),
            payload if status == 200 else None,
            length,
            route.comparison,
        )
        if outcome is not None:  # None: the answers cannot be compared, and count neither way
            self.metrics.comparison(route, mirror, outcome)

    def cancel(self) -> None:
        """Stop every mirror in progress (at shutdown)."""
        for task in list(self.tasks):
            task.cancel()
