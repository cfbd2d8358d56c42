"""A remote Triton (or any Open Inference Protocol server), called over HTTP with binary tensors
both ways (``serving/protocol.py``'s codec, which the fallback chain uses too). Our pod adds what
Triton lacks in front of it: validation, fallbacks, the audit log and the metrics the rollout
analysis reads.

The upstream's status reaches the client as what it means (``errors.upstream_failure``): 429 and
503 stay overload, with the upstream's ``Retry-After``; a refusal of the request (400, 413, 422)
is the client's 400; a refusal of cutover's credentials, a missing model and every other failure
is a 502 that names the cause; so is a timeout ("did not answer within 30 s") or an upstream that
cannot be reached. ``tritonclient.http.aio`` is not used here: its exception carries the status
and message but not the response's headers, so ``Retry-After`` would be lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import numpy as np

from ..errors import InvalidInput, UpstreamError, upstream_failure
from ..protocol import HEADER_LENGTH, assemble, decode_response, encode_tensors
from ..tracing import propagated
from .base import Adapter, TensorInfo

READY_CACHE_SECONDS = 1.0


class TritonAdapter(Adapter):
    platform = "triton_remote"

    def __init__(self, url: str, model: str, *, timeout: float = 30.0) -> None:
        self.base = (url if "://" in url else f"http://{url}").rstrip("/")
        self.model = model
        self.timeout = timeout
        self.upstream = f"upstream Triton {self.base}"
        """How errors name it."""
        self._session: aiohttp.ClientSession | None = None
        self._ready_at = 0.0
        self._ready = False

    async def load(self) -> None:
        if self._session is None:  # a load that failed is retried with the same session
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        body, _ = await self._call("GET", f"/v2/models/{self.model}")
        metadata = json.loads(body)
        platform = metadata.get("platform")
        if platform:
            self.platform = f"triton_{platform}"  # type: ignore[misc]
        self.inputs = [_info(t) for t in metadata["inputs"]]
        self.outputs = [_info(t) for t in metadata["outputs"]]

    async def _call(
        self, method: str, path: str, body: bytes | None = None, header_length: int | None = None
    ) -> tuple[bytes, str | None]:
        """The body of the upstream's 200 answer and its ``Inference-Header-Content-Length``
        (``header_length`` is the request's); raises what ``upstream_failure`` maps any other
        status to, and ``UpstreamError`` for a timeout or an upstream that cannot be reached."""
        assert self._session is not None, "load() first"
        headers = propagated({} if header_length is None else {HEADER_LENGTH: str(header_length)})
        try:
            async with self._session.request(method, self.base + path, data=body, headers=headers) as response:
                payload = await response.read()
                if response.status != 200:
                    raise upstream_failure(
                        self.upstream, response.status, _reason(payload), response.headers.get("Retry-After")
                    )
                return payload, response.headers.get(HEADER_LENGTH)
        except TimeoutError:
            raise UpstreamError(f"{self.upstream} did not answer within {self.timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as error:
            raise UpstreamError(f"{self.upstream} unreachable: {error or type(error).__name__}") from None

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors, buffers = encode_tensors(inputs, dict.fromkeys(inputs, True))
        wanted = [{"name": t.name, "parameters": {"binary_data": True}} for t in self.outputs]
        body, length = assemble({"inputs": tensors, "outputs": wanted}, buffers)
        payload, answer_length = await self._call("POST", f"/v2/models/{self.model}/infer", body, length)
        try:
            _, arrays = decode_response(payload, answer_length)
        except (InvalidInput, ValueError, KeyError, TypeError) as error:
            raise UpstreamError(f"{self.upstream} answered what is not an inference response: {error}") from None
        missing = [t.name for t in self.outputs if t.name not in arrays]
        if missing:
            raise UpstreamError(f"{self.upstream} answered without output {missing[0]!r}")
        return {t.name: arrays[t.name] for t in self.outputs}

    async def ready(self) -> bool:
        now = time.monotonic()
        if now - self._ready_at > READY_CACHE_SECONDS:
            try:
                await self._call("GET", f"/v2/models/{self.model}/ready")
                self._ready = True
            except Exception:
                self._ready = False
            self._ready_at = now
        return self._ready

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _info(tensor: Mapping[str, Any]) -> TensorInfo:
    return TensorInfo(tensor["name"], tensor["datatype"], tuple(int(d) for d in tensor["shape"]))


def _reason(payload: bytes) -> str:
    """The message of an error body: ``{"error": "..."}`` as the protocol has it, else its text."""
    try:
        error = json.loads(payload).get("error")
    except (ValueError, AttributeError):
        error = None
    return error if isinstance(error, str) else payload[:300].decode("utf-8", "replace").strip()
