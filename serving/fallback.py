"""The fallback chain: when the primary model's top-class probability falls below the
configured threshold, the previous version answers, then a simple baseline model, then a safe
default. Each remote or model link sits behind its own circuit breaker, so a link that keeps
failing is skipped at once instead of adding its timeout to every request.

A link's answer is taken when it is confident enough; the safe default is always taken. When no
link can answer, the primary's own answer stands (a low-confidence answer beats none). A primary
model that fails is not hidden behind the chain: it answers 500, so the rollout's analysis sees
the failure and the gateway's retry budget protects the client.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from cutover.api.contract import REVISION_HEADER

from .breaker import CircuitBreaker
from .errors import UpstreamError
from .protocol import HEADER_LENGTH, assemble, decode_response, encode_tensors
from .tracing import propagated

log = logging.getLogger(__name__)
Answer = Callable[[Mapping[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


SMALL_OUTPUT = 256
"""Outputs up to this many elements are read in plain Python: on a few values, numpy's per-call
overhead costs more than the arithmetic, and this runs on every request."""


def top1_confidence(outputs: Mapping[str, np.ndarray], name: str | None) -> list[float] | None:
    """The top-class probability of each row of a classifier's output, or None when the output
    is not a [rows, classes] float tensor. Scores that are not probabilities go through softmax,
    whose top class is exp(0) / sum(exp(score - top))."""
    array = outputs.get(name) if name else next(iter(outputs.values()), None)
    if array is None or array.dtype.kind != "f" or array.ndim != 2 or array.shape[1] < 2 or not array.size:
        return None
    if array.size <= SMALL_OUTPUT:
        rows: list[list[float]] = array.tolist()
        tops = [max(row) for row in rows]
        if min(map(min, rows)) < 0 or max(tops) > 1 or any(abs(sum(row) - 1.0) > 1e-3 for row in rows):
            return [1.0 / sum(math.exp(value - top) for value in row) for row, top in zip(rows, tops, strict=True)]
        return tops
    values = array.astype(np.float64, copy=False)
    top = values.max(axis=1)
    if values.min() < 0 or top.max() > 1 or np.abs(values.sum(axis=1) - 1.0).max() > 1e-3:
        top = 1.0 / np.exp(values - top[:, None]).sum(axis=1)
    confidence: list[float] = top.tolist()
    return confidence


@dataclass
class Link:
    name: str
    """previous, baseline or safe_default."""
    answer: Answer
    breaker: CircuitBreaker | None = None


@dataclass(frozen=True)
class Fallback:
    outputs: dict[str, np.ndarray]
    link: str


class FallbackChain:
    def __init__(
        self,
        links: Sequence[Link],
        *,
        threshold: float,
        confidence_output: str | None,
        on_breaker: Callable[[str, str], None] = lambda link, state: None,
    ) -> None:
        self.links = list(links)
        self.threshold = threshold
        self.confidence_output = confidence_output
        self._on_breaker = on_breaker

    def needed(self, confidence: list[float] | None) -> bool:
        return confidence is not None and any(value < self.threshold for value in confidence)

    async def answer(self, inputs: Mapping[str, np.ndarray]) -> Fallback | None:
        for position, link in enumerate(self.links):
            breaker = link.breaker
            if breaker is not None and not breaker.allow():
                self._on_breaker(link.name, breaker.state)
                continue
            try:
                outputs = await link.answer(inputs)
            except SameRevision:
                continue
            except Exception as error:
                log.warning("fallback %s failed: %s", link.name, error)
                if breaker is not None:
                    breaker.record_failure()
                    self._on_breaker(link.name, breaker.state)
                continue
            if breaker is not None:
                breaker.record_success()
                self._on_breaker(link.name, breaker.state)
            last = position == len(self.links) - 1
            if last or not self.needed(top1_confidence(outputs, self.confidence_output)):
                return Fallback(outputs, link.name)
        return None


def safe_default(outputs: Mapping[str, Any]) -> Answer:
    """A fixed answer from ``fallback.safeDefault``: ``{"outputs": [<protocol tensors>]}``."""
    header = {"outputs": outputs.get("outputs", [])}
    _, arrays = decode_response(json.dumps(header).encode())

    async def answer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(arrays)

    return answer


class SameRevision(Exception):
    """The link reached the revision that asked (a stable pod calling the stable Service)."""


def remote(session: aiohttp.ClientSession, url: str, model: str, timeout: float, own_revision: str) -> Answer:
    """Another revision's Open Inference Protocol endpoint (the previous version), called with
    binary tensors both ways."""
    endpoint = f"{url.rstrip('/')}/v2/models/{model}/infer"
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def answer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors, buffers = encode_tensors(inputs, dict.fromkeys(inputs, True))
        body, header_length = assemble({"inputs": tensors, "parameters": {"binary_data_output": True}}, buffers)
        headers = propagated({HEADER_LENGTH: str(header_length)} if header_length is not None else {})
        async with session.post(endpoint, data=body, headers=headers, timeout=client_timeout) as response:
            payload = await response.read()
            if response.headers.get(REVISION_HEADER) == own_revision:
                raise SameRevision(own_revision)
            if response.status != 200:
                raise UpstreamError(f"{endpoint} answered {response.status}: {payload[:200]!r}")
            _, arrays = decode_response(payload, response.headers.get(HEADER_LENGTH))
        return arrays

    return answer
