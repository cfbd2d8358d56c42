"""The aiohttp pieces every serving-side process needs, kept apart from what it serves: errors as
JSON bodies, health answers, the metrics endpoint, and a listener that drains on the way out.
``cutover serve`` uses them (``serving/server.py``); the gateway can share them.

Errors. Every error a client sees is a JSON body, ``{"error": "<message>"}`` unless the app
gives its own per request (``cutover serve`` answers OpenAI's error object on ``/v1``): a ``ServingError`` with its own
status (and ``Retry-After`` when it has one), an aiohttp HTTP error (404 unknown route, 405, 413
over the size limit) with its reason, and anything else as a 500 that is logged. A request aiohttp
cannot parse (a header line over 8190 bytes, a bad request line, a malformed Content-Length) never
reaches the app: it is answered ``{"error": "<parser's reason>"}`` as well, with the connection
closed (:class:`JsonErrorsProtocol`), is counted by no series (it names no revision's route) and
logged at debug level only, since any client can send one; so is an ``Expect`` header other than
``100-continue``, which aiohttp refuses (417) before the middleware (:class:`JsonErrorsRunner`).

Clients that leave. A request's handler is cancelled when its client closes the connection
(aiohttp's ``handler_cancellation``), which closes the upstream call or frees the admission slot
it holds at once, and it is counted as 499; otherwise a client that gave up while an upstream was
silent (an LLM generating) held its slot until the upstream spoke again or timed out.

Draining. On SIGTERM the process turns its readiness to 503 while the listener stays open for a
shutdown delay (endpoints take a moment to drop the pod), then :func:`listening` closes the
listener and gives requests in flight ``shutdown_grace`` seconds to finish.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.hdrs import CONTENT_LENGTH, CONTENT_TYPE
from aiohttp.http_exceptions import InvalidURLError
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from . import compression
from .errors import InvalidInput, ServingError, UnknownEncoding

log = logging.getLogger(__name__)

Answered = Callable[[web.Request, web.StreamResponse, float], None]
"""Called with every request, its response (errors included) and when it started
(``time.perf_counter()``): to add headers to every answer, or to count it."""


ErrorBody = Callable[[web.Request, int, str], Any]
"""The JSON body of an error: from the request, the status and the message."""


CLIENT_CLOSED = 499
"""The status a request is counted with when the client left before its answer (nginx's code):
not a failure of the revision."""


def plain_error(request: web.Request, status: int, message: str) -> dict[str, str]:
    """The Open Inference Protocol's error body, ``{"error": message}``."""
    return {"error": message}


def json_body(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """``payload`` as a JSON response whose Content-Type is ``application/json`` with no charset
    parameter, as Triton sends it: JSON is UTF-8 by definition (RFC 8259), and KServe's REST
    client reads an error's reason only when the type is exactly ``application/json``
    (aiohttp's ``json_response`` adds ``; charset=utf-8``)."""
    return web.Response(
        body=json.dumps(payload).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def kept_headers(error: web.HTTPException) -> dict[str, str]:
    """The headers of aiohttp's HTTP error that a JSON body of it keeps: all but the body's own
    (``Allow`` on a 405, which RFC 9110 requires, among them)."""
    return {name: value for name, value in error.headers.items() if name not in (CONTENT_TYPE, CONTENT_LENGTH)}


def json_errors(answered: Answered | None = None, body: ErrorBody = plain_error) -> Middleware:
    """Middleware that turns every error into a JSON body (``body`` gives it per request, such as
    OpenAI's error object on ``/v1`` routes), then calls ``answered`` with the final response.
    Redirects and other HTTP exceptions below 400 pass through untouched."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response: web.StreamResponse
        try:
            response = await handler(request)
        except ServingError as error:
            headers = None if error.retry_after is None else {"Retry-After": str(error.retry_after)}
            response = json_body(body(request, error.status, str(error)), status=error.status, headers=headers)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            response = json_body(body(request, error.status, error.reason), error.status, kept_headers(error))
        except Exception as error:
            log.exception("%s %s failed", request.method, request.path)
            response = json_body(body(request, 500, f"internal error: {error}"), status=500)
        except asyncio.CancelledError:
            if answered is not None and request.transport is None:  # the client left (handler cancellation)
                answered(request, web.Response(status=CLIENT_CLOSED), started)
            raise
        if answered is not None:
            answered(request, response, started)
        return response

    return middleware


OWN_DECODING = {"auto_decompress": False}
"""``handler_args`` of an application whose request bodies :func:`request_body` decodes.
aiohttp's own decoding expands a whole network read at once, before the size limit is checked
on what it has gathered: 4.5 MB of gzip that expands to 1 GiB raised the server's memory by
440 MB before its 413 (tests/serving/test_triton_extensions.py); decoded here, by about the
limit."""
INLINE_BYTES = 1 << 16
"""Compressed bodies up to this size are decoded on the event loop; larger ones on a thread
(zlib lets go of the GIL), so probes keep their answer time."""


async def request_body(request: web.Request, limit: int) -> bytes:
    """The request's body, decoded from its Content-Encoding (gzip or deflate; the application
    must be made with ``handler_args=OWN_DECODING``) into at most ``limit`` bytes. Raises
    ``UnknownEncoding`` (415) for another coding, ``InvalidInput`` (400) for a body that cannot
    be read or does not decode as it says, and 413 past ``limit``."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in compression.DECODED:
        raise UnknownEncoding(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none")
    try:
        body = await request.read()
    except RequestPayloadError as error:
        reason = " ".join(str(error).split())
        raise InvalidInput(f"the request body cannot be read: {reason}") from None
    try:
        if len(body) > INLINE_BYTES:
            return await asyncio.to_thread(compression.decoded, body, encoding, limit)
        return compression.decoded(body, encoding, limit)
    except compression.TooLarge:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit + 1) from None
    except ValueError as error:
        raise InvalidInput(f"the request body cannot be read: {error}") from None


async def request_json(request: web.Request, limit: int) -> Any:
    """The request's body (``request_body``) parsed as JSON; a ValueError when it is not JSON."""
    return json.loads(await request_body(request, limit))


class EventStream(web.StreamResponse):
    """A streamed answer (server-sent events) sent in as few writes as it can be without holding
    anything back. Each write is a system call that wakes the reader: on one CPU shared with the
    next hop, an answer whose events arrived together went out as one write per event, and the
    next hop read none of them before the last was written.

    - The headers go out with the first event, not alone at ``prepare`` (aiohttp's own switch,
      which its ``web.Response`` turns off too).
    - Events given to :meth:`send` while the sending task runs on (the chunks of one read from an
      upstream) go out together in one write once that task waits, from a task of their own.
      Nothing waits for a timer: a lone event goes out as soon as its sender waits for the next.
    - Past ``max_pending`` bytes queued (a client that reads slower than the upstream writes),
      :meth:`send` waits for the queue to be written, so memory stays bounded.

    Call :meth:`finish` (or ``write_eof``, which calls it) before the handler returns, and
    :meth:`abandon` when the handler ends early (cancelled: the client left). ``write`` keeps
    its place in the queue (it sends, then finishes)."""

    _send_headers_immediately = False

    def __init__(self, *, max_pending: int = 1 << 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_pending = max_pending
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flusher: asyncio.Task[None] | None = None
        self._ended = False

    @property
    def pending_bytes(self) -> int:
        """The bytes queued and not yet handed to the connection."""
        return self._pending_bytes

    async def send(self, data: bytes) -> None:
        """Queue ``data`` to be written once the calling task waits. Raises what writing the
        events queued before failed with (``ConnectionResetError``: the client left), and
        RuntimeError after ``write_eof``."""
        if self._ended:
            raise RuntimeError("cannot send after write_eof()")
        flusher = self._flusher
        if flusher is not None and flusher.done():
            self._flusher = None
            flusher.result()
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        elif self._pending_bytes > self.max_pending:
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            await super().write(data)

    async def finish(self) -> None:
        """Wait until every queued event is written; raises what writing them failed with."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            await flusher

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await self.send(bytes(data))
        await self.finish()

    async def write_eof(self, data: bytes = b"") -> None:
        self._ended = True
        await self.finish()
        await super().write_eof(data)

    def abandon(self) -> None:
        """Drop what is queued and stop writing (the handler ends without finishing)."""
        flusher, self._flusher = self._flusher, None
        self._pending.clear()
        self._pending_bytes = 0
        if flusher is not None:
            flusher.cancel()
            if flusher.done() and not flusher.cancelled():
                flusher.exception()  # retrieved: the client that left is logged by the handler


async def live(request: web.Request) -> web.Response:
    """``/v2/health/live``: the process answers."""
    return json_body({"live": True})


def readiness(reason: str | None, **fields: Any) -> web.Response:
    """A readiness answer: 200 ``{**fields, "ready": true}``, or 503 ``{**fields, "ready": false,
    "error": reason}`` when there is a reason not to be ready."""
    if reason is not None:
        return json_body({**fields, "ready": False, "error": reason}, status=503)
    return json_body({**fields, "ready": True})


def prometheus(registry: CollectorRegistry) -> Handler:
    """A ``/metrics`` handler exposing ``registry`` in Prometheus' text format."""

    async def metrics(request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics


SERVER_ERRORS = {500: "internal error", 504: "the request handler timed out"}
"""The messages of the server errors aiohttp answers itself (the cause is logged, not sent)."""


class JsonErrorsProtocol(RequestHandler):
    """aiohttp's connection handler, answering the errors it raises itself (the request could not
    be parsed: 400; a failure outside the app's handler: 500; a handler that timed out: 504) as
    the Open Inference Protocol's JSON error body rather than aiohttp's ``text/plain``, which
    tritonclient and KServe's client cannot read a reason from. The connection is closed after it,
    as aiohttp does: what follows a request that could not be parsed cannot be trusted."""

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("%s %s: %d", request.method, request.path, status, exc_info=exc)
            message = SERVER_ERRORS.get(status, f"server error {status}")
        else:  # the client's bytes: not a fault of this process, so no traceback and no alarm
            # Only the kind of error is logged: the reason quotes the client's bytes (a header
            # line, credentials included), which go back to that client and nowhere else.
            log.debug("unparsable request from %s: %s", request.remote, type(exc).__name__)
            # aiohttp's reason spans lines, the last a caret under the offending byte: one line here.
            lines = (message or str(exc) or f"bad request ({status})").splitlines()
            message = " ".join(" ".join(line for line in lines if line.strip() != "^").split())
            if isinstance(exc, InvalidURLError):  # its reason is the target alone
                message = f"invalid request target: {message}"
        if request.writer.output_size > 0:  # part of an answer is out: the connection is past saving
            raise ConnectionError(f"an answer was already under way when it failed with {status}")
        response = json_body({"error": message}, status=status)
        response.force_close()
        return response


class JsonErrorsServer(web.Server):
    """aiohttp's ``Server`` with :class:`JsonErrorsProtocol` for each connection."""

    def __call__(self) -> RequestHandler:
        return JsonErrorsProtocol(self, loop=self._loop, **self._kwargs)


class JsonErrorsRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer aiohttp's own errors as JSON: those of its
    parser (:class:`JsonErrorsProtocol`) and the HTTP errors the application raises before its
    middleware runs (an ``Expect`` header other than ``100-continue``: 417)."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the application's startup, as AppRunner runs it
        handle = made.request_handler

        async def handled(request: web.BaseRequest) -> web.StreamResponse:
            try:
                return await handle(request)
            except web.HTTPException as error:
                if error.status < 400:
                    raise
                return json_body({"error": error.text or error.reason}, error.status, kept_headers(error))

        return JsonErrorsServer(
            handled,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,
        )


@asynccontextmanager
async def listening(
    app: web.Application, host: str, port: int, *, backlog: int, shutdown_grace: float
) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` on ``host:port`` (port 0 picks a free one, logged) until the block ends;
    then close the listener and give requests in flight ``shutdown_grace`` seconds to finish.
    Requests aiohttp cannot parse are answered as JSON too (:class:`JsonErrorsProtocol`)."""
    runner = JsonErrorsRunner(app, access_log=None, shutdown_timeout=shutdown_grace, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=backlog).start()
        log.info("listening on http://%s:%d", host, runner.addresses[0][1])
        yield runner
    finally:
        await runner.cleanup()
