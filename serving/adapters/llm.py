"""A language model behind an OpenAI-compatible upstream (vLLM, TGI, llama.cpp, a hosted API),
called with httpx. Our pod exposes the same chat endpoint, so safety filters, the audit log
and the rollout's metrics sit between clients and the upstream; the Open Inference Protocol
form takes ``text_input`` and answers ``text_output`` (one user message per row)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np

from ..errors import InvalidInput, UpstreamError
from .base import Adapter, TensorInfo

READY_CACHE_SECONDS = 5.0


class LLMAdapter(Adapter):
    platform = "openai_chat"
    inputs = (TensorInfo("text_input", "BYTES", (-1,)),)
    outputs = (TensorInfo("text_output", "BYTES", (-1,)),)

    def __init__(self, url: str, model: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else f"{base}/v1"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers, timeout=timeout, limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)
        )
        self._ready_at = 0.0
        self._ready = False

    @property
    def batchable(self) -> bool:
        return False

    async def load(self) -> None:
        if not await self.ready():
            raise UpstreamError(f"the upstream {self.base} does not answer")

    async def chat(self, request: Mapping[str, Any]) -> dict[str, Any]:
        forwarded = {**request, "model": self.model, "stream": False}
        try:
            response = await self._client.post(f"{self.base}/chat/completions", json=forwarded)
        except httpx.HTTPError as error:
            raise UpstreamError(f"upstream {self.base} unreachable: {error}") from None
        if 400 <= response.status_code < 500:
            raise InvalidInput(f"upstream refused the request ({response.status_code}): {response.text[:500]}")
        if response.status_code != 200:
            raise UpstreamError(f"upstream answered {response.status_code}: {response.text[:500]}")
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise UpstreamError("upstream answered with malformed JSON") from None
        body["model"] = request.get("model") or body.get("model")
        return body

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
        now = time.monotonic()
        if now - self._ready_at > READY_CACHE_SECONDS:
            try:
                response = await self._client.get(f"{self.base}/models")
                self._ready = response.status_code < 500
            except httpx.HTTPError:
                self._ready = False
            self._ready_at = now
        return self._ready

    async def close(self) -> None:
        await self._client.aclose()
