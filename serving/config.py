"""What ``cutover serve`` takes: one model revision, how to load it, and how to serve it. The
operator's builder writes it as command-line flags from the ModelDeployment
(``operator/builders.py``); ``operator/cli.py`` parses them into a :class:`ServeConfig`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cutover.api.contract import SERVING_PORT
from cutover.api.v1alpha1.modeldeployment import (
    Batching,
    FallbackSpec,
    OutOfDistribution,
    PredictionCache,
    TensorSpec,
)


@dataclass
class ServeConfig:
    """Everything ``cutover serve`` takes; the operator's builder sets it from the ModelDeployment."""

    name: str
    version: str
    format: str
    revision: str = "local"
    namespace: str = "default"
    host: str = "0.0.0.0"
    port: int = SERVING_PORT
    grpc_port: int | None = None
    """The Open Inference Protocol's gRPC port (0 picks a free one); None: no gRPC."""
    model_uri: str | None = None
    checksum: str | None = None
    upstream: str | None = None
    upstream_model: str | None = None
    upstream_api_key: str | None = None
    upstream_timeout: float = 30.0
    inputs: Sequence[TensorSpec] = ()
    outputs: Sequence[TensorSpec] = ()
    batching: Batching | None = None
    prediction_cache: PredictionCache | None = None
    """Answer identical inference requests from memory (``serving/cache.py``); None: off.
    Refused for format llm (ValueError), as the API refuses ``runtime.cache`` there."""
    out_of_distribution: OutOfDistribution | None = None
    fallback: FallbackSpec | None = None
    previous_url: str | None = None
    """The previous version's endpoint, the first link of the fallback chain."""
    confidence_output: str | None = None
    """The output whose top class is the prediction's confidence; default: the first output."""
    audit_log: Path | None = None
    max_in_flight: int = 1024
    """Requests in progress beyond which new ones are shed with 503 (without batching)."""
    max_request_bytes: int = 64 << 20
    threads: int = 0
    """Intra-op threads of the model runtime; 0 lets it choose."""
    device: str = "auto"
    cache_dir: Path = field(default_factory=lambda: Path("/tmp/cutover-models"))
    shutdown_delay: float = 0.0
    """Seconds between SIGTERM (readiness turns 503) and closing the listener, so endpoints update."""
    shutdown_grace: float = 30.0
    """Seconds in-flight requests get to finish after the listener closes."""
    safety_policy: Path | None = None
    """The SafetyPolicy file (JSON, the operator's rendered ConfigMap), followed while serving;
    None: no filters. With one, nothing is answered until a valid policy is applied."""
    safety_secrets_dir: Path | None = None
    """Where the crisis escalation webhook's URL is (``escalation-url``) when it comes from a Secret."""
    safety_poll_interval: float = 2.0
    """Seconds between reads of the SafetyPolicy file."""
    otlp_endpoint: str | None = None
    """The OTLP/HTTP collector's base URL spans are exported to (``serving/tracing.py``); None: no tracing."""
    safety_max_characters: int = 1_000_000
    """The most characters of text the SafetyPolicy reads per request and direction; a longer
    input is a 400, a longer answer a filter failure (refused under failClosed)."""

    explain_max_in_flight: int = 1
    """Explanations computed at once (``serving/explain.py``), each on its own thread; one more
    is refused with 503. 0 turns the explain endpoint off (501)."""
    explain_timeout: float = 2.0
    """Seconds an explanation may take; one that needs longer is refused with 422."""
    explain_background: int = 50
    """Background rows an explanation samples from the training statistics' exemplars."""
    explain_sample_rate: float = 0.0
    """Fraction (0 to 1) of answered rows explained in the background for the attribution shift
    analysis (``serving/attribution_sampling.py``); 0: none."""

    def __post_init__(self) -> None:
        if not 0 <= self.explain_sample_rate <= 1:
            raise ValueError(f"--explain-sample-rate must be from 0 to 1, got {self.explain_sample_rate:g}")
        if self.explain_sample_rate and self.format in ("llm", "triton"):
            raise ValueError(f"--explain-sample-rate: {self.format} models cannot be explained here")
        if self.explain_sample_rate and self.explain_max_in_flight <= 0:
            raise ValueError("--explain-sample-rate needs explanations on (--explain-max-in-flight above 0)")
        if self.prediction_cache is not None and self.format == "llm":
            raise ValueError(
                "the prediction cache is off for llm models: their answers are sampled and depend on the "
                "whole conversation"
            )
