"""The crisis filter's escalation webhook: one JSON POST per escalated request, sent off the
request path.

The only HTTP in ``serving/safety``, and only as a client: the policy engine calls
:meth:`Escalator.notify` while it answers an escalated request; ``notify`` puts the event on a
bounded queue and returns at once, so a slow or dead receiver never delays a client (above all
not one in crisis). One sender task per escalator takes events off the queue in order and POSTs
each one.

**Body** (:meth:`Escalation.body`): ``requestId``, ``namespace``, ``model``, ``revision``,
``policy``, ``policyGeneration``, ``filter`` (always ``crisis``), ``category``, ``scope``
(``input`` or ``output``), ``score`` and ``time`` (RFC 3339, UTC). Never the text: the receiver
pages a person, who looks the request up in the audit log by its id. Each delivery carries an
``Idempotency-Key`` header (the request id), the same on every retry, so a receiver that saw an
attempt whose answer was lost can fold the retry into it.

**Retries**: network errors, timeouts (each attempt ends after the webhook's
``timeoutSeconds``), 5xx and 429 are retried with exponential backoff and jitter, the n-th
retry waiting ``base_delay x 2^(n-1)`` capped at ``max_delay``, of which a random half is
jitter ("equal jitter", M. Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog,
2015), so that serving pods that lost the receiver together do not return together. A 429's
``Retry-After`` (seconds or an HTTP date, RFC 9110 section 10.2.3) replaces the computed wait.
No retry starts after the event's ``deadline`` (measured from ``notify``); a wait that would
end past it gives up at once. A redirect is a failure, never followed: a POST must not be
replayed to wherever a ``Location`` points, and a webhook URL that moved should be corrected
(the failure names the Location, unless the URL came from a Secret: then the Location could
reveal it). Other 4xx answers are final.

**Outcomes**: every event notified is counted exactly once through the ``count`` callback
(``delivered``, ``failed`` or ``dropped``): the policy engine turns it into
``cutover_safety_escalations_total{result}``; the escalator owns no metric registry. ``dropped``
is an event that was never tried to the end: the queue was full, or the escalator closed before
it was delivered. Failures and drops are logged with the request id and what went wrong, never
the URL when it came from a Secret (it is the credential).

**Shutdown**: :meth:`Escalator.close` stops taking events, gives the queue a short drain to
deliver what is waiting, then cancels the sender and counts what is left as dropped.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from .base import Direction

log = logging.getLogger(__name__)

Outcome = Literal["delivered", "failed", "dropped"]
"""What became of one escalation: the ``result`` label of ``cutover_safety_escalations_total``."""

OUTCOMES: tuple[Outcome, ...] = ("delivered", "failed", "dropped")
"""Every outcome, for creating the counter's children at 0."""

USER_AGENT = "cutover-serving (safety escalation)"


@dataclass(frozen=True)
class Escalation:
    """One escalated request, as the webhook receives it: who answered it (``namespace``,
    ``model``, ``revision``), under which policy (``policy`` name and ``policy_generation``),
    what the crisis filter found (``category``, ``score`` in [0, 1]) in which direction
    (``scope``), and when (``time``, timezone-aware). No text."""

    request_id: str
    namespace: str
    model: str
    revision: str
    policy: str
    policy_generation: int
    category: str
    scope: Direction
    score: float
    time: datetime

    def body(self) -> dict[str, Any]:
        """The JSON object POSTed for this escalation (camelCase keys, ``time`` in RFC 3339 UTC)."""
        return {
            "requestId": self.request_id,
            "namespace": self.namespace,
            "model": self.model,
            "revision": self.revision,
            "policy": self.policy,
            "policyGeneration": self.policy_generation,
            "filter": "crisis",
            "category": self.category,
            "scope": self.scope,
            "score": round(float(self.score), 4),
            "time": self.time.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }


class DeliveryFailed(Exception):
    """One escalation could not be delivered for good; the message says why (never a URL from
    a Secret)."""


@dataclass(frozen=True)
class _Queued:
    event: Escalation
    deadline: float
    """The escalator's clock reading after which no retry starts."""


def _ignore(outcome: Outcome) -> None:
    """The default ``count``: nothing is counted."""


class Escalator:
    """Delivers :class:`Escalation` events to one webhook URL, off the request path.

    ``url``: where to POST (http or https). ``timeout``: seconds one attempt may take (the
    webhook's ``timeoutSeconds``). ``count``: called once per event with its :data:`Outcome`.
    ``url_from_secret``: the URL is a credential; no log line or failure names it or a redirect's
    Location. ``deadline``: seconds after ``notify`` in which retries may start. ``queue_size``:
    events waiting beyond it are dropped. ``base_delay`` and ``max_delay``: the backoff, in
    seconds. ``client``: an ``httpx.AsyncClient`` to share (not closed here); by default the
    escalator opens its own on first use and closes it in :meth:`close`. ``sleep`` and ``jitter``
    (a number in [0, 1)) and ``clock`` (monotonic seconds) are replaceable so that tests can see
    the waits and the deadline without taking them.

    Raises ``ValueError`` for a URL that is not absolute http(s) or a timeout, deadline or queue
    size that is not positive. Use from one event loop: ``notify`` needs a running loop.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        *,
        count: Callable[[Outcome], None] = _ignore,
        url_from_secret: bool = False,
        deadline: float = 60.0,
        queue_size: int = 1000,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            shown = "the URL from the Secret" if url_from_secret else repr(url)
            raise ValueError(f"escalation webhook: {shown} is not an absolute http(s) URL")
        if timeout <= 0 or deadline <= 0 or queue_size < 1:
            raise ValueError("escalation webhook: timeout, deadline and queue size must be positive")
        self.url = url
        self.timeout = float(timeout)
        self.count = count
        self.url_from_secret = url_from_secret
        self.deadline = float(deadline)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.where = (
            "escalation webhook (URL from Secret)"
            if url_from_secret
            else f"escalation webhook {parts.scheme}://{parts.netloc}"
        )
        """How log lines and failures name the receiver."""
        self._client = client
        self._own_client = client is None
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue(maxsize=queue_size)
        self._sender: asyncio.Task[None] | None = None
        self._current: _Queued | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Events notified and not yet delivered, failed or dropped (queued or being sent)."""
        return self._queue.qsize() + (self._current is not None)

    def notify(self, event: Escalation) -> bool:
        """Queue ``event`` for delivery and return at once: True when queued, False when it was
        dropped (queue full, or the escalator closed; counted and logged). Never raises."""
        if self._closed:
            return self._drop(event, "the escalator is closed")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._drop(event, "no event loop runs the sender")
        try:
            self._queue.put_nowait(_Queued(event, self._clock() + self.deadline))
        except asyncio.QueueFull:
            return self._drop(event, f"{self._queue.maxsize} escalations already wait for {self.where}")
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_all(), name="cutover-safety-escalation")
        return True

    async def join(self) -> None:
        """Wait until every event queued so far is delivered, failed or dropped."""
        await self._queue.join()

    async def close(self, drain: float = 2.0) -> None:
        """Stop taking events, give those waiting up to ``drain`` seconds to be delivered, then
        cancel the sender, count what is left as dropped and close the client (if it is ours)."""
        self._closed = True
        sender = self._sender
        if sender is not None and not sender.done():
            try:
                async with asyncio.timeout(drain):
                    await self._queue.join()
            except TimeoutError:
                pass
            sender.cancel()
            # asyncio.wait, not ``await sender``: the sender's CancelledError is not ours to
            # swallow if close() itself is cancelled meanwhile.
            await asyncio.wait([sender])
        if self._current is not None:
            self._drop(self._current.event, "the escalator closed while it was being sent")
            self._current = None
            self._queue.task_done()
        while not self._queue.empty():
            self._drop(self._queue.get_nowait().event, "the escalator closed before it was sent")
            self._queue.task_done()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _drop(self, event: Escalation, why: str) -> bool:
        log.warning("escalation of request %s dropped: %s", event.request_id, why)
        self._count("dropped")
        return False

    def _count(self, outcome: Outcome) -> None:
        """Count ``outcome``; a counter that raises is logged, never stops the sender or ``notify``."""
        try:
            self.count(outcome)
        except Exception:
            log.exception("counting an escalation %s failed", outcome)

    async def _send_all(self) -> None:
        """The sender task: one event at a time, in order, until cancelled."""
        while True:
            queued = await self._queue.get()
            self._current = queued
            try:
                await self._deliver(queued)
            except DeliveryFailed as failure:
                log.warning("escalation of request %s failed: %s", queued.event.request_id, failure)
                outcome: Outcome = "failed"
            except Exception:  # a bug here must not stop later escalations
                log.exception("escalation of request %s failed unexpectedly", queued.event.request_id)
                outcome = "failed"
            else:
                outcome = "delivered"
            self._current = None
            self._count(outcome)
            self._queue.task_done()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(headers={"User-Agent": USER_AGENT})
        return self._client

    async def _deliver(self, queued: _Queued) -> None:
        """POST one event, retrying as the module says; raises :class:`DeliveryFailed`."""
        body = queued.event.body()
        headers = {"Idempotency-Key": queued.event.request_id, "User-Agent": USER_AGENT}
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            wait = self.base_delay * 2 ** min(attempt - 1, 32)
            wait = min(wait, self.max_delay) * (0.5 + self._jitter() / 2)
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self._http().post(
                        self.url, json=body, headers=headers, timeout=self.timeout, follow_redirects=False
                    )
            except (TimeoutError, httpx.TimeoutException):
                problem = f"no answer within {self.timeout:g}s"
            except httpx.HTTPError as error:
                problem = f"cannot reach the receiver: {self._network_error(error)}"
            else:
                if response.is_success:
                    return
                problem = self._answer(response)
                if response.is_redirect or not (response.status_code == 429 or response.is_server_error):
                    raise DeliveryFailed(f"{self.where}: {problem}")
                if response.status_code == 429:
                    wait = retry_after(response.headers.get("retry-after", ""), default=wait)
            tries = f"{attempt} attempt{'s' * (attempt != 1)} in {self._clock() - started:.1f}s"
            if self._clock() + wait > queued.deadline:
                raise DeliveryFailed(f"{self.where}: {problem} ({tries}; the next retry would pass the deadline)")
            await self._sleep(wait)

    def _answer(self, response: httpx.Response) -> str:
        """A non-2xx answer in words."""
        status = f"answered {response.status_code} {response.reason_phrase}".rstrip()
        if response.is_redirect or 300 <= response.status_code < 400:
            location = response.headers.get("location", "")
            if self.url_from_secret:
                where = " (Location not shown: the URL came from a Secret)"
            else:
                where = f" to {location}" if location else " without a Location"
            return f"{status}: a redirect{where}, which is not followed; set the webhook's final URL"
        text = " ".join(response.text.split())[:200]
        return f"{status}: {text}" if text else status

    def _network_error(self, error: httpx.HTTPError) -> str:
        text = str(error) or type(error).__name__
        return text.replace(self.url, "<URL from Secret>") if self.url_from_secret else text


def retry_after(value: str, default: float) -> float:
    """Seconds to wait from a ``Retry-After`` header ``value``: delay-seconds or an HTTP date
    (RFC 9110 section 10.2.3), never negative; ``default`` when it is absent or unreadable."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return default
    if when.tzinfo is None:  # "-0000" means UTC (RFC 5322)
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
