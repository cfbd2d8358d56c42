"""The server's HTTP wiring in process (aiohttp's test server on loopback, no `cutover serve`
process): errors as JSON bodies with their status, Retry-After while loading, the revision on
every answer, readiness, and infer and chat answers counted by status code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cutover.api.contract import REVISION_HEADER
from cutover.serving.http import EventStream
from cutover.serving.server import ModelServer

from .test_pipeline import Classifier, config

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def server() -> AsyncIterator[tuple[ModelServer, Client]]:
    server = ModelServer(config(), Classifier())
    async with TestClient(TestServer(server.app())) as client:
        yield server, client
    await server.close()


INFER = "/v2/models/classifier/infer"
ROWS = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}


async def test_before_the_model_loads_requests_get_503_with_retry_after_and_the_reason(
    server: tuple[ModelServer, Client],
) -> None:
    _, client = server

    answer = await client.post(INFER, json=ROWS)
    ready = await client.get("/v2/health/ready")

    assert answer.status == 503 and answer.headers["Retry-After"] == "1"
    assert await answer.json() == {"error": "model 'classifier' is not ready: loading"}
    assert answer.headers[REVISION_HEADER] == "rev-1"
    assert ready.status == 503 and await ready.json() == {"ready": False, "error": "loading"}


async def test_once_loaded_answers_and_errors_are_json_named_by_revision_and_counted(
    server: tuple[ModelServer, Client],
) -> None:
    model_server, client = server
    await model_server.load()

    answers = {
        "ok": await client.post(INFER, json=ROWS),
        "bad": await client.post(INFER, data=b"{not json"),
        "model": await client.post("/v2/models/other/infer", json=ROWS),
        "version": await client.get("/v2/models/classifier/versions/7/ready"),
        "route": await client.get("/v2/nothing"),
        "chat": await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}),
    }

    assert {name: answer.status for name, answer in answers.items()} == {
        "ok": 200,
        "bad": 400,
        "model": 404,
        "version": 404,
        "route": 404,
        "chat": 404,
    }
    assert (await answers["ok"].json())["outputs"][0]["name"] == "probabilities"
    assert (await answers["route"].json()) == {"error": "Not Found"}
    assert (await answers["chat"].json())["error"] == {
        "message": "this model takes tensors; chat completions need an llm model",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    assert {answer.headers[REVISION_HEADER] for answer in answers.values()} == {"rev-1"}
    assert (await client.get("/v2/health/ready")).status == 200
    assert "cutover_serving_requests_total" in await (await client.get("/metrics")).text()
    labels = {"namespace": "tests", "model": "classifier", "revision": "rev-1"}
    registry = model_server.metrics.registry
    counted = {
        code: registry.get_sample_value("cutover_serving_requests_total", {**labels, "code": code})
        for code in ("200", "400", "404")
    }
    assert counted == {"200": 1, "400": 1, "404": 2}, "infer and chat answers only, by status"


async def test_draining_turns_readiness_to_503_while_requests_are_still_served(
    server: tuple[ModelServer, Client],
) -> None:
    model_server, client = server
    await model_server.load()
    model_server.draining = True

    ready = await client.get("/v2/health/ready")
    model_ready = await client.get("/v2/models/classifier/ready")
    answer = await client.post(INFER, json=ROWS)

    assert ready.status == 503 and await ready.json() == {"ready": False, "error": "shutting down"}
    assert await model_ready.json() == {"name": "classifier", "ready": False, "error": "shutting down"}
    assert answer.status == 200


class CountedWrites:
    """The transport writes of one answer: ``calls`` holds the bytes of each call."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.calls: list[bytes] = []
        write, writelines = transport.write, transport.writelines

        def counted_write(data: bytes | bytearray | memoryview) -> None:
            self.calls.append(bytes(data))
            write(data)

        def counted_writelines(chunks: Iterable[bytes | bytearray | memoryview]) -> None:
            chunks = list(chunks)
            self.calls.append(b"".join(chunks))
            writelines(chunks)

        transport.write = counted_write  # type: ignore[method-assign]
        transport.writelines = counted_writelines  # type: ignore[method-assign]


async def test_events_sent_together_go_out_in_one_write_with_the_headers() -> None:
    """The headers, and the events sent before the handler next waits, are one write each time;
    a lone event goes out as soon as the handler waits, without a timer; the last event ends the
    body in the same write."""
    go_on = asyncio.Event()
    writes: list[CountedWrites] = []
    seen_before_go: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        assert isinstance(request.transport, asyncio.Transport)
        counted = CountedWrites(request.transport)
        writes.append(counted)
        response = EventStream(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(3):
            await response.send(b"data: %d\n\n" % i)
        await asyncio.sleep(0.05)  # waiting for an upstream: what was sent goes out meanwhile
        seen_before_go.extend(counted.calls)
        await go_on.wait()
        await response.send(b"data: 3\n\n")
        await response.write_eof(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_get("/events", handler)
    async with TestClient(TestServer(app)) as client:
        answer = await client.get("/events")
        assert answer.status == 200
        first = await answer.content.readuntil(b"data: 2\n\n")
        assert first == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"  # readable before the handler went on
        go_on.set()
        rest = await answer.read()
    assert rest == b"data: 3\n\ndata: [DONE]\n\n"
    calls = writes[0].calls
    assert len(seen_before_go) == 1 and seen_before_go[0].startswith(b"HTTP/1.1 200")
    assert seen_before_go[0].endswith(b"data: 0\n\ndata: 1\n\ndata: 2\n\n\r\n")
    assert len(calls) == 3, calls  # then the lone event, then the last with the body's end
    assert calls[2].endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


async def test_a_client_that_does_not_read_holds_the_sender_back() -> None:
    """Past ``max_pending`` queued bytes, ``send`` waits until the queue is written, so a client
    that stops reading stops the handler (and its upstream) rather than growing its memory."""
    sent = 0
    stalled = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = EventStream(max_pending=1 << 16, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        piece = b"data: " + b"x" * 1000 + b"\n\n"
        while sent < 1 << 30:
            try:
                async with asyncio.timeout(0.5):
                    await response.send(piece)
            except TimeoutError:
                stalled.set()
                break
            assert response.pending_bytes <= (1 << 16) + len(piece)
            sent += len(piece)
        response.abandon()
        return response

    app = web.Application()
    app.router.add_get("/events", handler)
    async with TestClient(TestServer(app)) as client:
        answer = await client.get("/events")
        async with asyncio.timeout(30):
            await stalled.wait()
        answer.close()
    assert sent < 1 << 28  # held back by the socket's buffers, not a gigabyte queued


async def test_writes_keep_their_place_and_nothing_is_sent_after_the_end() -> None:
    """``write`` goes behind what was sent before it; ``send`` after ``write_eof`` raises at once
    (before, it was dropped and its task's error went unretrieved); ``abandon`` empties the
    queue, its count included."""
    failures: list[str] = []
    left: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        response = EventStream(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.send(b"A")
        await response.write(b"B")
        await response.send(b"C")
        await response.write_eof(b"D")
        try:
            await response.send(b"E")
        except RuntimeError as error:
            failures.append(str(error))
        return response

    async def abandoned(request: web.Request) -> web.StreamResponse:
        response = EventStream(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.send(b"x" * 100)  # queued; its flush has not run yet
        response.abandon()
        left.append(response.pending_bytes)
        return response

    app = web.Application()
    app.router.add_get("/events", handler)
    app.router.add_get("/abandoned", abandoned)
    async with TestClient(TestServer(app)) as client:
        assert await (await client.get("/events")).read() == b"ABCD"
        assert await (await client.get("/abandoned")).read() == b""
    assert failures == ["cannot send after write_eof()"]
    assert left == [0]
