"""Faults an adversarial review found in the gateway, each as the client would see it: a request
that the gateway itself mishandles never counts a failure against a revision, and bad client input
gets a 4xx JSON error, never a 500."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .support import key_secret, openai_error
from .test_gateway_requests import MODEL, Revision, Stack, comparisons, deployment, settled, shadowing, stack

__all__ = ["stack"]  # the fixture, used by name


@dataclass
class Recording(Revision):
    """A fake revision that also records each request's Content-Encoding, Content-Length and body."""

    seen: list[tuple[str | None, str | None, bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        headers = request.headers
        self.seen.append((headers.get("Content-Encoding"), headers.get("Content-Length"), await request.read()))
        return await super().handle(request)


def split(weight_a: int = 100) -> dict[str, Any]:
    return deployment(
        [
            {"revision": "aaa", "role": "stable", "weight": weight_a},
            {"revision": "bbb", "role": "candidate", "weight": 100 - weight_a},
        ],
        history={"aaa": "1"},
        candidate="bbb",
        version="2",
    )


async def test_head_requests_are_answered_and_never_open_a_revisions_circuit(stack: Stack) -> None:
    """aiohttp serves HEAD on every GET route; the gateway once waited for the body a HEAD answer
    announces but never sends, timed out and counted a failure, so a few HEADs from any key holder
    took a revision offline."""
    client, gateway = await stack([Revision("aaa", "1"), Revision("bbb", "2")], split())
    gateway.config.backend_timeout = 2.0
    for path in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1/ready", f"/v2/models/{MODEL}/config"):
        for _ in range(gateway.config.breaker_failures + 1):
            answer = await client.request("HEAD", path)
            assert answer.status == 200, path
    assert all(breaker.state == "closed" for breaker in gateway._breakers.values())
    assert (await client.get(f"/v2/models/{MODEL}/versions/1/ready")).status == 200


async def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes no HTTP client library would (headers that are not UTF-8); the status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    writer.write(head + f"Host: gateway\r\nConnection: close\r\n{length}\r\n".encode() + body)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def json_error(status: int, body: bytes, expected: int) -> str:
    assert status == expected, (status, body[:200])
    error = json.loads(body)["error"]
    assert isinstance(error, str) and error
    return error


async def test_malformed_keys_headers_and_bodies_get_a_4xx_json_error_never_a_500(stack: Stack) -> None:
    """Every way client input once raised inside the gateway: a key or a sticky header that is not
    UTF-8 (hashed with a strict encode), a chat body nested past the parser's recursion limit
    (reachable without a key), a body that does not decode as its Content-Encoding says."""
    shadowed = Revision("bbb", "2")
    md = split(50)
    md["spec"]["strategy"]["abTest"] = {"assignment": {"by": "hashKey", "name": "X-User"}}
    client, gateway = await stack([Revision("aaa", "1"), shadowed], md)
    gateway.config.auth = True
    gateway.keys.replace([key_secret("admin", "cut_admin", "admin")])
    port = client.server.port
    assert port is not None
    key = b"X-API-Key: cut_admin\r\n"
    get = f"GET /v2/models/{MODEL} HTTP/1.1\r\n".encode()
    infer = f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\n".encode()
    chat = b"POST /v1/chat/completions HTTP/1.1\r\n"
    for head in (get + b"X-API-Key: \xff\xfe\r\n", get + b"Authorization: Bearer cut_\xc3\x28\r\n"):
        assert json_error(*await raw_request(port, head), 401) == "unknown API key"
    assert (await raw_request(port, get + key + b"X-User: \xff\r\n"))[0] == 200
    deep = b"[" * 200_000
    # The model name is parsed before the key is checked (the key's models limit what it may call).
    # Errors on /v1 are OpenAI's error object, which the openai client reads.
    status, body = await raw_request(port, chat, deep)
    assert status == 401 and "API key is required" in openai_error(json.loads(body))
    status, body = await raw_request(port, chat + key, deep)
    assert status == 400 and "model name" in openai_error(json.loads(body))
    for encoding in (b"gzip", b"deflate"):
        head = infer + key + b"Content-Encoding: " + encoding + b"\r\n"
        assert "cannot be read" in json_error(*await raw_request(port, head, b"not compressed"), 400)
    for encoding in (b"compress", b"br"):  # br: no client of the protocols sends it; see serving/http.py
        head = infer + key + b"Content-Encoding: " + encoding + b"\r\n"
        assert "not supported" in json_error(*await raw_request(port, head, b"{}"), 415)
    assert all(breaker.state == "closed" for breaker in gateway._breakers.values())


async def test_a_compressed_body_is_forwarded_decoded_with_headers_that_say_so(stack: Stack) -> None:
    """aiohttp decodes a gzip body; the gateway once forwarded it still labelled gzip, which the
    revision then failed to decode."""
    revision = Recording("aaa", "1")
    client, _ = await stack([revision], deployment([{"revision": "aaa", "role": "stable", "weight": 100}]))
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).encode()
    for encoded, encoding in ((gzip.compress(body), "gzip"), (zlib.compress(body), "deflate")):
        answer = await client.post(f"/v2/models/{MODEL}/infer", data=encoded, headers={"Content-Encoding": encoding})
        assert answer.status == 200, await answer.text()
    assert revision.seen == [(None, str(len(body)), body)] * 2


@dataclass
class Streaming(Revision):
    """A fake LLM revision that streams its chat answer when asked to, word by word."""

    async def handle(self, request: web.Request) -> web.Response:
        if request.path.endswith("/chat/completions") and (await request.json()).get("stream"):
            chunks = [{"choices": [{"index": 0, "delta": {"content": word + " "}}]} for word in self.chat.split()]
            events = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
            return web.Response(text=events, content_type="text/event-stream")
        return await super().handle(request)


def mirroring() -> dict[str, Any]:
    return shadowing({"agreement": "top1"})


async def test_mirrored_chat_is_compared_as_chat_with_a_query_string_and_when_streamed(stack: Stack) -> None:
    """A chat path with a query string was compared as inference (two answers without outputs:
    agreement); a streamed answer could not be parsed (always disagreement)."""
    same = [Streaming("aaa", "1", chat="Yes it is fraud"), Streaming("bbb", "2", chat="yes, it is fraud")]
    contrary = [Streaming("aaa", "1", chat="Yes it is fraud"), Streaming("bbb", "2", chat="No it is not")]
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Fraud?"}]}
    for revisions, agree in ((same, "true"), (contrary, "false")):
        client, gateway = await stack(revisions, mirroring())
        for path, body in (
            ("/v1/chat/completions?api-version=2024-02-01", request),
            ("/v1/chat/completions", {**request, "stream": True}),
            ("/v1/chat/completions?api-version=2024-02-01", {**request, "stream": True}),
        ):
            assert (await client.post(path, data=json.dumps(body))).status == 200
        await settled(gateway)
        assert comparisons(gateway, "bbb")[agree] == 3.0, (agree, comparisons(gateway, "bbb"))
        assert sum(comparisons(gateway, "bbb").values()) == 3.0
