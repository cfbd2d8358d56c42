"""The prediction cache (``runtime.cache``): its bounds, its key, identical requests in flight
together, and where it sits on the request path: a hit skips the model call and nothing else
(out-of-distribution scores, confidence, predictions, the fallback chain, the SafetyPolicy's
output screening, the audit record). Then `cutover serve` with the flags, as a client and the
rollout analysis see it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from aiohttp.test_utils import TestClient, TestServer

from cutover.api.v1alpha1.modeldeployment import FallbackSpec, OutOfDistribution
from cutover.api.v1alpha1.modeldeployment import PredictionCache as CacheSpec
from cutover.serving import sample_models
from cutover.serving.cache import PredictionCache, Tensors, digest
from cutover.serving.errors import InferenceError, SafetyBlocked
from cutover.serving.loading import LoadedModel
from cutover.serving.metrics import ServingMetrics
from cutover.serving.pipeline import Admission, Pipeline
from cutover.serving.safety.guard import Guard
from cutover.serving.safety.policy import compile_policy
from cutover.serving.server import ModelServer

from .safety_fakes import fake_builders
from .support import Serving
from .test_pipeline import LABELS, Classifier, body, config
from .test_safety_pipeline import Texter
from .test_safety_policy import document


def cached(**bounds: Any) -> tuple[PredictionCache, ServingMetrics]:
    metrics = ServingMetrics("tests", "classifier", "rev-1", lambda: 0, caches_predictions=True)
    settings: dict[str, Any] = {"max_entries": 100, "max_bytes": 1 << 20, **bounds}
    return PredictionCache("rev-1", metrics=metrics.cache, **settings), metrics


def sample(metrics: ServingMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {**LABELS, **labels})


def row(value: float, width: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((1, width), value, dtype=np.float32)}


class Model:
    """A model call for the cache: answers ``width`` copies of the input's first value and
    records each value it was asked for."""

    def __init__(self, width: int = 1) -> None:
        self.width = width
        self.asked: list[float] = []

    def __call__(self, inputs: dict[str, np.ndarray]) -> Callable[[], Awaitable[Tensors]]:
        async def predict() -> Tensors:
            value = float(inputs["x"].flat[0])
            self.asked.append(value)
            return {"y": np.full((1, self.width), value, dtype=np.float32)}

        return predict


async def ask(cache: PredictionCache, model: Model, value: float, **parameters: Any) -> str:
    inputs = row(value)
    outputs, lookup = await cache.outputs(inputs, parameters, model(inputs))
    assert float(outputs["y"].flat[0]) == value
    return lookup


# -- bounds ---------------------------------------------------------------------------------------


async def test_the_least_recently_used_answer_goes_first_when_entries_run_out() -> None:
    cache, metrics = cached(max_entries=2)
    model = Model()

    lookups = [await ask(cache, model, v) for v in (1, 2, 1, 3, 1, 2)]

    assert lookups == ["miss", "miss", "hit", "miss", "hit", "miss"]
    assert model.asked == [1, 2, 3, 2], "3 pushed out 2 (1 had just been used), then 2 pushed out 3"
    assert cache.entries == 2
    assert sample(metrics, "cutover_serving_cache_evictions_total", reason="capacity") == 2
    assert sample(metrics, "cutover_serving_cache_entries") == 2
    assert (
        sample(metrics, "cutover_serving_cache_hits_total"),
        sample(metrics, "cutover_serving_cache_misses_total"),
    ) == (
        2,
        4,
    )


async def test_bytes_are_bounded_too_and_an_answer_larger_than_the_bound_is_not_kept() -> None:
    each = 100 * 4 + 32  # a row of 100 FP32 outputs, and its 32-byte key
    cache, metrics = cached(max_bytes=2 * each + 10)
    model = Model(width=100)

    for value in (1, 2, 3):
        await ask(cache, model, value)

    assert cache.entries == 2 and cache.nbytes == 2 * each
    assert sample(metrics, "cutover_serving_cache_bytes") == 2 * each
    assert await ask(cache, model, 1) == "miss", "1 went out for 3"
    huge = Model(width=1000)
    assert [await ask(cache, huge, 9), await ask(cache, huge, 9)] == ["miss", "miss"]
    assert huge.asked == [9, 9] and cache.nbytes == 2 * each, "the huge answer pushed nothing out"


async def test_answers_older_than_the_ttl_are_asked_again() -> None:
    now = [100.0]
    cache, metrics = cached(ttl=30.0, clock=lambda: now[0])
    model = Model()

    first = await ask(cache, model, 1)
    now[0] += 29.9
    second = await ask(cache, model, 1)
    now[0] += 0.1  # 30 s after it was kept
    third = await ask(cache, model, 1)

    assert [first, second, third] == ["miss", "hit", "miss"] and model.asked == [1, 1]
    assert sample(metrics, "cutover_serving_cache_evictions_total", reason="expired") == 1


async def test_cached_outputs_are_read_only_and_own_their_memory() -> None:
    cache, _ = cached()
    batch = np.arange(8, dtype=np.float32).reshape(4, 2)

    async def predict() -> Tensors:
        return {"y": batch[1:2]}  # one request's rows of a batch, as the batcher returns them

    outputs, _ = await cache.outputs(row(1), {}, predict)

    assert outputs["y"].base is None and not outputs["y"].flags.writeable
    with pytest.raises(ValueError):
        outputs["y"][0, 0] = 7


# -- the key --------------------------------------------------------------------------------------

BASE = {
    "a": np.array([[1, 2]], dtype=np.int32),
    "b": np.array([b"xy", b"z"], dtype=object),
}


def key(revision: str = "rev-1", parameters: dict[str, Any] | None = None, **inputs: np.ndarray) -> bytes:
    return digest(revision, {**BASE, **inputs}, parameters or {})


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(lambda: key("rev-2"), id="revision"),
        pytest.param(lambda: digest("rev-1", {"a": BASE["a"], "c": BASE["b"]}, {}), id="input name"),
        pytest.param(lambda: key(a=BASE["a"].view(np.float32)), id="datatype, same bytes"),
        pytest.param(lambda: key(a=BASE["a"].reshape(2, 1)), id="shape, same bytes"),
        pytest.param(lambda: key(a=BASE["a"] + 1), id="values"),
        pytest.param(lambda: key(b=np.array([b"x", b"yz"], dtype=object)), id="BYTES elements, same bytes"),
        pytest.param(lambda: key(parameters={"mode": "fast"}), id="a request parameter"),
        pytest.param(lambda: digest("rev-1", {"a": BASE["a"]}, {}), id="one input fewer"),
    ],
)
def test_the_key_changes_with_every_part_of_what_the_model_is_asked(changed: Callable[[], bytes]) -> None:
    assert changed() != key()


@pytest.mark.parametrize(
    "same",
    [
        pytest.param(lambda: digest("rev-1", {"b": BASE["b"], "a": BASE["a"]}, {}), id="inputs in another order"),
        pytest.param(lambda: key(parameters={"binary_data_output": True}), id="binary_data_output"),
        pytest.param(lambda: key(b=np.array(["xy", "z"], dtype=object)), id="BYTES as str"),
        pytest.param(lambda: key(a=BASE["a"].astype(">i4")), id="big-endian copy"),
        pytest.param(lambda: key(a=np.asfortranarray(np.array([[1], [2]], dtype=np.int32)).T), id="not contiguous"),
    ],
)
def test_the_key_does_not_change_with_how_the_same_request_is_spelled(same: Callable[[], bytes]) -> None:
    assert same() == key()


async def test_a_large_input_digested_on_a_worker_thread_is_found_again() -> None:
    cache, _ = cached()
    image = {"x": np.random.default_rng(0).standard_normal((1, 3, 512, 512)).astype(np.float32)}  # 3 MiB
    model = Model()

    lookups = [(await cache.outputs(image, {}, model(image)))[1] for _ in range(2)]

    assert lookups == ["miss", "hit"] and len(model.asked) == 1


async def test_requests_in_a_sequence_pass_by_the_cache() -> None:
    cache, metrics = cached()
    model = Model()

    stateful = [await ask(cache, model, 1, sequence_id=7) for _ in range(2)]
    defaults = [await ask(cache, model, 1, sequence_id=0, sequence_start=False) for _ in range(2)]

    assert stateful == ["bypass", "bypass"] and defaults == ["miss", "hit"]
    assert model.asked == [1, 1, 1]
    assert sample(metrics, "cutover_serving_cache_misses_total") == 1


# -- identical requests in flight together --------------------------------------------------------


class Gated:
    """A model call that waits for ``gate``, then answers or raises ``failure``; counts its calls."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.gate = asyncio.Event()
        self.calls = 0
        self.failure = failure

    async def __call__(self) -> Tensors:
        self.calls += 1
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return {"y": np.ones((1, 1), dtype=np.float32)}

    async def started(self, calls: int) -> None:
        """Wait until the model has been called ``calls`` times; requests started before then
        are waiting by now too (each ran up to its first wait while this one yielded)."""
        while self.calls < calls:
            await asyncio.sleep(0)


async def test_identical_requests_in_flight_share_one_model_call() -> None:
    cache, metrics = cached()
    model = Gated()

    waiting = [asyncio.create_task(cache.outputs(row(1), {}, model)) for _ in range(4)]
    await model.started(1)
    model.gate.set()
    answers = await asyncio.gather(*waiting)

    assert model.calls == 1 and [lookup for _, lookup in answers] == ["miss", "coalesced", "coalesced", "coalesced"]
    assert all(outputs is answers[0][0] for outputs, _ in answers)
    assert sample(metrics, "cutover_serving_cache_hits_total") == 3
    assert (await cache.outputs(row(1), {}, model))[1] == "hit"


async def test_when_the_request_that_called_the_model_goes_away_a_waiting_one_asks_again() -> None:
    cache, metrics = cached()
    model = Gated()

    waiting = [asyncio.create_task(cache.outputs(row(1), {}, model)) for _ in range(3)]
    await model.started(1)
    waiting[0].cancel()  # its client disconnected
    await model.started(2)
    model.gate.set()
    answers = await asyncio.gather(*waiting[1:])

    assert waiting[0].cancelled()
    assert sorted(lookup for _, lookup in answers) == ["coalesced", "miss"], "nobody else saw the cancellation"
    assert model.calls == 2 and sample(metrics, "cutover_serving_cache_misses_total") == 2


async def test_a_failed_model_call_fails_everyone_waiting_for_it_and_is_not_kept() -> None:
    cache, _ = cached()
    model = Gated(InferenceError("model failed: boom"))

    waiting = [asyncio.create_task(cache.outputs(row(1), {}, model)) for _ in range(3)]
    await model.started(1)
    model.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)

    assert model.calls == 1 and all(isinstance(r, InferenceError) for r in results)
    with pytest.raises(InferenceError):
        await cache.outputs(row(1), {}, model)
    assert model.calls == 2 and cache.entries == 0


# -- on the request path --------------------------------------------------------------------------


def test_a_server_without_a_cache_exports_no_cache_series() -> None:
    metrics = ServingMetrics("tests", "classifier", "rev-1", lambda: 0)
    assert metrics.cache is None
    assert "cutover_serving_cache" not in json.dumps([m.name for m in metrics.registry.collect()])


async def test_a_hit_skips_the_model_call_and_nothing_else(tmp_path: Path) -> None:
    """Through the HTTP routes: every series a miss counts in but the model's own, the fallback
    chain (the cached answer is unsure), the audit record, and each request's own outputs."""
    statistics = tmp_path / "statistics.json"
    statistics.write_text(json.dumps({"mean": [0.0, 0.0], "covariance": [[1.0, 0.0], [0.0, 1.0]]}))
    default = {"outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.99, 0.01]}]}
    serve = config(
        prediction_cache=CacheSpec(max_entries=10),
        out_of_distribution=OutOfDistribution(statistics_uri=str(statistics), input="input", threshold=4),
        fallback=FallbackSpec(confidence_threshold=0.9, previous_version=False, safe_default=default),
        audit_log=tmp_path / "audit.jsonl",
    )
    classifier = Classifier()
    server = ModelServer(serve, classifier)
    await server.load()
    sure = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [5, 6]}]}
    unsure = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0.1, -0.1]}]}
    binary = {**sure, "parameters": {"binary_data_output": True}}
    try:
        async with TestClient(TestServer(server.app())) as client:
            answers = []
            for sent in (sure, sure, binary, unsure, unsure):
                answer = await client.post("/v2/models/classifier/infer", json=sent)
                answers.append((answer.status, await answer.read()))
    finally:
        await server.close()

    assert [status for status, _ in answers] == [200] * 5
    assert len(classifier.seen) == 2, "one model call per distinct input"
    first, second = (json.loads(answer) for _, answer in answers[:2])
    assert first["outputs"] == second["outputs"] and first["id"] != second["id"]
    assert b"binary_data_size" in answers[2][1], "each request's own encoding"
    assert json.loads(answers[4][1])["parameters"] == {"fallback": "safe_default"}, "an unsure hit still falls back"
    metrics = server.metrics
    counted = {
        "hits": sample(metrics, "cutover_serving_cache_hits_total"),
        "misses": sample(metrics, "cutover_serving_cache_misses_total"),
        "predictions": sample(metrics, "cutover_predictions_total"),
        "confidences": sample(metrics, "cutover_prediction_confidence_count"),
        "ood scores": sample(metrics, "cutover_out_of_distribution_score_count"),
        "out of distribution": sample(metrics, "cutover_out_of_distribution_total"),
        "fallbacks": sample(metrics, "cutover_serving_fallbacks_total", link="safe_default", reason="low_confidence"),
        "200s": sample(metrics, "cutover_serving_requests_total", code="200"),
    }
    assert counted == {
        "hits": 3,
        "misses": 2,
        "predictions": 5,
        "confidences": 5,
        "ood scores": 5,
        "out of distribution": 3,  # [5, 6] is 7.8 from the mean, hit or not
        "fallbacks": 2,
        "200s": 5,
    }
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["cache"] for r in records] == ["miss", "hit", "hit", "miss", "hit"]
    assert [r["fallback"] for r in records] == [None, None, None, "safe_default", "safe_default"]


async def test_a_hit_is_screened_by_the_policy_applied_now_and_looked_up_as_the_policy_redacted_it() -> None:
    metrics = ServingMetrics("tests", "classifier", "rev-1", lambda: 0, caches_predictions=True)
    guard = Guard(metrics.safety, "tests", "classifier", "rev-1")
    guard.apply(compile_policy(document(1, pii={"entities": ["email"]}), builders=fake_builders))
    texter = Texter()
    cache = PredictionCache("rev-1", 10, 1 << 20, metrics=metrics.cache)
    model = LoadedModel(texter, list(texter.inputs), list(texter.outputs), cache=cache)
    pipeline = Pipeline(config(), model, metrics, Admission(8), safety=guard)

    async def infer(text: str) -> dict[str, Any]:
        sent = {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]},
                {"name": "weight", "datatype": "FP32", "shape": [1], "data": [1.0]},
            ]
        }
        answer: dict[str, Any] = json.loads((await pipeline.infer(body(json.dumps(sent).encode()))).body)
        return answer

    await infer("you idiot, mail ann@example.com")
    await infer("you idiot, mail bob@example.org")  # the same question once redacted
    stricter = document(2, pii={"entities": ["email"]}, toxicity={"action": "block", "scope": "outputs"})
    guard.apply(compile_policy(stricter, builders=fake_builders))
    with pytest.raises(SafetyBlocked):
        await infer("you idiot, mail ann@example.com")

    assert len(texter.seen) == 1, "the model was asked once; the third answer came from the cache"
    assert sample(metrics, "cutover_serving_cache_hits_total") == 2


# -- cutover serve --------------------------------------------------------------------------------


def test_cutover_serve_answers_repeated_requests_from_its_cache(tmp_path: Path) -> None:
    """tritonclient against `cutover serve` with the cache flags; the batcher's histogram of batch
    sizes counts the model's runs."""
    model = sample_models.onnx_classifier(tmp_path / "good.onnx")
    serving = Serving(
        tmp_path,
        "--format",
        "onnx",
        "--model-uri",
        str(model),
        "--max-batch-size",
        "8",
        "--prediction-cache-entries",
        "100",
        "--prediction-cache-ttl",
        "10m",
        "--audit-log",
        str(tmp_path / "audit.jsonl"),
    ).start()
    try:
        client = httpclient.InferenceServerClient(serving.url.removeprefix("http://"))
        x = sample_models.sample_inputs(3, seed=5)
        answers = []
        for _ in range(4):
            tensor = httpclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            answers.append(client.infer("classifier", [tensor]).as_numpy("probabilities"))
        client.close()

        for answer in answers[1:]:
            np.testing.assert_array_equal(answer, answers[0])
        assert serving.metric("cutover_serving_batch_size_count") == 1, "the model ran once"
        assert serving.metric("cutover_predictions_total") == 12, "every answer counts as the model's prediction"
        assert serving.metric("cutover_serving_cache_hits_total") == 3
        assert serving.metric("cutover_serving_cache_misses_total") == 1
        assert serving.metric("cutover_serving_cache_entries") == 1
    finally:
        serving.stop()
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["cache"] for r in records] == ["miss", "hit", "hit", "hit"]


def test_cutover_serve_refuses_a_cache_for_an_llm_model() -> None:
    refused = subprocess.run(
        [
            *(sys.executable, "-m", "cutover.operator.cli", "serve", "--name", "chat", "--version", "1"),
            *("--format", "llm", "--upstream", "http://127.0.0.1:9", "--upstream-model", "m"),
            *("--prediction-cache-entries", "10"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert refused.returncode == 2
    assert "the prediction cache is off for llm models" in refused.stderr
