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
``request_compression_algorithm``) are decoded by :func:`decoded` (``http.request_body``) into
at most the request size limit, however far they would expand.
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


DECODED = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
"""The Content-Encodings :func:`decoded` reads (x-gzip is gzip's old name, RFC 9110 8.4.1.3)."""


class TooLarge(ValueError):
    """A body that decodes to more than the limit it was given."""


def decoded(body: bytes, content_encoding: str | None, limit: int | None = None) -> bytes:
    """``body`` decoded from its ``Content-Encoding``: gzip (every member of it), deflate
    (zlib-wrapped as RFC 9110 says, or the raw stream some clients send), none or identity (as it
    is). The output stops at ``limit`` bytes, so a small body that expands to gigabytes never
    takes more memory than the limit. Raises ``TooLarge`` past ``limit`` and ValueError for
    another coding or a body that does not decode (corrupt or truncated)."""
    coding = (content_encoding or "identity").strip().lower()
    if coding not in DECODED:
        raise ValueError(f"Content-Encoding {coding!r} cannot be decoded here")
    if coding in ("", "identity"):
        if limit is not None and len(body) > limit:
            raise TooLarge(f"the body has more than {limit} bytes")
        return body
    room = len(body) * 1032 + 64 if limit is None else limit  # deflate expands 1032:1 at most
    parts: list[bytes] = []
    rest = body
    while rest:
        decoder = zlib.decompressobj(_window(coding, rest))
        try:
            part = decoder.decompress(rest, room + 1)
        except zlib.error as error:
            raise ValueError(f"the body does not decode as {coding}: {error}") from None
        if len(part) > room:
            raise TooLarge(f"the body decodes to more than {limit} bytes")
        if not decoder.eof:
            raise ValueError(f"the body does not decode as {coding}: it ends early")
        parts.append(part)
        room -= len(part)
        rest = decoder.unused_data if coding != "deflate" else b""  # gzip may hold several members
    return b"".join(parts)


def _window(coding: str, data: bytes) -> int:
    """zlib's ``wbits`` for ``data`` in ``coding``: a gzip member, a zlib stream, or raw deflate
    (a deflate body whose first two bytes are not a zlib header)."""
    if coding != "deflate":
        return 16 + zlib.MAX_WBITS
    zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
    return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def compressed(request: web.Request, response: web.Response, min_bytes: int = MIN_BYTES) -> web.Response:
    """``response``, set to be compressed in the coding ``request`` accepts when its body is at
    least ``min_bytes`` long; unchanged otherwise."""
    body = response.body
    if isinstance(body, bytes | bytearray) and len(body) >= min_bytes:
        coding = preferred_coding(request.headers.get("Accept-Encoding"))
        if coding is not None:
            response.enable_compression(coding)
    return response
