"""The gateway's list-then-watch loop (cutover.serving.kube) against a small fake API server:
an object as large as the API server stores arrives through the watch as one event, and the
events after it still arrive, without a relist."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cutover.serving.kube import Credentials, EventTooLarge, Watcher, json_lines

LARGE = 1_500_000
"""About etcd's request limit: the largest object the API server stores."""


def secret(name: str, version: str, size: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}, "data": {"blob": "x" * size}}


class FakeApiServer:
    """Lists nothing, then streams the given watch events, each as one JSON line, written in
    64 KiB pieces as a real server flushes them, and holds the stream open."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.lists = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "1":
            self.lists += 1
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
        response = web.StreamResponse()
        await response.prepare(request)
        stream = b"".join(json.dumps(e).encode() + b"\n" for e in self.events)
        for start in range(0, len(stream), 65536):
            await response.write(stream[start : start + 65536])
        await asyncio.sleep(3600)  # an idle watch, until the client goes
        return response


async def collect(events: list[dict[str, Any]], count: int) -> tuple[list[tuple[str, Any]], int]:
    fake = FakeApiServer(events)
    app = web.Application()
    app.router.add_get("/api/v1/secrets", fake.handle)
    server = TestServer(app)
    await server.start_server()
    seen: list[tuple[str, Any]] = []
    try:
        async with aiohttp.ClientSession() as session:
            watcher = Watcher(session, Credentials(str(server.make_url("")).rstrip("/"), False), "/api/v1/secrets")

            async def read() -> None:
                async for event, obj in watcher.events():
                    seen.append((event, obj))
                    if len(seen) == count:
                        return

            await asyncio.wait_for(read(), 20)
    finally:
        await server.close()
    return seen, fake.lists


async def test_an_object_at_the_api_servers_size_limit_arrives_through_the_watch() -> None:
    events = [
        {"type": "ADDED", "object": secret("large", "2", LARGE)},
        {"type": "MODIFIED", "object": secret("small", "3")},
    ]
    seen, lists = await collect(events, 3)
    assert [(event, obj["metadata"]["name"] if event != "SYNC" else obj) for event, obj in seen] == [
        ("SYNC", []),
        ("ADDED", "large"),
        ("MODIFIED", "small"),
    ]
    assert len(seen[1][1]["data"]["blob"]) == LARGE
    assert lists == 1, "the large event ended the watch and forced a relist"


class RestartingApiServer:
    """The first watch times out normally after one event (the client watches on, no restart);
    the second ends with a 410 Gone ERROR event; the second list fails with a 500; after that
    lists answer and the watch stays open."""

    def __init__(self) -> None:
        self.lists = 0
        self.watches = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "1":
            self.lists += 1
            if self.lists == 2:
                return web.json_response({"kind": "Status", "code": 500}, status=500)
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
        self.watches += 1
        response = web.StreamResponse()
        await response.prepare(request)
        if self.watches == 1:
            await response.write(json.dumps({"type": "ADDED", "object": secret("a", "2")}).encode() + b"\n")
            return response  # the server's timeoutSeconds: the stream ends cleanly
        if self.watches == 2:
            gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
            await response.write(json.dumps(gone).encode() + b"\n")
            return response
        await asyncio.sleep(3600)
        return response


async def test_a_relist_is_reported_with_why_and_a_timed_out_watch_is_not_one() -> None:
    """The gateway's and the operator's watch-restart counters (the chart's watch alert) count
    these calls: the API server ended the watch, then the list failed."""
    fake = RestartingApiServer()
    app = web.Application()
    app.router.add_get("/api/v1/secrets", fake.handle)
    server = TestServer(app)
    await server.start_server()
    reasons: list[str] = []
    syncs = 0
    try:
        async with aiohttp.ClientSession() as session:
            credentials = Credentials(str(server.make_url("")).rstrip("/"), False)
            watcher = Watcher(session, credentials, "/api/v1/secrets", reasons.append)

            async def read() -> None:
                nonlocal syncs
                async for event, _ in watcher.events():
                    syncs += event == "SYNC"
                    if syncs == 2:
                        return

            await asyncio.wait_for(read(), 20)
    finally:
        await server.close()
    assert reasons == ["ended", "failed"]
    assert (fake.lists, fake.watches) == (3, 2), "the timed-out watch went on from its resourceVersion"


class Chunks:
    """A stream that hands out the given pieces, as ``aiohttp.StreamReader.iter_any`` does."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


async def lines_of(*pieces: bytes, max_bytes: int = 1 << 20) -> list[bytes]:
    return [line async for line in json_lines(Chunks(*pieces), max_bytes)]  # type: ignore[arg-type]


async def test_json_lines_splits_anywhere_and_skips_blank_lines() -> None:
    assert await lines_of(b'{"a"', b':1}\n\n{"b":2}\n  \n{"c"', b":3}") == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    assert await lines_of(b"\n", b"\n") == []
    assert await lines_of(b"x" * 300_000 + b"\ny\n") == [b"x" * 300_000, b"y"]


async def test_json_lines_refuses_an_endless_line() -> None:
    with pytest.raises(EventTooLarge):
        await lines_of(b"x" * 600, b"x" * 600, max_bytes=1000)
