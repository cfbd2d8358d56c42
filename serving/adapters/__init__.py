"""Model adapters, one per format, behind :class:`~cutover.serving.adapters.base.Adapter`.
Each is imported only when used, so a Triton or LLM pod never loads ONNX Runtime, PyTorch or
TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import Adapter, LocalAdapter

if TYPE_CHECKING:
    from cutover.serving.config import ServeConfig


LOCAL_FORMATS = ("onnx", "pytorch", "tensorflow")
"""Formats whose model (a file, or a SavedModel directory) runs in this process."""


def local(format: str, path: Path, *, threads: int = 0, device: str = "auto") -> LocalAdapter:
    """An adapter that runs the model at ``path`` (a file, or a SavedModel directory) in this
    process. Raises ValueError for a format not in LOCAL_FORMATS."""
    if format == "onnx":
        from .onnx import OnnxAdapter

        return OnnxAdapter(path, threads=threads, device=device)
    if format == "pytorch":
        from .pytorch import PyTorchAdapter

        return PyTorchAdapter(path, threads=threads, device=device)
    if format == "tensorflow":
        from .tensorflow import TensorFlowAdapter

        return TensorFlowAdapter(path, threads=threads, device=device)
    raise ValueError(f"format {format!r} is not a local model ({', '.join(LOCAL_FORMATS)})")


def create(config: ServeConfig, path: Path | None) -> Adapter:
    if config.format in LOCAL_FORMATS:
        if path is None:
            raise ValueError(f"format {config.format} needs --model-uri")
        adapter = local(config.format, path, threads=config.threads, device=config.device)
        if config.format == "pytorch":
            adapter.declare(config.inputs, config.outputs)  # type: ignore[attr-defined]
        return adapter
    if not config.upstream or not config.upstream_model:
        raise ValueError(f"format {config.format} needs --upstream and --upstream-model")
    if config.format == "triton":
        from .triton import TritonAdapter

        return TritonAdapter(config.upstream, config.upstream_model, timeout=config.upstream_timeout)
    if config.format == "llm":
        from .llm import LLMAdapter

        return LLMAdapter(
            config.upstream, config.upstream_model, api_key=config.upstream_api_key, timeout=config.upstream_timeout
        )
    raise ValueError(f"unknown model format {config.format!r}")


__all__ = ["Adapter", "LocalAdapter", "create", "local"]
