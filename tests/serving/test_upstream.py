"""The gateway's pooled HTTP/1.1 client against a real aiohttp server and against raw sockets
that misbehave on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from cutover.serving.gateway.upstream import ConnectFailed, Disconnected, Upstream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    headers = {
        "X-Seen-Path": request.path_qs,
        "X-Seen-Host": request.host,
        "X-Seen-Id": request.headers.get("X-Id", "").encode("utf-8", "surrogateescape").hex(),
    }
    return web.Response(body=body, status=201, headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application(client_max_size=8 << 20)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, keepalive_timeout=0.3)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def raw(handler: Handler) -> tuple[asyncio.Server, str]:
    listener = await asyncio.start_server(handler, "127.0.0.1", 0)
    host, port = listener.sockets[0].getsockname()[:2]
    return listener, f"http://{host}:{port}"


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    await reader.readexactly(length)


async def test_requests_reuse_one_connection_and_carry_path_headers_and_body(server: str) -> None:
    upstream = Upstream()
    for n in range(50):
        answer = await upstream.request(
            "POST", server, f"/v2/models/m/infer?n={n}", headers=[("X-Id", str(n))], body=b"x" * n, timeout=5
        )
        assert answer.status == 201 and answer.body == b"x" * n
        assert (
            answer.headers["x-seen-path"] == f"/v2/models/m/infer?n={n}"
            and answer.headers["x-seen-id"] == str(n).encode().hex()
        )
    assert answer.headers["x-seen-host"] == server.removeprefix("http://")
    odd = "caf\u00e9-\u2603-\udcff"  # UTF-8, and a byte that is not: what aiohttp hands on from a client
    answer = await upstream.request("GET", server, "/p%C3%A9?q=1", headers=[("X-Id", odd)], timeout=5)
    assert answer.headers["x-seen-id"] == odd.encode("utf-8", "surrogateescape").hex(), "the client's bytes, as sent"
    assert answer.headers["x-seen-path"] == "/p%C3%A9?q=1"
    assert upstream.opened == 1
    many = await asyncio.gather(*(upstream.request("GET", server, "/", timeout=5) for _ in range(10)))
    assert all(a.status == 201 for a in many) and upstream.opened == 10, "one connection per concurrent request"
    await asyncio.gather(*(upstream.request("GET", server, "/", timeout=5) for _ in range(10)))
    assert upstream.opened == 10, "the ten are reused"
    big = bytes(range(256)) * 8192  # 2 MiB
    assert (await upstream.request("POST", server, "/", body=big, timeout=5)).body == big
    await upstream.close()


async def test_a_connection_the_server_closed_while_idle_is_not_reused(server: str) -> None:
    upstream = Upstream()
    await upstream.request("GET", server, "/", timeout=5)
    await asyncio.sleep(1.0)  # past the server's 0.3 s keep-alive
    assert (await upstream.request("GET", server, "/", timeout=5)).status == 201
    assert upstream.opened == 2
    await upstream.close()


async def test_chunked_answers_and_connection_close() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n")
        writer.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    listener, url = await raw(chunked)
    upstream = Upstream()
    first = await upstream.request("GET", url, "/", timeout=5)
    assert first.body == b"hello world" and first.headers["content-type"] == "text/plain"
    second = await upstream.request("GET", url, "/", timeout=5)
    assert second.status == 503 and second.headers["retry-after"] == "1" and second.body == b"{}"
    assert upstream.opened == 1
    listener.close()
    await listener.wait_closed()
    with pytest.raises(ConnectFailed):  # a connection kept after "Connection: close" would not fail this way
        await upstream.request("GET", url, "/", timeout=5)
    await upstream.close()


async def test_refused_dropped_malformed_and_slow_answers_fail_as_what_they_are() -> None:
    upstream = Upstream()
    listener, refused = await raw(read_request)
    listener.close()
    await listener.wait_closed()
    with pytest.raises(ConnectFailed):
        await upstream.request("GET", refused, "/", timeout=5)

    async def drops(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async def hangs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    for handler in (drops, garbage):
        _, url = await raw(handler)
        with pytest.raises(Disconnected):
            await upstream.request("POST", url, "/", body=b"{}", timeout=5)
    _, slow = await raw(hangs)
    opened = upstream.opened
    for _ in range(2):
        with pytest.raises(TimeoutError):
            await upstream.request("POST", slow, "/", body=b"{}", timeout=0.2)
    assert upstream.opened == opened + 2, "a connection that timed out mid-answer is never reused"
    for wrong in ("https://example.invalid", "http://127.0.0.1:port", "http:///v2"):
        with pytest.raises(ConnectFailed):
            await upstream.request("GET", wrong, "/", timeout=5)
    await upstream.close()


async def test_an_answer_to_head_ends_with_its_headers_whatever_length_it_announces() -> None:
    """A HEAD answer announces the GET answer's Content-Length and sends no body; waiting for that
    body timed out and counted a failure against the revision."""
    heads: list[bytes] = []

    async def head_then_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                heads.append((await reader.readuntil(b"\r\n\r\n")).split(b" ", 1)[0])
            except asyncio.IncompleteReadError:
                return
            if heads[-1] == b"HEAD":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\nContent-Type: application/json\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()

    listener, url = await raw(head_then_get)
    upstream = Upstream()
    answer = await upstream.request("HEAD", url, "/v2/models/m/ready", timeout=2)
    assert answer.status == 200 and answer.body == b"" and answer.headers["content-length"] == "42"
    assert (await upstream.request("GET", url, "/v2/models/m/ready", timeout=2)).body == b"{}"
    assert heads == [b"HEAD", b"GET"]
    listener.close()
    await upstream.close()


async def test_an_event_stream_nobody_reads_holds_the_revision_back() -> None:
    """A streamed answer is read ahead by at most ``max_unread`` bytes (plus one network read):
    a client that stops reading no longer has the gateway hold the revision's whole answer
    (100 MB read into memory before). Read to its end, the answer is whole and in order, and the
    connection goes back to the pool reading."""
    events = 4000
    sent = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(events):
            await response.write(b"data: %06d " % i + b"x" * 5000 + b"\n\n")
        sent.set()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    client = Upstream()
    try:
        answer = await client.request("POST", url, "/v1/chat/completions", body=b"{}", timeout=10, stream=True)
        assert answer.stream is not None
        await asyncio.sleep(1.0)  # nobody reads; the revision fills its socket and waits
        assert not sent.is_set()
        assert answer.stream.unread <= answer.stream.max_unread + (1 << 18)
        body = b"".join([piece async for piece in answer.stream.pieces(10)])
        assert sent.is_set()
        assert body.count(b"data: ") == events
        assert [int(line[6:12]) for line in body.split(b"\n\n") if line] == list(range(events))
        again = await client.request("POST", url, "/v1/chat/completions", body=b"{}", timeout=10, stream=True)
        assert again.stream is not None
        assert len(b"".join([piece async for piece in again.stream.pieces(10)])) == len(body)
        assert client.opened == 1  # the paused connection was resumed before it went back to the pool
    finally:
        await client.close()
        await runner.cleanup()
