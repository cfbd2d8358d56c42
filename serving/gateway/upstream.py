"""The gateway's client to the revisions behind it: HTTP/1.1 over pooled keep-alive connections.

A proxy's client does one thing, many times: send a buffered request to a known origin and read
the buffered answer. A general client (aiohttp's ClientSession) pays per request for what the
gateway never uses (cookie jars, redirects, proxies, streaming payloads, a task to write each
body), and on a small model that cost is most of what the gateway adds (benchmarks/gateway.py).
This client keeps idle connections per origin, writes the request in one call and parses the
answer with httptools (the C parser uvicorn uses).

An answer whose Content-Type is ``text/event-stream`` (a streamed chat completion) is handed
over when its headers arrive, when the caller asked for that (``stream=True``): its body comes
piece by piece as the revision writes it (:class:`BodyStream`), so the client gets each event
without the gateway buffering the answer. Every other answer is read whole.

Answers must carry Content-Length or chunked encoding, as every server the gateway routes to does;
one delimited only by closing the connection counts as dropped. An answer to HEAD carries the
headers of the GET answer (Content-Length included) and never a body; the parser cannot be told
so, so such an answer ends with its headers and its connection is closed rather than left waiting
for a body that never comes (which once timed out and opened the revision's circuit).

Failures say whether the revision can have seen the request, which is what decides a retry:
``ConnectFailed`` (it did not), ``Disconnected`` (it may have), ``TimeoutError`` (it may have,
and may still be working).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

EVENT_STREAM = "text/event-stream"


class UpstreamError(Exception):
    """The revision could not be reached or did not answer in full."""


class ConnectFailed(UpstreamError):
    """No connection: refused, unresolvable or unreachable. The request was not sent."""


class Disconnected(UpstreamError):
    """The connection broke, or the answer was malformed, after the request was sent."""


class BodyStream:
    """The body of an answer handed over before it has arrived: iterate :meth:`pieces` for its
    bytes as they come, and :meth:`close` when done (a body abandoned before its end closes the
    connection, which is out of step with it). Past ``max_unread`` bytes arrived and not yet
    taken, the connection stops reading until they are: a client that reads slower than the
    revision writes holds the revision back (its socket buffers fill) instead of growing the
    gateway's memory by the whole answer."""

    def __init__(self, connection: _Connection, max_unread: int = 1 << 16) -> None:
        self._connection = connection
        self.max_unread = max_unread
        self._arrived: list[bytes] = []
        self._unread = 0
        self._complete = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.ended = False
        """Whether the body ended, failed or was abandoned."""

    @property
    def unread(self) -> int:
        """Bytes arrived and not yet taken by :meth:`pieces`."""
        return self._unread

    def feed(self, data: bytes) -> None:
        self._arrived.append(data)
        self._unread += len(data)
        transport = self._connection.transport
        if self._unread > self.max_unread and transport is not None and transport.is_reading():
            transport.pause_reading()
        self._wake()

    def _resume(self) -> None:
        transport = self._connection.transport
        if transport is not None and not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()

    def end(self) -> None:
        self.ended = self._complete = True
        self._resume()  # the connection goes back to the pool reading
        self._wake()

    def fail(self, error: UpstreamError) -> None:
        if not self.ended:
            self.ended, self._error = True, error
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def pieces(self, timeout: float) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (what arrived together, in one piece). Raises
        ``Disconnected`` when the connection breaks before the body ends, ``TimeoutError`` when
        nothing arrives for ``timeout`` seconds."""
        while True:
            if not self._arrived and not self._complete and self._error is None:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    async with asyncio.timeout(timeout):
                        await self._waiter
                finally:
                    self._waiter = None
            if self._arrived:
                piece = self._arrived[0] if len(self._arrived) == 1 else b"".join(self._arrived)
                self._arrived.clear()
                self._unread = 0
                self._resume()
                yield piece
            elif self._error is not None:
                raise self._error
            else:
                return

    def close(self) -> None:
        if not self.ended:
            self.ended = True
            self._connection.close()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    body: bytes
    stream: BodyStream | None = None
    """The body as it arrives, for an event stream asked for with ``stream=True`` (``body`` is empty then)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, pool: Upstream, origin: str) -> None:
        self._pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._status = 0
        self._bodiless = False
        """Whether the answer in progress ends with its headers (the request was HEAD)."""
        self._streams = False
        """Whether an event-stream answer in progress may be handed over at its headers."""
        self._stream: BodyStream | None = None
        """The body of the answer in progress, when it was handed over at its headers."""

    # ---- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(Disconnected(f"malformed answer: {error}"))

    def eof_received(self) -> bool:
        self._fail(Disconnected("the connection was closed before the answer was complete"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(Disconnected(f"the connection was lost: {exc or 'closed by the peer'}"))

    # ---- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("utf-8", "replace")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if self._streams and self._status == 200 and self._headers.get("content-type", "").startswith(EVENT_STREAM):
            waiter, self._waiter = self._waiter, None
            self._stream = BodyStream(self)
            response = Response(self._status, self._headers, b"", self._stream)
            self._headers = {}
            if waiter is not None and not waiter.done():
                waiter.set_result(response)
            return
        if self._bodiless and self._status >= 200:
            # The parser would wait for the Content-Length bytes a HEAD answer announces but never
            # sends: the answer ends here, and the connection, out of step with its parser, closes.
            waiter, self._waiter = self._waiter, None
            response = Response(self._status, self._headers, b"")
            self._headers, self._body = {}, []
            self.close()
            if waiter is not None and not waiter.done():
                waiter.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._stream is not None:
            self._stream.feed(body)
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.end()
            if self._parser.should_keep_alive() and not self.closed:
                self._pool._release(self)
            else:
                self.close()
            return
        waiter, self._waiter = self._waiter, None
        response = Response(self._status, self._headers, b"".join(self._body))
        self._headers, self._body = {}, []
        if waiter is None or waiter.done():
            self.close()  # an answer nobody asked for: the connection is out of step
            return
        if self._parser.should_keep_alive() and not self.closed:
            self._pool._release(self)
        else:
            self.close()
        waiter.set_result(response)

    # ---- use -----------------------------------------------------------------------------------

    def send(
        self, head: bytes, body: bytes, *, bodiless: bool = False, stream: bool = False
    ) -> asyncio.Future[Response]:
        """Write one request; ``bodiless`` when its answer has no body whatever its headers say
        (HEAD); ``stream`` when an event-stream answer may be handed over at its headers."""
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._bodiless = bodiless
        self._streams = stream
        if len(body) < 65536:
            self.transport.write(head + body)  # one segment for the usual small request
        else:
            self.transport.write(head)
            self.transport.write(body)  # no copy of a large body
        return self._waiter

    def _fail(self, error: UpstreamError) -> None:
        self.close()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.fail(error)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._pool._forget(self)
            if self.transport is not None:
                self.transport.close()


class Upstream:
    """Keep-alive connections to any number of origins (``http://host:port``)."""

    def __init__(self, *, max_idle_per_origin: int = 256, idle_seconds: float = 60.0) -> None:
        self.max_idle_per_origin = max_idle_per_origin
        self.idle_seconds = idle_seconds
        """Idle connections older than this are closed instead of reused (servers drop them too:
        aiohttp's server after 75 s)."""
        self._idle: dict[str, list[_Connection]] = {}
        self._origins: dict[str, tuple[str, int, bytes]] = {}
        self.opened = 0
        """Connections opened so far (tests read it to see reuse)."""

    async def request(
        self,
        method: str,
        url: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        timeout: float,
        stream: bool = False,
    ) -> Response:
        """``url`` is the origin (``http://host:port``), ``path`` the path and query to ask for;
        ``timeout`` bounds the whole answer, or with ``stream`` an event stream's headers (its
        body then comes through ``Response.stream``)."""
        async with asyncio.timeout(timeout):
            connection = await self._acquire(url)
            # Back to the bytes the client sent: aiohttp's server decodes them as UTF-8 with
            # surrogateescape, so any byte a client may send round-trips.
            lines = [f"{method} {path} HTTP/1.1\r\n".encode("utf-8", "surrogateescape"), self._origins[url][2]]
            lines += [f"{name}: {value}\r\n".encode("utf-8", "surrogateescape") for name, value in headers]
            lines.append(f"Content-Length: {len(body)}\r\n\r\n".encode("ascii"))
            try:
                return await connection.send(b"".join(lines), body, bodiless=method.upper() == "HEAD", stream=stream)
            except BaseException:
                connection.close()  # cancelled or timed out mid-answer: never reuse it
                raise

    async def _acquire(self, url: str) -> _Connection:
        idle = self._idle.get(url)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self.idle_seconds:
                return connection
            connection.close()
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = _origin(url)
        host, port, _ = origin
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(lambda: _Connection(self, url), host, port)
        except OSError as error:
            raise ConnectFailed(f"cannot connect to {url}: {error}") from None
        self.opened += 1
        return protocol

    def _release(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= self.max_idle_per_origin:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _forget(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    async def close(self) -> None:
        for idle in list(self._idle.values()):
            for connection in list(idle):
                connection.close()
        self._idle.clear()


def _origin(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme != "http" or not parts.hostname or not port:
        raise ConnectFailed(f"{url!r} is not an http://host[:port] origin")
    return parts.hostname, port, f"Host: {parts.netloc}\r\n".encode("latin-1")
