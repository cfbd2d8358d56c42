"""The explain endpoint: ``POST /v2/models/{name}[/versions/{v}]/explain`` takes an Open Inference
Protocol infer body and answers, for each row, per-feature attributions of each output with the
baseline, the prediction, the method, the model rows it took, the seed and the additivity
residual; optionally the nearest training examples and a counterfactual (``serving/attribution.py``).

Methods (``parameters.method``; ``auto`` by default):

=======================  ==========================================================================
shapley_exact            all 2^M coalitions of the M features against the background rows; ``auto``
                         for M <= EXACT_FEATURES (ONNX and TensorFlow, any tensor model)
shapley_permutation      ``parameters.nsamples`` (default 25) random feature orders with their
                         reverses; ``auto`` beyond EXACT_FEATURES; exactly additive
integrated_gradients     PyTorch only (Captum's IntegratedGradients, ``parameters.steps``, default
                         50), from the background mean; ``auto`` for PyTorch
=======================  ==========================================================================

The background is ``parameters.background`` (default ``--explain-background``) rows sampled
with the seed from the exemplars of the training-statistics file (``model.outOfDistribution``'s
``statisticsUri``), else its mean as one row, else one row of zeros; the answer says which.
``parameters.neighbours`` (a count) and ``parameters.counterfactual`` (true) need exemplars.
LLM and remote Triton models answer 501 (``NotExplainable``): token attributions are not
offered, and a remote model's perturbations would be its live traffic.

Off the hot path: explanations run on their own threads (``--explain-max-in-flight`` of them;
one more is refused with 503 and ``Retry-After``), through the adapter's ``explanation_run``
(ONNX: a second session with one intra-op thread), never through the batcher, the prediction
cache, the fallback chain or the prediction, confidence and out-of-distribution series the
rollout's analysis reads; and they are not counted in ``cutover_serving_requests_total``. Each
is bounded by ``--explain-timeout``: one that passes it between two model calls stops and is
answered ``ExplanationTimeout`` (422): the request asked for more than the server's limit allows,
which is neither a failure of the revision nor worth retrying as is; one whose client leaves
stops before its next model call and is counted as 499. ``parameters.audit: true``
writes an audit record of the explanation (its top attributions, never the inputs).

Series (labels namespace, model, revision as every serving series):
``cutover_explanations_total{method,code}``, ``cutover_explanation_duration_seconds{method}``,
``cutover_explanation_model_rows_total``, ``cutover_explanation_in_flight``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cutover.api.contract import LATENCY_BUCKETS

from .adapters import LOCAL_FORMATS
from .adapters.base import LocalAdapter, TensorInfo
from .attribution import (
    EXACT_MAX_FEATURES,
    Attribution,
    DeadlineExceeded,
    Exemplars,
    RowModel,
    counterfactual,
    exact_shapley,
    sampled_shapley,
)
from .config import ServeConfig
from .errors import ExplanationTimeout, InferenceError, InvalidInput, NotExplainable, Overloaded, ServingError
from .http import CLIENT_CLOSED
from .loading import LoadedModel
from .protocol import InferRequest, decode_request
from .validation import validate

log = logging.getLogger("cutover.serving")

EXACT_FEATURES = 10
"""``auto`` enumerates every coalition up to this many features (1,024 coalitions per background row)."""
METHODS = ("auto", "shapley_exact", "shapley_permutation", "integrated_gradients")
FLOATS = frozenset({"FP16", "FP32", "FP64"})
NUMERIC = FLOATS | {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL"}
TOP_AUDITED = 5
"""Attributions per output an audit record keeps (the largest in magnitude)."""


class ExplanationMetrics:
    """The explain endpoint's series, in the server's registry, apart from the prediction series."""

    def __init__(self, registry: CollectorRegistry, labels: tuple[str, str, str], in_flight: Callable[[], int]) -> None:
        names = ("namespace", "model", "revision")
        self._total = Counter(
            "cutover_explanations_total",
            "Explain requests answered, by method and HTTP status",
            [*names, "method", "code"],
            registry=registry,
        )
        self._duration = Histogram(
            "cutover_explanation_duration_seconds",
            "Time to explain a request, by method (answered ones)",
            [*names, "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._rows = Counter(
            "cutover_explanation_model_rows", "Model rows evaluated for explanations", names, registry=registry
        ).labels(*labels)
        Gauge("cutover_explanation_in_flight", "Explanations being computed now", names, registry=registry).labels(
            *labels
        ).set_function(in_flight)
        self._labels = labels

    def answered(self, method: str, code: int, seconds: float | None, rows: int) -> None:
        self._total.labels(*self._labels, method, str(code)).inc()
        if seconds is not None:
            self._duration.labels(*self._labels, method).observe(seconds)
        self._rows.inc(rows)


def refused(config: ServeConfig) -> NotExplainable | None:
    """Why the model ``config`` names cannot be explained here (None: it can), known before it loads."""
    if config.format == "llm":
        return NotExplainable("language models cannot be explained here: token-level attributions are not offered")
    if config.format not in LOCAL_FORMATS:
        return NotExplainable(
            f"model format {config.format} runs on a remote server, where an explanation's perturbed rows "
            "would count as its traffic: it cannot be explained here"
        )
    if config.explain_max_in_flight <= 0:
        return NotExplainable("explanations are off for this model (--explain-max-in-flight 0)")
    return None


class Explainer:
    """Explains requests to one loaded model revision (``config``'s ``explain_*`` settings)."""

    def __init__(self, config: ServeConfig, model: LoadedModel, registry: CollectorRegistry) -> None:
        self.config = config
        self.model = model
        self.in_flight = 0
        self.metrics = ExplanationMetrics(
            registry, (config.namespace, config.name, config.revision), lambda: self.in_flight
        )
        self._executor = ThreadPoolExecutor(
            max(config.explain_max_in_flight, 1), thread_name_prefix="explain", initializer=yield_to_inference
        )
        if config.format == "pytorch":  # Captum and what it imports (matplotlib) take seconds, once
            self._executor.submit(importlib.import_module, "captum.attr")
        self._exemplar_classes: np.ndarray | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def explain(self, body: bytes, header_length: str | None, request_id: str | None) -> dict[str, Any]:
        """The answer to one explain request (its body and ``Inference-Header-Content-Length``).
        Raises ``Overloaded`` (503) when ``explain_max_in_flight`` are in progress,
        ``InvalidInput`` (400) for a malformed request or parameters, ``ExplanationTimeout``
        (422) past ``explain_timeout``, ``InferenceError`` (500) when the model fails."""
        started = time.perf_counter()
        method, code, rows = "none", 200, 0
        try:
            adapter = self._adapter()
            if self.in_flight >= max(self.config.explain_max_in_flight, 1):
                raise Overloaded(
                    f"{self.in_flight} explanations in progress (the limit); try again",
                    retry_after=math.ceil(self.config.explain_timeout),
                )
            try:
                body, header_length, parameters = _explain_parameters(body, header_length)
                request = decode_request(body, header_length, self.model.raw_input)
            except RecursionError:  # json's C parser recurses per nesting level
                raise InvalidInput("malformed JSON: nested too deeply") from None
            request.parameters = parameters
            validate(request.inputs, self.model.inputs, batched=True)
            plan = self._plan(adapter, request)
            method = plan.method
            self.in_flight += 1
            try:
                loop = asyncio.get_running_loop()
                explanations = await loop.run_in_executor(self._executor, plan.run)
            except asyncio.CancelledError:  # the client left (handler cancellation)
                plan.abandoned.set()  # its thread stops before its next model call, freeing its place
                code = CLIENT_CLOSED
                raise
            finally:
                self.in_flight -= 1
            rows = sum(e["model_evaluations"] for e in explanations)
            request_id = request.id or request_id
            answer = {
                "model_name": self.config.name,
                "model_version": self.config.version,
                **({"id": request_id} if request_id else {}),
                "explanations": explanations,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            if plan.audit:
                self._audit(request_id, explanations)
            return answer
        except ExplanationTimeout as error:
            code, rows = error.status, error.evaluations
            raise
        except ServingError as error:
            code = error.status
            raise
        except Exception as error:  # the model failed on a row of the explanation
            code = InferenceError.status
            log.warning("explaining model %s failed: %s", self.config.name, error)
            raise InferenceError(f"the model failed while explaining: {error}") from None
        finally:
            self.metrics.answered(method, code, time.perf_counter() - started if code == 200 else None, rows)

    def _adapter(self) -> LocalAdapter:
        adapter = self.model.adapter
        assert isinstance(adapter, LocalAdapter)  # refused() turned the others away
        return adapter

    def _plan(self, adapter: LocalAdapter, request: InferRequest) -> Plan:
        """What to compute, checked before it takes a thread; raises ``InvalidInput``."""
        parameters = request.parameters or {}
        explained = self.explained_input(parameters)
        array = request.inputs[explained.name]
        if array.ndim < 2:
            raise InvalidInput(f"input {explained.name!r} needs a batch dimension to be explained")
        if not array.size:
            raise InvalidInput(f"input {explained.name!r} has shape {list(array.shape)}: no values to explain")
        if not np.isfinite(array).all():
            raise InvalidInput(f"input {explained.name!r} holds NaN or infinite values, which have no attributions")
        outputs = [
            t
            for t in self.model.outputs
            if t.datatype in NUMERIC
            and t.shape[:1] == (-1,)
            and (request.outputs is None or t.name in {o.name for o in request.outputs})
        ]
        if not outputs:
            raise InvalidInput("no numeric output with a batch dimension to explain")
        features = int(np.prod(array.shape[1:]))
        method = _choice(parameters, "method", METHODS, "auto")
        if method == "auto":
            if adapter.platform.startswith("pytorch") and explained.datatype in FLOATS:
                method = "integrated_gradients"
            else:
                method = "shapley_exact" if features <= EXACT_FEATURES else "shapley_permutation"
        if method == "integrated_gradients" and not adapter.platform.startswith("pytorch"):
            raise InvalidInput("integrated_gradients needs gradients: PyTorch models only; use a shapley method")
        if method == "integrated_gradients" and explained.datatype not in FLOATS:
            raise InvalidInput(
                f"integrated_gradients needs a floating-point input; {explained.name!r} is {explained.datatype}"
            )
        if method == "shapley_exact" and features > EXACT_MAX_FEATURES:
            raise InvalidInput(
                f"shapley_exact over {features} features takes 2^{features} coalitions; the most is "
                f"{EXACT_MAX_FEATURES}: use shapley_permutation"
            )
        spec = self.config.out_of_distribution
        # The training statistics (their exemplars, mean and feature names) describe one input.
        described = spec is not None and spec.input == explained.name
        exemplars = self.model.exemplars if described else None
        neighbours = _integer(parameters, "neighbours", 0, 0, 100)
        wants_counterfactual = _boolean(parameters, "counterfactual")
        if (neighbours or wants_counterfactual) and exemplars is None:
            raise InvalidInput(
                f"neighbours and counterfactuals need exemplars of input {explained.name!r} in the model's "
                "training statistics"
            )
        if exemplars is not None and exemplars.rows.shape[1] != features:
            raise InvalidInput(
                f"input {explained.name!r} has {features} features; the training statistics {exemplars.rows.shape[1]}"
            )
        if wants_counterfactual and len(self.model.inputs) > 1:
            raise InvalidInput("counterfactuals are offered for models with one input")
        seed = _integer(parameters, "seed", random.getrandbits(31), 0, 2**63 - 1)
        return Plan(
            self,
            adapter,
            request,
            explained,
            outputs,
            method,
            seed,
            samples=_integer(parameters, "nsamples", 25, 1, 1000),
            steps=_integer(parameters, "steps", 50, 2, 1000),
            background=_integer(parameters, "background", self.config.explain_background, 1, 1000),
            neighbours=neighbours,
            counterfactual=wants_counterfactual,
            audit=_boolean(parameters, "audit") and self.model.audit is not None,
            deadline=time.monotonic() + self.config.explain_timeout,
            described=described,
        )

    def explain_rows(self, inputs: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        """Each row's explanation of ``inputs`` (name -> [rows, ...], validated), computed on the
        calling thread with an explain request's defaults (``auto`` method, a random seed), for
        the attribution sampler (``serving/attribution_sampling.py``). Raises ``InvalidInput``
        for rows that cannot be explained, ``ExplanationTimeout`` past ``explain_timeout``, and
        what the model raises."""
        return self._plan(self._adapter(), InferRequest(dict(inputs))).run()

    def explained_input(self, parameters: Mapping[str, Any]) -> TensorInfo:
        """The input ``parameters.input`` names, else ``outOfDistribution.input``, else the first;
        raises ``InvalidInput`` for another name or a non-numeric input."""
        inputs = {t.name: t for t in self.model.inputs}
        spec = self.config.out_of_distribution
        default = spec.input if spec is not None else next(iter(inputs))
        name = parameters.get("input", default)
        if name not in inputs:
            raise InvalidInput(f"parameters.input {name!r} is not an input of the model ({', '.join(inputs)})")
        info = inputs[name]
        if info.datatype not in NUMERIC:
            raise InvalidInput(f"input {name!r} is {info.datatype}: only numeric inputs can be explained")
        return info

    def exemplar_classes(self, classify: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The model's class of each exemplar, computed once (on an explanation thread)."""
        with self._lock:
            if self._exemplar_classes is None:
                assert self.model.exemplars is not None
                rows = self.model.exemplars.rows
                self._exemplar_classes = np.concatenate(
                    [classify(rows[start : start + 4096]) for start in range(0, len(rows), 4096)]
                )
            return self._exemplar_classes

    def _audit(self, request_id: str | None, explanations: Sequence[Mapping[str, Any]]) -> None:
        audit = self.model.audit
        assert audit is not None
        config = self.config
        for explanation in explanations:
            audit.record(
                {
                    "type": "explanation",
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "request_id": request_id,
                    "row": explanation["row"],
                    "namespace": config.namespace,
                    "model": config.name,
                    "version": config.version,
                    "revision": config.revision,
                    "method": explanation["method"],
                    "model_evaluations": explanation["model_evaluations"],
                    "outputs": [
                        {
                            "name": output["name"],
                            "additivity_residual": output["additivity_residual"],
                            "top": sorted(
                                (
                                    {"feature": a["feature"], "attribution": a["attribution"]}
                                    for a in output["attributions"]
                                ),
                                key=lambda a: -max(abs(v) for v in a["attribution"]),
                            )[:TOP_AUDITED],
                        }
                        for output in explanation["outputs"]
                    ],
                }
            )


class Abandoned(Exception):
    """The client of an explanation left; its computation stops (no one reads what it raises)."""


class Plan:
    """One checked explain request, computed by :meth:`run` on an explanation thread."""

    def __init__(
        self,
        explainer: Explainer,
        adapter: LocalAdapter,
        request: InferRequest,
        explained: TensorInfo,
        outputs: Sequence[TensorInfo],
        method: str,
        seed: int,
        *,
        samples: int,
        steps: int,
        background: int,
        neighbours: int,
        counterfactual: bool,
        audit: bool,
        deadline: float,
        described: bool,
    ) -> None:
        self.explainer, self.adapter, self.request = explainer, adapter, request
        self.explained, self.outputs, self.method, self.seed = explained, outputs, method, seed
        self.samples, self.steps, self.background = samples, steps, background
        self.neighbours, self.counterfactual, self.audit, self.deadline = neighbours, counterfactual, audit, deadline
        model = explainer.model
        self.exemplars = model.exemplars if described else None
        """The exemplars of the explained input (None when the statistics describe another)."""
        self.mean = model.ood.mean if described and model.ood is not None else None
        self.features: list[str] = list(model.features) if described and model.features else []
        self.widths: list[int] = []
        """Values per row of each explained output, side by side in the row model's answer (an
        output's shape may leave them free: known from the model's answer)."""
        self.abandoned = threading.Event()
        """Set when the client left: the computation stops before its next model call. Without
        it an abandoned explanation ran on to its deadline, holding one of the explanation threads
        while the in-flight count had let the next request in, to wait behind it."""

    def run(self) -> list[dict[str, Any]]:
        """Every row's explanation; raises ``ExplanationTimeout`` past the deadline."""
        array = self.request.inputs[self.explained.name]
        rows = array.reshape(array.shape[0], -1).astype(np.float64)
        features = (
            self.features
            if len(self.features) == rows.shape[1]
            else [f"{self.explained.name}[{i}]" for i in range(rows.shape[1])]
        )
        background, source = self._background(rows.shape[1])
        run = self.adapter.explanation_run()
        explanations = []
        spent = 0
        try:
            for row in range(len(rows)):
                x = rows[row]
                model = self._row_model(run, row, array.shape[1:])
                attribution = self._attribute(model, row, x, background)
                spent += attribution.evaluations
                explanation: dict[str, Any] = {
                    "row": row,
                    "method": self.method,
                    "seed": self.seed,
                    "model_evaluations": attribution.evaluations,
                    **({"samples": attribution.samples} if attribution.samples is not None else {}),
                    **({"steps": self.steps} if self.method == "integrated_gradients" else {}),
                    "background": {"rows": len(background), "source": source},
                    "outputs": self._outputs(attribution, x, features),
                }
                exemplars = self.exemplars
                if self.neighbours and exemplars is not None:
                    explanation["neighbours"] = exemplars.nearest(x, self.neighbours)
                if self.counterfactual and exemplars is not None:
                    found = self._counterfactual(model, x, exemplars, features)
                    explanation["counterfactual"] = found
                    if found is not None:
                        explanation["model_evaluations"] += found["model_evaluations"]
                explanations.append(explanation)
        except DeadlineExceeded as error:
            raise ExplanationTimeout(
                f"the explanation passed the server's limit of {self.explainer.config.explain_timeout:g} s after "
                f"{spent + error.evaluations} model rows; ask for fewer rows, parameters.nsamples or "
                "parameters.background, or method shapley_permutation",
                evaluations=spent + error.evaluations,
            ) from None
        return explanations

    def _background(self, features: int) -> tuple[np.ndarray, str]:
        if self.exemplars is not None:
            rows = self.exemplars.rows
            chosen = np.random.default_rng(self.seed).choice(len(rows), min(self.background, len(rows)), replace=False)
            return rows[np.sort(chosen)], "exemplars"
        if self.mean is not None and self.mean.size == features:
            return self.mean[None, :], "mean"
        return np.zeros((1, features)), "zeros"

    def _row_model(
        self, run: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]], row: int, shape: tuple[int, ...]
    ) -> RowModel:
        """The model as a function of the explained input's rows, the request's other inputs held
        at row ``row``'s values: rows [n, M] -> the explained outputs side by side [n, K]."""
        request, explained = self.request, self.explained
        dtype = request.inputs[explained.name].dtype

        def model(rows: np.ndarray) -> np.ndarray:
            if self.abandoned.is_set():
                raise Abandoned
            feed = {
                name: rows.reshape(len(rows), *shape).astype(dtype)
                if name == explained.name
                else np.repeat(value[row : row + 1], len(rows), axis=0)
                for name, value in request.inputs.items()
            }
            results = run(feed)
            self.widths = [int(np.asarray(results[o.name]).size // len(rows)) for o in self.outputs]
            return np.concatenate(
                [np.asarray(results[o.name], np.float64).reshape(len(rows), -1) for o in self.outputs], axis=1
            )

        return model

    def _attribute(self, model: RowModel, row: int, x: np.ndarray, background: np.ndarray) -> Attribution:
        if self.method == "shapley_exact":
            return exact_shapley(model, x, background, self.deadline)
        if self.method == "shapley_permutation":
            return sampled_shapley(model, x, background, self.samples, self.seed, self.deadline)
        return self._integrated_gradients(model, row, x, background.mean(axis=0))

    def _integrated_gradients(self, model: RowModel, row: int, x: np.ndarray, baseline: np.ndarray) -> Attribution:
        """Captum's Integrated Gradients (Sundararajan et al., ICML 2017) of each explained
        output's values, from ``baseline``: ``steps`` forward and backward rows per value. Run
        with gradients on (the adapter's ``run`` is under ``torch.inference_mode()``, where they
        fail)."""
        import torch
        from captum.attr import IntegratedGradients  # type: ignore[import-untyped]

        from .adapters.pytorch import PyTorchAdapter

        adapter = self.adapter
        assert isinstance(adapter, PyTorchAdapter)  # _plan() chose gradients for PyTorch alone
        names = [t.name for t in adapter.inputs]
        position = names.index(self.explained.name)
        shape = self.request.inputs[self.explained.name].shape[1:]
        others = tuple(
            torch.from_numpy(np.ascontiguousarray(self.request.inputs[name][row : row + 1])).to(adapter.device)
            for name in names
            if name != self.explained.name
        )
        dtype = torch.from_numpy(self.request.inputs[self.explained.name][:1]).dtype
        point = torch.from_numpy(x.reshape(1, *shape)).to(dtype).to(adapter.device)
        start = torch.from_numpy(baseline.reshape(1, *shape)).to(dtype).to(adapter.device)
        ends = model(np.stack([x, baseline]))  # the prediction and the baseline's (and the outputs' widths)
        values = []
        evaluations = 2
        for output in self.outputs:
            index = [t.name for t in adapter.outputs].index(output.name)
            forward = adapter.differentiable(index)

            def call(explained: Any, *rest: Any, forward: Callable[..., Any] = forward) -> Any:
                arguments = list(rest)
                arguments.insert(position, explained)
                return forward(*arguments).reshape(explained.shape[0], -1)

            for target in range(self.widths[self.outputs.index(output)]):
                if time.monotonic() > self.deadline:
                    raise DeadlineExceeded(evaluations)
                if self.abandoned.is_set():
                    raise Abandoned
                with torch.enable_grad():
                    attributions = IntegratedGradients(call).attribute(
                        point,
                        baselines=start,
                        target=target,
                        n_steps=self.steps,
                        additional_forward_args=others or None,
                    )
                values.append(attributions.detach().cpu().numpy().reshape(-1).astype(np.float64))
                evaluations += self.steps
        return Attribution(np.stack(values, axis=1), ends[1], ends[0], evaluations)

    def _outputs(self, attribution: Attribution, x: np.ndarray, features: Sequence[str]) -> list[dict[str, Any]]:
        """The attribution of each explained output, its columns of the side-by-side values."""
        answer, start = [], 0
        residual = attribution.residual
        for output, width in zip(self.outputs, self.widths, strict=True):
            columns = slice(start, start + width)
            start += width
            answer.append(
                {
                    "name": output.name,
                    "prediction": attribution.prediction[columns].tolist(),
                    "baseline": attribution.baseline[columns].tolist(),
                    "attributions": [
                        {"feature": name, "value": float(x[i]), "attribution": attribution.values[i, columns].tolist()}
                        for i, name in enumerate(features)
                    ],
                    "additivity_residual": residual[columns].tolist(),
                }
            )
        return answer

    def _counterfactual(
        self, model: RowModel, x: np.ndarray, exemplars: Exemplars, features: Sequence[str]
    ) -> dict[str, Any] | None:
        """The counterfactual of ``x`` by the class of the first explained output (its largest value)."""
        width = self.widths[0]
        if width < 2:
            raise InvalidInput(f"counterfactuals need a class output; {self.outputs[0].name!r} has one value per row")

        def classify(rows: np.ndarray) -> np.ndarray:
            classes: np.ndarray = model(rows)[:, :width].argmax(axis=1)
            return classes

        info = self.explained
        low = np.full(x.size, -np.inf if info.min is None else info.min)
        high = np.full(x.size, np.inf if info.max is None else info.max)
        return counterfactual(classify, x, exemplars, self.explainer.exemplar_classes(classify), low, high, features)


def yield_to_inference() -> None:
    """Run this explanation thread at nice 19 (on Linux a thread has its own nice value): where
    explanations and inference share a CPU, the scheduler gives inference the time it needs."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


PARAMETERS = frozenset(
    {"method", "nsamples", "steps", "seed", "background", "neighbours", "counterfactual", "audit", "input"}
)
"""The request parameters the explain endpoint reads; the protocol's own (``parameters.py``) are
checked as for infer."""


def _explain_parameters(body: bytes, header_length: str | None) -> tuple[bytes, str | None, dict[str, Any]]:
    """The body without the explain endpoint's request parameters (PARAMETERS), its header
    length, and those parameters. A body whose JSON header cannot be read is returned as it is,
    for the protocol's decoder to refuse with its reason."""
    split = len(body) if header_length is None else int(header_length) if header_length.isdigit() else -1
    if not 0 < split <= len(body):
        return body, header_length, {}
    try:
        header = json.loads(body[:split])
    except ValueError:
        return body, header_length, {}
    parameters = header.get("parameters") if isinstance(header, dict) else None
    if not isinstance(parameters, dict) or not PARAMETERS & parameters.keys():
        return body, header_length, {}
    header["parameters"] = {k: v for k, v in parameters.items() if k not in PARAMETERS}
    encoded = json.dumps(header).encode()
    ours = {k: v for k, v in parameters.items() if k in PARAMETERS}
    return encoded + body[split:], None if header_length is None else str(len(encoded)), ours


def _integer(parameters: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = parameters.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"parameters.{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _boolean(parameters: Mapping[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameters.{name} must be true or false, got {value!r}")
    return value


def _choice(parameters: Mapping[str, Any], name: str, choices: Sequence[str], default: str) -> str:
    value = parameters.get(name, default)
    if value not in choices:
        raise InvalidInput(f"parameters.{name} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)
