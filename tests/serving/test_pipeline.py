"""The request path in process, without HTTP or a server process: what a client would get back
(bodies, named errors and their statuses), what the model sees, what is counted and audited,
and where filters sit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from cutover.api.v1alpha1.modeldeployment import OutOfDistribution
from cutover.serving.adapters.base import Adapter, TensorInfo
from cutover.serving.audit import AuditLog, input_digest
from cutover.serving.batching import Batcher
from cutover.serving.config import ServeConfig
from cutover.serving.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    NotSupported,
    Overloaded,
    ServingError,
    UpstreamError,
)
from cutover.serving.fallback import FallbackChain, Link, safe_default
from cutover.serving.loading import LoadedModel
from cutover.serving.metrics import ServingMetrics
from cutover.serving.ood import MahalanobisScorer, OodCheck
from cutover.serving.pipeline import Admission, Encoded, Filters, Pipeline
from cutover.serving.protocol import HEADER_LENGTH, RawInput, assemble, decode_response, encode_tensors

LABELS = {"namespace": "tests", "model": "classifier", "revision": "rev-1"}
INPUTS = (TensorInfo("input", "FP32", (-1, 2), -10.0, 10.0),)
OUTPUTS = (TensorInfo("probabilities", "FP32", (-1, 2)),)


class Classifier(Adapter):
    """Two classes; the probability of the second is the sigmoid of the row's sum. Records what
    it was given (``called`` is set on the first call); ``failure`` is raised instead of
    answering; ``gate`` holds calls until it is set."""

    platform: ClassVar[str] = "test_classifier"
    inputs = INPUTS
    outputs = OUTPUTS

    def __init__(self, failure: Exception | None = None, gate: asyncio.Event | None = None) -> None:
        self.failure = failure
        self.gate = gate
        self.seen: list[np.ndarray] = []
        self.called = asyncio.Event()

    async def load(self) -> None:
        pass

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(inputs["input"])
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        second = 1 / (1 + np.exp(-inputs["input"].sum(axis=1)))
        return {"probabilities": np.stack([1 - second, second], axis=1).astype(np.float32)}


class Chat(Adapter):
    """An llm model whose upstream echoes the last message, or raises ``failure``."""

    platform: ClassVar[str] = "openai_chat"
    inputs = (TensorInfo("text_input", "BYTES", (-1,)),)
    outputs = (TensorInfo("text_output", "BYTES", (-1,)),)

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure

    async def load(self) -> None:
        pass

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    async def chat(self, request: Mapping[str, Any]) -> dict[str, Any]:
        if self.failure is not None:
            raise self.failure
        content = request["messages"][-1]["content"]
        return {"id": "chatcmpl-1", "choices": [{"message": {"role": "assistant", "content": f"echo: {content}"}}]}


def config(**changes: Any) -> ServeConfig:
    return ServeConfig(name="classifier", version="1", format="onnx", revision="rev-1", namespace="tests", **changes)


def pipeline(
    adapter: Adapter | None = None,
    *,
    serve: ServeConfig | None = None,
    filters: Filters | None = None,
    max_in_flight: int = 8,
    **loaded: Any,
) -> Pipeline:
    serve = serve or config()
    adapter = adapter or Classifier()
    metrics = ServingMetrics(
        "tests", "classifier", "rev-1", lambda: 0, scores_out_of_distribution=serve.out_of_distribution is not None
    )
    model = LoadedModel(adapter, list(adapter.inputs), list(adapter.outputs), **loaded)
    return Pipeline(serve, model, metrics, Admission(max_in_flight), filters)


def body(data: bytes) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        return data

    return read


def json_body(value: Any) -> Callable[[], Awaitable[Any]]:
    async def read() -> Any:
        return value

    return read


def request(rows: Sequence[Sequence[float]], **header: Any) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), 2], "data": rows}], **header}
    ).encode()


def sample(p: Pipeline, name: str, **labels: str) -> float | None:
    return p.metrics.registry.get_sample_value(name, {**LABELS, **labels})


async def test_a_json_request_is_answered_with_the_models_outputs_and_counted() -> None:
    p = pipeline()

    answer = await p.infer(body(request([[1, 2], [-3, 0]], id="req-7")))

    assert answer.header_length is None
    header, outputs = decode_response(answer.body)
    assert header["model_name"] == "classifier" and header["model_version"] == "1" and header["id"] == "req-7"
    assert "parameters" not in header
    np.testing.assert_allclose(outputs["probabilities"][:, 1], 1 / (1 + np.exp([-3.0, 3.0])), rtol=1e-6)
    assert sample(p, "cutover_predictions_total") == 2
    assert sample(p, "cutover_prediction_confidence_count") == 2
    assert p.admission.in_flight == 0


async def test_binary_tensors_both_ways_and_a_raw_request() -> None:
    x = np.array([[0.5, 0.25]], dtype=np.float32)
    tensors, buffers = encode_tensors({"input": x}, {"input": True})
    sent, length = assemble({"inputs": tensors, "parameters": {"binary_data_output": True}}, buffers)
    p = pipeline(raw_input=RawInput("input", "FP32", (-1, 2)))

    binary = await p.infer(body(sent), str(length))
    raw = await p.infer(body(x.tobytes()), "0")

    for answer in (binary, raw):
        assert answer.header_length is not None
        _, outputs = decode_response(answer.body, str(answer.header_length))
        assert outputs["probabilities"].shape == (1, 2)


@pytest.mark.parametrize(
    ("sent", "length", "message"),
    [
        (b"{not json", None, "malformed JSON"),
        (request([[1, 2]]), "x", f"{HEADER_LENGTH} must be an integer"),
        (
            json.dumps({"inputs": [{"name": "other", "datatype": "FP32", "shape": [1], "data": [1]}]}).encode(),
            None,
            "unknown input 'other'",
        ),
        (request([[1, 20]]), None, "above the declared maximum 10"),
        (request([[1, 2]], outputs=[{"name": "logits"}]), None, "unknown output 'logits'"),
    ],
)
async def test_input_the_client_got_wrong_is_invalid_input_and_never_reaches_the_model(
    sent: bytes, length: str | None, message: str
) -> None:
    model = Classifier()
    p = pipeline(model)

    with pytest.raises(InvalidInput, match=message) as caught:
        await p.infer(body(sent), length)

    assert caught.value.status == 400
    assert p.admission.in_flight == 0
    if "output" not in message:
        assert model.seen == []


@pytest.mark.parametrize(
    ("failure", "error", "status"),
    [
        (RuntimeError("out of memory"), InferenceError, 500),
        (InvalidInput("upstream Triton: bad shape"), InvalidInput, 400),
        (UpstreamError("upstream Triton unreachable"), UpstreamError, 502),
    ],
)
async def test_a_model_failure_is_a_500_and_an_adapters_named_error_keeps_its_status(
    failure: Exception, error: type[ServingError], status: int
) -> None:
    p = pipeline(Classifier(failure))

    with pytest.raises(error) as caught:
        await p.infer(body(request([[1, 2]])))

    assert caught.value.status == status
    assert str(failure) in str(caught.value)
    assert sample(p, "cutover_predictions_total") == 0


async def test_requests_beyond_max_in_flight_are_shed_with_retry_after() -> None:
    gate = asyncio.Event()
    model = Classifier(gate=gate)
    p = pipeline(model, max_in_flight=1)
    first = asyncio.create_task(p.infer(body(request([[1, 2]]))))
    await asyncio.wait_for(model.called.wait(), timeout=5)

    with pytest.raises(Overloaded) as caught:
        await p.infer(body(request([[1, 2]])))

    assert (caught.value.status, caught.value.retry_after) == (503, 1)
    gate.set()
    await first
    assert p.admission.in_flight == 0


async def test_a_body_still_on_its_way_holds_no_admission_slot() -> None:
    """A client that sends its headers and trickles (or never finishes) its body is not in
    progress yet: it held a slot while its body was read, so a few slow uploads shed every
    other request as a 503, counted against the revision."""
    p = pipeline(max_in_flight=1)
    reading, arrived = asyncio.Event(), asyncio.Event()

    async def trickling() -> bytes:
        reading.set()
        await arrived.wait()
        return request([[1, 2]])

    slow = asyncio.create_task(p.infer(trickling))
    await asyncio.wait_for(reading.wait(), timeout=5)

    answer = await p.infer(body(request([[3, 4]])))

    assert decode_response(answer.body)[0]["outputs"]
    arrived.set()
    await slow
    assert p.admission.in_flight == 0


async def test_a_low_confidence_answer_is_replaced_by_the_fallback_chain(tmp_path: Path) -> None:
    default = {"outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.99, 0.01]}]}
    chain = FallbackChain([Link("safe_default", safe_default(default))], threshold=0.9, confidence_output=None)
    audit = AuditLog(tmp_path / "audit.jsonl")
    p = pipeline(fallback=chain, audit=audit)

    sent = [[0.1, -0.1]]  # the classifier's own answer: 50/50
    header, outputs = decode_response((await p.infer(body(request(sent)), request_id="req-9")).body)
    audit.close()

    assert header["parameters"] == {"fallback": "safe_default"}
    np.testing.assert_allclose(outputs["probabilities"], [[0.99, 0.01]], rtol=1e-6)
    assert sample(p, "cutover_serving_fallbacks_total", link="safe_default", reason="low_confidence") == 1
    assert sample(p, "cutover_predictions_total") == 1, "the primary's rows are counted, not the fallback's"
    (record,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert record["request_id"] == "req-9" and record["fallback"] == "safe_default"
    assert record["confidence"] == [0.5] and record["status"] == 200
    assert record["input_digest"] == input_digest([np.array(sent, dtype=np.float32).tobytes()])


async def test_rows_far_from_the_training_data_are_scored_and_counted() -> None:
    spec = OutOfDistribution.model_validate({"statisticsUri": "unused", "input": "input", "threshold": 4})
    scorer = MahalanobisScorer({"mean": [0.0, 0.0], "covariance": [[1.0, 0.0], [0.0, 1.0]]})
    p = pipeline(serve=config(out_of_distribution=spec), ood=scorer, ood_check=OodCheck(scorer, 4.0))

    await p.infer(body(request([[0, 1], [6, 8]])))

    assert sample(p, "cutover_out_of_distribution_total") == 1
    assert sample(p, "cutover_out_of_distribution_score_count") == 2


async def test_rows_the_training_statistics_cannot_score_are_never_a_model_failure() -> None:
    """An empty batch has no rows to score (reshaping it raised, a 500); rows of another width
    than the statistics' (a model that leaves the width free) are the client's input."""

    class AnyWidth(Classifier):
        inputs = (TensorInfo("input", "FP32", (-1, -1)),)

    spec = OutOfDistribution.model_validate({"statisticsUri": "unused", "input": "input", "threshold": 4})
    scorer = MahalanobisScorer({"mean": [0.0, 0.0], "covariance": [[1.0, 0.0], [0.0, 1.0]]})
    p = pipeline(AnyWidth(), serve=config(out_of_distribution=spec), ood=scorer, ood_check=OodCheck(scorer, 4.0))
    empty = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [0, 2], "data": []}]}
    _, outputs = decode_response((await p.infer(body(json.dumps(empty).encode()))).body)
    assert outputs["probabilities"].shape == (0, 2)
    wide = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    with pytest.raises(InvalidInput, match="input 'input': input has 3 features per row; the training statistics"):
        await p.infer(body(json.dumps(wide).encode()))


async def test_filters_see_the_inputs_before_the_model_and_the_outputs_before_encoding(tmp_path: Path) -> None:
    async def clip(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.clip(array, -1, 1) for name, array in inputs.items()}

    async def certain(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.round(array) for name, array in outputs.items()}

    model = Classifier()
    audit = AuditLog(tmp_path / "audit.jsonl")
    p = pipeline(model, filters=Filters(inputs=[clip], outputs=[certain]), audit=audit)

    sent = [[5, -0.5]]
    _, outputs = decode_response((await p.infer(body(request(sent)))).body)
    audit.close()

    np.testing.assert_array_equal(model.seen[0], [[1, -0.5]])
    np.testing.assert_array_equal(outputs["probabilities"], [[0, 1]])
    (record,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert record["input_digest"] == input_digest([np.array(sent, dtype=np.float32).tobytes()])


async def test_a_filter_refuses_a_request_with_a_named_error() -> None:
    async def refuse(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise InvalidInput("refused by policy")

    model = Classifier()
    p = pipeline(model, filters=Filters(inputs=[refuse]))

    with pytest.raises(InvalidInput, match="refused by policy"):
        await p.infer(body(request([[1, 2]])))
    assert model.seen == [] and p.admission.in_flight == 0


async def test_a_chat_completion_is_answered_filtered_and_counted() -> None:
    async def shout(reply: dict[str, Any]) -> dict[str, Any]:
        message = reply["choices"][0]["message"]
        return {**reply, "choices": [{"message": {**message, "content": message["content"].upper()}}]}

    p = pipeline(Chat(), filters=Filters(chat_responses=[shout]))

    reply = await p.chat(json_body({"model": "classifier", "messages": [{"role": "user", "content": "hi"}]}))

    assert reply["choices"][0]["message"]["content"] == "ECHO: HI"
    assert sample(p, "cutover_predictions_total") == 1


async def _malformed_json() -> Any:
    return json.loads("{")


@pytest.mark.parametrize(
    ("adapter", "read", "error", "status", "message"),
    [
        (Chat(), _malformed_json, InvalidInput, 400, "malformed JSON"),
        (Chat(), json_body({"messages": []}), InvalidInput, 400, "messages must be a non-empty list"),
        (Chat(), json_body({"messages": [{"role": "robot"}]}), InvalidInput, 400, r"messages\[0\] needs a role"),
        (Chat(), json_body({"model": "gpt", "messages": [{"role": "user"}]}), ModelNotFound, 404, "unknown model"),
        (Chat(), json_body({"stream": "yes", "messages": [{"role": "user"}]}), InvalidInput, 400, "stream must be"),
        (Classifier(), json_body({"messages": [{"role": "user"}]}), NotSupported, 404, "chat completions need"),
        (Chat(ConnectionError("reset")), json_body({"messages": [{"role": "user"}]}), UpstreamError, 502, "reset"),
    ],
)
async def test_chat_failures_are_named_errors_with_their_status(
    adapter: Adapter, read: Callable[[], Awaitable[Any]], error: type[ServingError], status: int, message: str
) -> None:
    p = pipeline(adapter)

    with pytest.raises(error, match=message) as caught:
        await p.chat(read)

    assert caught.value.status == status
    assert p.admission.in_flight == 0


class Weighted(Adapter):
    """Two inputs that must agree on rows: ``x`` [-1, 2] times ``w`` [-1, 1]."""

    platform: ClassVar[str] = "test_weighted"
    inputs = (TensorInfo("x", "FP32", (-1, 2)), TensorInfo("w", "FP32", (-1, 1)))
    outputs = (TensorInfo("y", "FP32", (-1, 2)),)

    async def load(self) -> None:
        pass

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * inputs["w"]}


def weighted(x: Sequence[Sequence[float]], w: Sequence[Sequence[float]]) -> bytes:
    tensors = [("x", x, 2), ("w", w, 1)]
    inputs = [{"name": n, "datatype": "FP32", "shape": [len(v), width], "data": v} for n, v, width in tensors]
    return json.dumps({"inputs": inputs}).encode()


async def test_inputs_that_disagree_on_rows_are_refused_before_a_batch_takes_them() -> None:
    """Merged along the first dimension, a request with 2 rows of x and 1 of w would borrow a
    neighbour's w (its answer wrong, the neighbour's 200 undeserved); it is the client's 400."""
    adapter = Weighted()
    batcher = Batcher(adapter.infer, max_batch_size=8, max_queue_delay=0.05, max_queue_size=8)
    p = pipeline(adapter, batcher=batcher)
    good = p.infer(body(weighted([[1, 2]], [[3]])))
    bad = p.infer(body(weighted([[1, 1], [1, 1]], [[10]])))
    answers = await asyncio.gather(good, bad, return_exceptions=True)
    assert isinstance(answers[1], InvalidInput) and "batch (first) dimension" in str(answers[1])
    assert isinstance(answers[0], Encoded)
    assert json.loads(answers[0].body)["outputs"][0]["data"] == [3, 6]
    await batcher.close()
