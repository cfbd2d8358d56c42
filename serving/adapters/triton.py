"""A remote Triton (or any Open Inference Protocol server), called with ``tritonclient.http.aio``
and binary tensors. Our pod adds what Triton lacks in front of it: validation, fallbacks,
the audit log and the metrics the rollout analysis reads."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from ..errors import InvalidInput, UpstreamError
from .base import Adapter, TensorInfo

READY_CACHE_SECONDS = 1.0


class TritonAdapter(Adapter):
    platform = "triton_remote"

    def __init__(self, url: str, model: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        self.address = parts.netloc
        self.ssl = parts.scheme == "https"
        self.model = model
        self.timeout = timeout
        self._client: Any = None
        self._ready_at = 0.0
        self._ready = False

    async def load(self) -> None:
        from tritonclient.http.aio import InferenceServerClient

        self._client = InferenceServerClient(self.address, ssl=self.ssl, conn_timeout=self.timeout)
        metadata = await self._call(self._client.get_model_metadata(self.model))
        platform = metadata.get("platform")
        if platform:
            self.platform = f"triton_{platform}"  # type: ignore[misc]
        self.inputs = [
            TensorInfo(t["name"], t["datatype"], tuple(int(d) for d in t["shape"])) for t in metadata["inputs"]
        ]
        self.outputs = [
            TensorInfo(t["name"], t["datatype"], tuple(int(d) for d in t["shape"])) for t in metadata["outputs"]
        ]

    async def _call(self, awaitable: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return await awaitable
        except InferenceServerException as error:
            status = str(error.status() or "")
            if status.startswith("4"):
                raise InvalidInput(f"upstream Triton: {error.message()}") from None
            raise UpstreamError(f"upstream Triton {self.address} failed: {error.message()}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise UpstreamError(f"upstream Triton {self.address} unreachable: {error}") from None

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tritonclient.http.aio import InferInput, InferRequestedOutput
        from tritonclient.utils import np_to_triton_dtype

        request = []
        for name, array in inputs.items():
            tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array, binary_data=True)
            request.append(tensor)
        wanted = [InferRequestedOutput(t.name, binary_data=True) for t in self.outputs]
        result = await self._call(
            self._client.infer(self.model, request, outputs=wanted, timeout=int(self.timeout * 1_000_000))
        )
        return {t.name: result.as_numpy(t.name) for t in self.outputs}

    async def ready(self) -> bool:
        now = time.monotonic()
        if now - self._ready_at > READY_CACHE_SECONDS:
            try:
                self._ready = bool(await self._client.is_model_ready(self.model))
            except Exception:
                self._ready = False
            self._ready_at = now
        return self._ready

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
