"""A language model behind an OpenAI-compatible upstream (vLLM, TGI, llama.cpp, a hosted API),
called with aiohttp's client. Our pod exposes the same chat endpoint, so safety filters, the audit log
and the rollout's metrics sit between clients and the upstream; the Open Inference Protocol
form takes ``text_input`` and answers ``text_output`` (one user message per row).

How the upstream's failures reach the client (``serving/errors.py``'s ``upstream_failure``):
429 stays ``TooManyRequests`` and 503 ``Overloaded``, each with the upstream's ``Retry-After``;
400, 413 and 422 are the client's request refused (400, with the upstream's reason); 401, 403
(cutover's own upstream key refused), 404 (a wrong ``--upstream`` or ``--upstream-model``) and
every other status are an ``UpstreamError`` (502) naming the cause. Transport failures are a 502
whose message names the kind (timed out after N s, cannot connect, broke off the answer) and
never comes out empty, and so is an answer that is not the JSON (or the event stream) asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
import numpy as np
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from ..errors import InvalidInput, ServingError, UpstreamError, upstream_failure
from ..tracing import propagated
from .base import Adapter, TensorInfo

READY_CACHE_SECONDS = 5.0


class LLMAdapter(Adapter):
    """Chat completions forwarded to the OpenAI-compatible server at ``url`` (with or without
    its ``/v1``), as ``model``, with ``api_key`` as a bearer token; ``timeout`` (seconds) bounds
    connecting and each read, so a stream may last longer as long as tokens keep coming."""

    platform = "openai_chat"
    inputs = (TensorInfo("text_input", "BYTES", (-1,)),)
    outputs = (TensorInfo("text_output", "BYTES", (-1,)),)

    def __init__(self, url: str, model: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else f"{base}/v1"
        self.model = model
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None
        self._proxy: URL | None = None
        """The proxy the upstream is reached through, once the session is made."""
        self._ready_at = 0.0
        self._ready = False

    @property
    def batchable(self) -> bool:
        return False

    @property
    def _name(self) -> str:
        return f"the upstream {self.base}"

    async def load(self) -> None:
        if not await self.ready():
            raise UpstreamError(self.not_ready_reason or f"{self._name} is not ready")

    def _client(self) -> aiohttp.ClientSession:
        """The session to the upstream, made on first use (inside the event loop): pooled
        keep-alive connections, ``timeout`` for connecting and for each read, the proxy the
        environment names for the upstream (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``), CA
        bundles from ``SSL_CERT_FILE`` (read by OpenSSL).

        The proxy is looked up once, here: aiohttp's ``trust_env`` looks it up, and ``~/.netrc``,
        on a thread for every request, two hand-offs that added about a millisecond to each
        streamed answer's first token on the benchmark's machine (``benchmarks/streaming.py``).
        The upstream's credentials never come from ``~/.netrc`` (its key is ``api_key``); the
        proxy's may, as aiohttp reads them for a proxy named without any."""
        if self._session is None:
            proxy, proxy_auth = None, None
            # LookupError: no proxy for this upstream; ValueError: a URL that does not parse,
            # which each request then fails on with a 502 naming the upstream.
            with contextlib.suppress(LookupError, ValueError):
                proxy, proxy_auth = get_env_proxy_for_url(URL(self.base))
            if proxy is not None and proxy_auth is not None:  # in the URL: aiohttp's proxy_auth is deprecated
                proxy = proxy.with_user(proxy_auth.login).with_password(proxy_auth.password)
            self._proxy = proxy.with_user(None) if proxy is not None else None  # named in errors, without secrets
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=self.timeout),
                connector=aiohttp.TCPConnector(limit=256),
                proxy=proxy,
            )
        return self._session

    async def chat(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The upstream's chat completion for ``request`` (its ``model`` replaced by the
        upstream's, ``stream`` off), answered as the client's model. Raises the errors of the
        module docstring."""
        forwarded = _json_body({**request, "model": self.model, "stream": False})
        try:
            async with self._client().post(
                f"{self.base}/chat/completions", data=forwarded, headers=propagated(JSON_HEADERS)
            ) as response:
                text = await response.text(errors="replace")
                if response.status != 200:
                    raise self._refusal(response, text)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise self._transport_failure(error) from None
        try:
            body = json.loads(text)
        except ValueError:
            raise UpstreamError(f"{self._name} answered malformed JSON: {text[:200]!r}") from None
        if not isinstance(body, dict):
            raise UpstreamError(f"{self._name} answered JSON that is not a chat completion: {text[:200]!r}")
        body["model"] = request.get("model") or body.get("model")
        return body

    async def chat_stream(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """The upstream's chat completion for ``request`` streamed: each ``data:`` event's chunk
        (``chat.completion.chunk``) as it arrives, until ``[DONE]``. ``stream_options`` (such
        as ``include_usage``) go through as sent. Raises the errors of the module docstring,
        before the first chunk for a refusal, or mid-stream (an ``error`` event, a chunk that is
        not JSON, a connection that breaks off)."""
        forwarded = _json_body({**request, "model": self.model, "stream": True})
        try:
            url, headers = f"{self.base}/chat/completions", propagated(JSON_HEADERS)
            async with self._client().post(url, data=forwarded, headers=headers) as response:
                if response.status != 200:
                    raise self._refusal(response, await response.text(errors="replace"))
                kind = response.headers.get("Content-Type", "")
                if not kind.startswith("text/event-stream"):
                    raise UpstreamError(f"{self._name} did not stream: it answered Content-Type {kind!r}")
                lines = event_lines(response.content)
                async for line in lines:
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        await _drain(lines)
                        return
                    yield self._chunk(data, request)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise self._transport_failure(error) from None
        raise UpstreamError(f"{self._name} ended the stream without data: [DONE]: the answer may be cut short")

    def _chunk(self, data: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """One streamed chunk as the client gets it (named by the client's model)."""
        try:
            chunk = json.loads(data)
        except ValueError:
            raise UpstreamError(f"{self._name} streamed an event that is not JSON: {data[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise UpstreamError(f"{self._name} streamed an event that is not a chunk: {data[:200]!r}")
        if chunk.get("error"):
            raise UpstreamError(f"{self._name} failed mid-stream: {_message(chunk)}")
        chunk["model"] = request.get("model") or chunk.get("model")
        return chunk

    def _refusal(self, response: aiohttp.ClientResponse, text: str) -> ServingError:
        """The error for an upstream answer that is not a 200, whose body is ``text``
        (``upstream_failure``'s mapping)."""
        try:
            message = _message(json.loads(text))
        except ValueError:
            message = text[:500].strip()
        if response.status == 407 and self._proxy is not None:  # the environment's proxy refused, not the upstream
            refused = f"the proxy {self._proxy} refused cutover's credentials on the way to {self._name} (407)"
            return UpstreamError(refused)
        return upstream_failure(self._name, response.status, message, response.headers.get("Retry-After"))

    def _transport_failure(self, error: aiohttp.ClientError | TimeoutError) -> UpstreamError:
        """A 502 naming how the upstream failed to answer; the client's own message is often empty."""
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if isinstance(error, TimeoutError):  # aiohttp's connect and read timeouts are TimeoutErrors
            return UpstreamError(f"{self._name} timed out after {self.timeout:g} s ({detail})")
        if isinstance(error, aiohttp.ClientProxyConnectionError):  # before its base class
            return UpstreamError(f"cannot connect to the proxy for {self._name} ({detail})")
        if isinstance(error, aiohttp.ClientHttpProxyError):
            return UpstreamError(f"the proxy for {self._name} refused the connection ({detail})")
        if isinstance(error, aiohttp.ClientConnectorError):
            return UpstreamError(f"cannot connect to {self._name} ({detail})")
        if isinstance(error, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
            return UpstreamError(f"{self._name} broke off the answer ({detail})")
        return UpstreamError(f"{self._name} failed ({detail})")

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = inputs.get("text_input")
        if prompts is None:
            raise InvalidInput("an llm model takes one BYTES input named text_input")
        answers = await asyncio.gather(
            *(
                self.chat({"messages": [{"role": "user", "content": p.decode(errors="replace")}]})
                for p in prompts.ravel()
            )
        )
        texts = np.empty(len(answers), dtype=object)
        texts[:] = [str((a.get("choices") or [{}])[0].get("message", {}).get("content", "")).encode() for a in answers]
        return {"text_output": texts.reshape(prompts.shape)}

    async def ready(self) -> bool:
        """Whether ``GET /v1/models`` answers 2xx (asked at most every READY_CACHE_SECONDS); any
        other answer leaves ``not_ready_reason`` saying why (credentials, a wrong path)."""
        now = time.monotonic()
        if now - self._ready_at > READY_CACHE_SECONDS:
            url = f"{self.base}/models"
            try:
                async with self._client().get(url) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                self.not_ready_reason = str(self._transport_failure(error))
            else:
                self.not_ready_reason = None if 200 <= status < 300 else _unready(url, status)
            self._ready = self.not_ready_reason is None
            self._ready_at = now
        return self._ready

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


JSON_HEADERS = {"Content-Type": "application/json"}
DRAIN_SECONDS = 0.5


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read what follows ``[DONE]`` to the end of the body (for at most DRAIN_SECONDS), so the
    client keeps the connection for the next request: the end of the chunked body comes after
    the last event, and a stream left before it closes the connection, which cost every
    streamed answer a new TCP connection to the upstream, set up before its first token."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError, UpstreamError):  # the answer is whole
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in lines:
                pass


MAX_EVENT_LINE_BYTES = 16 << 20
"""The longest line of an event stream read from the upstream (16 MiB): a chunk is a few hundred
bytes, a whole answer in one event a few hundred KB; an upstream that never ends a line is cut off."""


async def event_lines(body: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The lines of an event stream as they arrive, without their ends (CRLF, LF or CR ends a
    line: the HTML Living Standard's server-sent events), decoded as UTF-8 with bad bytes
    replaced. aiohttp's own line reader refuses lines over twice its read buffer (128 KiB).
    Raises ``UpstreamError`` for a line over MAX_EVENT_LINE_BYTES."""
    pending = b""
    async for piece in body.iter_any():
        lines = (pending + piece).splitlines(keepends=True)
        pending = lines.pop() if lines and not lines[-1].endswith((b"\n", b"\r")) else b""
        if len(pending) > MAX_EVENT_LINE_BYTES:
            raise UpstreamError(f"the upstream streamed a line of over {MAX_EVENT_LINE_BYTES >> 20} MiB")
        for line in lines:
            yield line.rstrip(b"\r\n").decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")


def _json_body(request: Mapping[str, Any]) -> bytes:
    """``request`` as the UTF-8 JSON body sent upstream. Raises ``InvalidInput`` for what the
    client's JSON may hold (Python's reader takes it) and no JSON body can carry on: text with a
    lone surrogate (an escaped ``"\\ud800"``), a number that is NaN or infinite."""
    try:
        return json.dumps(request, ensure_ascii=False, allow_nan=False).encode()
    except UnicodeEncodeError:
        raise InvalidInput("the request holds text that is not Unicode (a lone surrogate escape)") from None
    except ValueError:
        raise InvalidInput("the request holds a number that is NaN or infinite, which JSON cannot carry") from None


def _unready(url: str, status: int) -> str:
    """Why an upstream that answered ``status`` to ``GET url`` cannot serve chat completions."""
    if status in (401, 403):
        return f"the upstream refused cutover's credentials ({status} from GET {url}): check its API key"
    if status == 404:
        return f"the upstream has no {url} (404): --upstream must be an OpenAI-compatible server's address"
    return f"the upstream answered {status} to GET {url}"


def _message(body: Any) -> str:
    """The reason in an upstream's error body: OpenAI's ``{"error": {"message"}}``, TGI's
    ``{"error": "..."}``, a bare ``{"message"}``, or the body itself in short."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return json.dumps(body)[:500]
