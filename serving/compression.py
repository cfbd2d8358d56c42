"""Response compression for the answers that can be large: inference and chat completions.

A client that sends ``Accept-Encoding`` with gzip or deflate gets its answer compressed in that
coding (the one it weighs higher by ``q``; gzip on a tie), the body whole (aiohttp compresses
bodies over 4 KiB on a worker thread, so the event loop keeps answering probes). The
``Inference-Header-Content-Length`` of a binary answer still counts the uncompressed JSON
header, as Triton sends it and ``tritonclient`` reads it after decompressing.

Not compressed:

- an answer under ``MIN_BYTES``: it fits one TCP segment either way, so compressing it only adds
  latency (most answers of a small classifier are a few hundred bytes);
- other codings (br, zstd): ``tritonclient`` decodes only gzip and deflate, and its asyncio client
  sends aiohttp's default ``Accept-Encoding: gzip, deflate, br`` on every call;
- errors and every other route (metadata, statistics, health): ``tritonclient.http.aio`` asks
  for compression on every call but decompresses only inference answers, and reads an error's
  body raw to show its reason.

Request bodies sent with ``Content-Encoding: gzip`` or ``deflate`` (``tritonclient``'s
``request_compression_algorithm``) are decoded by aiohttp before the pipeline reads them.
Source: RFC 9110 section 12.5.3 (Accept-Encoding); Triton's HTTP server compresses the same way,
inference answers only.
"""

from __future__ import annotations

import zlib

from aiohttp import web
from aiohttp.web_response import ContentCoding

MIN_BYTES = 1400
"""Answers shorter than this (about one TCP segment on a 1500-byte MTU) go uncompressed."""
CODINGS = {"gzip": ContentCoding.gzip, "deflate": ContentCoding.deflate}
"""The codings offered, in the order preferred on a tie."""


def preferred_coding(accept_encoding: str | None) -> ContentCoding | None:
    """The coding to answer with for an ``Accept-Encoding`` header value: gzip or deflate,
    whichever has the higher ``q`` (``*`` stands for any not named; ``q=0`` refuses), gzip on a
    tie; None when the client accepts neither (or sent no header)."""
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        coding, _, parameters = item.partition(";")
        weight = 1.0
        for parameter in parameters.split(";"):
            key, _, value = parameter.partition("=")
            if key.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.strip()] = weight
    wildcard = weights.get("*", 0.0)
    best, best_weight = None, 0.0
    for name, coding_value in CODINGS.items():
        weight = weights.get(name, wildcard)
        if weight > best_weight:
            best, best_weight = coding_value, weight
    return best


def decoded(body: bytes, content_encoding: str | None) -> bytes:
    """``body`` decoded from its ``Content-Encoding`` (gzip or deflate; none or identity: as it
    is). Raises ValueError for another coding or a body that does not decode."""
    coding = (content_encoding or "identity").strip().lower()
    try:
        if coding == "gzip":
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if coding == "deflate":
            # RFC 9110 deflate is zlib-wrapped; some servers send the raw stream, so try both.
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except zlib.error as error:
        raise ValueError(f"the body does not decode as {coding}: {error}") from None
    if coding != "identity":
        raise ValueError(f"Content-Encoding {coding!r} cannot be decoded here")
    return body


def compressed(request: web.Request, response: web.Response, min_bytes: int = MIN_BYTES) -> web.Response:
    """``response``, set to be compressed in the coding ``request`` accepts when its body is at
    least ``min_bytes`` long; unchanged otherwise."""
    body = response.body
    if isinstance(body, bytes | bytearray) and len(body) >= min_bytes:
        coding = preferred_coding(request.headers.get("Accept-Encoding"))
        if coding is not None:
            response.enable_compression(coding)
    return response
