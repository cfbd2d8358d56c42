"""Loading one model revision and everything that serves it: the model file (``storage``), its
adapter, its tensors (the model's own, with the declared value ranges), the batcher, the
out-of-distribution scorer, the fallback chain and the audit log.

A model that cannot load leaves the process live but not ready: :meth:`Loader.load` retries with
backoff (1 s doubling to 60 s) and keeps the reason in ``Loader.error`` for the ready endpoint,
instead of a crash loop. A declared tensor the model does not have, or has with another type,
fails the load rather than every request. What the load opened (the adapter, the baseline model,
the client session of the previous version, the batcher, the audit log) is released by
:meth:`Loader.close`, the batcher first.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from cutover.api.contract import ATTRIBUTION_SAMPLE_MAX_FEATURES
from cutover.api.v1alpha1 import seconds
from cutover.api.v1alpha1.modeldeployment import FallbackSpec, TensorSpec

from . import adapters, storage
from .adapters.base import Adapter, TensorInfo
from .attribution import Exemplars
from .audit import AuditLog
from .batching import Batcher
from .breaker import CircuitBreaker
from .cache import PredictionCache
from .config import ServeConfig
from .drift import InputBinning
from .fallback import FallbackChain, Link, remote, safe_default
from .metrics import ServingMetrics
from .ood import MahalanobisScorer, OnnxScorer, OodCheck, Scorer, load_statistics, training_threshold
from .protocol import RawInput

log = logging.getLogger("cutover.serving")


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model revision and the parts of the request path that depend on it."""

    adapter: Adapter
    inputs: Sequence[TensorInfo]
    """The model's inputs with their declared value ranges; requests are validated against them."""
    outputs: Sequence[TensorInfo]
    raw_input: RawInput | None = None
    """The one input a raw binary request carries (None unless the model has exactly one
    non-BYTES input)."""
    batcher: Batcher | None = None
    ood: MahalanobisScorer | None = None
    """The training statistics' Mahalanobis scorer (its mean and precision serve explanations too)."""
    fallback: FallbackChain | None = None
    audit: AuditLog | None = None
    labels: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Class labels by output name (``labelFilename``), for the classification extension."""
    cache: PredictionCache | None = None
    """The prediction cache (``runtime.cache``), None when off."""
    exemplars: Exemplars | None = None
    """Training examples from the statistics file (``exemplars``), for the explain endpoint's
    neighbours, counterfactuals and background rows; None without them."""
    features: Sequence[str] = ()
    """Feature names from the statistics file (``features``), for explanations; empty without them."""
    drift: InputBinning | None = None
    """The statistics file's ``histograms``: the scored input's features are counted per bin
    for the input drift analysis; None without them."""
    ood_check: OodCheck | None = None
    """What scores rows for ``model.outOfDistribution`` (``ood`` for the mahalanobis method, else
    the ONNX model of the method) and its threshold; None without outOfDistribution."""


def merge_schema(declared: Sequence[TensorSpec], discovered: Sequence[TensorInfo], kind: str) -> list[TensorInfo]:
    """The model's own tensors (``discovered``), with the value ranges of the ``declared`` ones; the
    declared tensors alone when the model does not describe its own. ``kind`` ("input" or
    "output") names them in errors. Raises ValueError for a declared tensor the model does not
    have, or has with another datatype or rank."""
    infos = {
        spec.name: TensorInfo(
            spec.name,
            spec.datatype,
            tuple(spec.shape),
            spec.range.min if spec.range else None,
            spec.range.max if spec.range else None,
        )
        for spec in declared
    }
    if not discovered:
        return list(infos.values())
    merged = []
    for info in discovered:
        spec = infos.pop(info.name, None)
        if spec is None:
            merged.append(info)
            continue
        if spec.datatype != info.datatype or len(spec.shape) != len(info.shape):
            raise ValueError(
                f"declared {kind} {info.name!r} is {spec.datatype} {list(spec.shape)}, "
                f"but the model has {info.datatype} {list(info.shape)}"
            )
        merged.append(TensorInfo(info.name, info.datatype, info.shape, spec.min, spec.max))
    if infos:
        raise ValueError(
            f"declared {kind} {', '.join(infos)} not in the model ({', '.join(i.name for i in discovered)})"
        )
    return merged


def _feature_names(statistics: Mapping[str, Any], features: int) -> list[str]:
    """The statistics file's optional ``features``: one name per feature. Raises ValueError
    for another count or a name that is not a string."""
    names = statistics.get("features", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("'features' in the training statistics must be a list of names")
    if names and len(names) != features:
        raise ValueError(f"'features' names {len(names)} features; the training statistics have {features}")
    return names


class Loader:
    """Loads the revision ``config`` names (or runs ``adapter`` when given one, as tests do);
    ``metrics`` receives the batch sizes and circuit-breaker states of what it builds."""

    def __init__(self, config: ServeConfig, metrics: ServingMetrics, adapter: Adapter | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.adapter = adapter
        self.error: str | None = "loading"
        """Why the model is not loaded yet ("loading", or the last failure); None once loaded."""
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._session: aiohttp.ClientSession | None = None
        self._model_path: Path | None = None

    async def load(self) -> LoadedModel:
        """Load until it works; each failure is logged, kept in ``error`` and retried after a
        delay that doubles from 1 s up to 60 s."""
        delay = 1.0
        while True:
            try:
                model = await self._load()
            except Exception as error:
                self.error = f"model failed to load: {error}"
                log.error("%s; retrying in %.0f s", self.error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
            else:
                self.error = None
                return model

    async def _load(self) -> LoadedModel:
        config = self.config
        if self.adapter is None:
            path = None
            if config.model_uri:
                path = await storage.fetch(config.model_uri, config.checksum, config.cache_dir)
            self._model_path = path
            self.adapter = adapters.create(config, path)
        adapter = self.adapter
        await adapter.load()
        self._closers.append(adapter.close)
        inputs = merge_schema(config.inputs, adapter.inputs, "input")
        outputs = merge_schema(config.outputs, adapter.outputs, "output")
        raw_input = None
        if len(inputs) == 1 and inputs[0].datatype != "BYTES":
            raw_input = RawInput(inputs[0].name, inputs[0].datatype, inputs[0].shape)
        batcher = None
        if config.batching is not None and adapter.batchable:
            batcher = Batcher(
                adapter.infer,
                max_batch_size=config.batching.max_batch_size,
                max_queue_delay=seconds(config.batching.max_queue_delay),
                max_queue_size=config.batching.max_queue_size,
                on_batch=self.metrics.batch,
                on_run=self.metrics.statistics.execution,
            )
            self._closers.insert(0, batcher.close)
            self.metrics.queue_depth(batcher)
        elif config.batching is not None:
            log.warning("batching is off: the model's tensors have no variable first (batch) dimension")
        if config.explain_sample_rate:
            _check_sampled_input(inputs, config)
        ood, statistics = await self._ood_scorer(inputs)
        exemplars = Exemplars.parse(statistics, ood.precision) if ood is not None else None
        features = _feature_names(statistics, ood.features if ood is not None else 0)
        drift = InputBinning.parse(statistics, features, ood.features) if ood is not None else None
        if drift is not None:
            self.metrics.watch_inputs(drift)
        ood_check = await self._ood_check(ood, statistics)
        labels = await asyncio.to_thread(self._labels)
        fallback = None
        if config.fallback is not None and config.fallback.confidence_threshold is not None:
            fallback = await self._fallback_chain(config.fallback, outputs)
        audit = None
        if config.audit_log is not None:
            audit = AuditLog(config.audit_log)
            self._closers.append(lambda: asyncio.to_thread(audit.close))
        log.info(
            "model %s version %s (revision %s) ready: inputs %s, outputs %s%s",
            config.name,
            config.version,
            config.revision,
            [i.metadata() for i in inputs],
            [o.metadata() for o in outputs],
            f", batching up to {batcher.max_batch_size}" if batcher is not None else "",
        )
        return LoadedModel(
            adapter,
            inputs,
            outputs,
            raw_input,
            batcher,
            ood,
            fallback,
            audit,
            labels,
            self._prediction_cache(),
            exemplars,
            features,
            drift,
            ood_check,
        )

    def _prediction_cache(self) -> PredictionCache | None:
        spec = self.config.prediction_cache
        if spec is None:
            return None
        ttl = seconds(spec.ttl) if spec.ttl is not None else None
        return PredictionCache(self.config.revision, spec.max_entries, spec.max_bytes, ttl, self.metrics.cache)

    async def _ood_scorer(self, inputs: Sequence[TensorInfo]) -> tuple[MahalanobisScorer | None, dict[str, Any]]:
        """The scorer of ``model.outOfDistribution``, checked against the input it scores, and
        the training statistics it was made from (empty without one)."""
        spec = self.config.out_of_distribution
        if spec is None:
            return None, {}
        if spec.input not in {t.name for t in inputs}:
            raise ValueError(f"outOfDistribution.input {spec.input!r} is not an input of the model")
        statistics = await asyncio.to_thread(load_statistics, self._beside_model(spec.statistics_uri))
        scorer = MahalanobisScorer(statistics)
        shape = next(t.shape for t in inputs if t.name == spec.input)
        features = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        if min(shape[1:], default=1) > 0 and features != scorer.features:
            raise ValueError(
                f"the training statistics have {scorer.features} features; input {spec.input!r} has {features}"
            )
        return scorer, statistics

    async def _ood_check(self, ood: MahalanobisScorer | None, statistics: Mapping[str, Any]) -> OodCheck | None:
        """The scorer ``model.outOfDistribution.method`` names (the statistics' Mahalanobis
        scorer, or its ONNX model at ``modelUri``, read beside the model, for the same feature
        count) with its threshold (``threshold``, else the statistics' for the method). Raises
        ValueError for a model that cannot score those rows and for no threshold."""
        spec = self.config.out_of_distribution
        if spec is None or ood is None:
            return None
        threshold = spec.threshold if spec.threshold is not None else training_threshold(statistics, spec.scorer)
        if spec.scorer == "mahalanobis":
            return OodCheck(ood, threshold)
        assert spec.model_uri is not None  # the API requires it for the ONNX methods
        path = self._beside_model(spec.model_uri)
        if path.startswith("file://"):
            path = urllib.request.url2pathname(urllib.parse.urlsplit(path).path)
        scorer: Scorer = await asyncio.to_thread(OnnxScorer, path, spec.scorer, ood.features)
        return OodCheck(scorer, threshold)

    def _labels(self) -> dict[str, list[str]]:
        """Each declared output's class labels: its ``labelFilename``, one label per line, read
        beside the model file unless absolute. Raises ValueError for a file that cannot be read
        and for a label file on an input (it would be ignored)."""
        for spec in self.config.inputs:
            if spec.label_filename is not None:
                raise ValueError(f"labelFilename is for outputs; input {spec.name!r} has one")
        labels = {}
        for spec in self.config.outputs:
            if spec.label_filename is None:
                continue
            path = Path(self._beside_model(spec.label_filename))
            try:
                labels[spec.name] = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(f"cannot read the labels of output {spec.name!r} from {path}: {error}") from None
        return labels

    def _beside_model(self, uri: str) -> str:
        """A relative statistics path is read beside the model file ("training-stats.json"), or
        inside the model when it is a directory (a SavedModel, copied whole with what it holds)."""
        if "://" in uri or uri.startswith("/") or not self._model_path:
            return uri
        folder = self._model_path if self._model_path.is_dir() else self._model_path.parent
        return str(folder / uri)

    async def _fallback_chain(self, spec: FallbackSpec, outputs: Sequence[TensorInfo]) -> FallbackChain:
        """previous version → baseline model → safe default, the first two behind circuit breakers."""

        def breaker() -> CircuitBreaker:
            return CircuitBreaker(spec.circuit_breaker.failure_threshold, spec.circuit_breaker.open_seconds)

        config = self.config
        links: list[Link] = []
        if spec.previous_version and config.previous_url:
            previous = remote(self._client(), config.previous_url, config.name, 5.0, config.revision)
            links.append(Link("previous", previous, breaker()))
        if spec.baseline is not None:
            path = await storage.fetch(spec.baseline.storage_uri, None, config.cache_dir)
            baseline = adapters.local(spec.baseline.format, path, threads=config.threads, device=config.device)
            await baseline.load()
            self._closers.append(baseline.close)
            links.append(Link("baseline", baseline.infer, breaker()))
        if spec.safe_default:
            links.append(Link("safe_default", safe_default(spec.safe_default)))
        for link in links:
            if link.breaker is not None:
                self.metrics.breaker(link.name, link.breaker.state)
        assert spec.confidence_threshold is not None
        return FallbackChain(
            links,
            threshold=spec.confidence_threshold,
            confidence_output=config.confidence_output or (outputs[0].name if outputs else None),
            on_breaker=self.metrics.breaker,
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
            self._closers.append(self._session.close)
        return self._session

    async def close(self) -> None:
        """Release what loading opened; a closer that fails is logged and the rest still run."""
        for closer in self._closers:
            try:
                await closer()
            except Exception:
                log.exception("while closing")


def _check_sampled_input(inputs: Sequence[TensorInfo], config: ServeConfig) -> None:
    """Raises ValueError unless the input attribution sampling explains (``outOfDistribution.input``,
    else the first) declares 1 to ``ATTRIBUTION_SAMPLE_MAX_FEATURES`` features per row: each is a
    child of the top-feature series (``serving/attribution_sampling.py``)."""
    name = config.out_of_distribution.input if config.out_of_distribution is not None else inputs[0].name
    explained = next((t for t in inputs if t.name == name), None)
    width = int(np.prod(explained.shape[1:])) if explained is not None and len(explained.shape) > 1 else 0
    if width <= 0 or width > ATTRIBUTION_SAMPLE_MAX_FEATURES:
        raise ValueError(
            f"--explain-sample-rate: input {name!r} must declare a batch dimension and 1 to "
            f"{ATTRIBUTION_SAMPLE_MAX_FEATURES} features per row (one series each); its shape is "
            f"{list(explained.shape) if explained is not None else 'not declared'}"
        )
