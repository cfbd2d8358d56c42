"""Ground-truth feedback at the gateway (issue 20, item 3): the gateway keeps, per answer id, the
revision that answered and each row's top class and probability, for ModelDeployments with
``spec.feedback``; ``POST /v2/models/{name}/feedback`` turns truth into per-revision
correct/incorrect and per-confidence-bucket counts. Bad feedback (unknown, late, duplicated or
reused ids, wrong types) is a 4xx JSON error and counts nothing twice.

In front of a real ``cutover serve`` with the sample ONNX classifier, called with plain HTTP and
with tritonclient (binary tensors, the classification extension)."""

from __future__ import annotations

import gc
import gzip
import json
import re
import subprocess
import sys
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from cutover.serving import sample_models
from cutover.serving.gateway.app import Gateway
from cutover.serving.gateway.feedback import MAX_ITEMS, Feedback, FeedbackSettings, parse, predicted
from cutover.serving.gateway.metrics import CALIBRATION_LABELS, GatewayMetrics, calibration_bin
from cutover.serving.gateway.proxy import Answer
from cutover.serving.gateway.routing import Backend, Route

from .support import CLASSIFIER_INPUTS, Serving, key_secret, threaded_gateway

MODEL = "classifier"
REVISION = "a"  # threaded_gateway's one stable revision


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    workdir = tmp_path_factory.mktemp("feedback")
    model = sample_models.onnx_classifier(workdir / "good.onnx", "good")
    process = Serving(workdir, "--format", "onnx", "--model-uri", str(model), "--inputs", CLASSIFIER_INPUTS).start()
    yield process
    assert process.stop() == 0


@pytest.fixture
def gateway(serving: Serving) -> Iterator[tuple[str, Gateway]]:
    with threaded_gateway(MODEL, serving.url, spec={"feedback": {}}) as running:
        yield running


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        assert error.headers["Content-Type"] == "application/json"
        return error.code, json.loads(error.read())


def infer(url: str, rows: int, *, seed: int = 0, **extra: Any) -> tuple[str, np.ndarray]:
    """Infer ``rows`` sample rows; the answer's id and probabilities."""
    x = sample_models.sample_inputs(rows, seed=seed)
    headers = extra.pop("headers", {})
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    status, answer = post(f"{url}/v2/models/{MODEL}/infer", {"inputs": [tensor], **extra}, headers)
    assert status == 200, answer
    output = answer["outputs"][0]
    return answer["id"], np.asarray(output["data"]).reshape(output["shape"])


def feedback(url: str, body: Any, model: str = MODEL) -> tuple[int, Any]:
    return post(f"{url}/v2/models/{model}/feedback", body)


def counted(gateway: Gateway, outcome: str | None = None, *, series: str = "feedback", **labels: str) -> float:
    """The sum of a gateway feedback series' samples for the revision (and ``outcome``)."""
    total = 0.0
    for family in gateway.metrics.registry.collect():
        if family.name != f"cutover_gateway_{series}":
            continue
        for sample in family.samples:
            wanted = {"outcome": outcome} if outcome else {}
            if sample.name.endswith("_total") and {**wanted, **labels}.items() <= sample.labels.items():
                total += sample.value
    return total


def refused(gateway: Gateway, reason: str) -> float:
    return counted(gateway, series="feedback_refused", reason=reason)


def test_truth_is_counted_per_row_against_the_revision_that_answered(gateway: tuple[str, Gateway]) -> None:
    url, gw = gateway
    one, probabilities = infer(url, 1, id="order-1")
    three, batch = infer(url, 3, seed=1, headers={"X-Request-Id": "order-2"})  # the header names it
    assert (one, three) == ("order-1", "order-2")
    top, top3 = int(probabilities[0].argmax()), batch.argmax(axis=1)
    truth3 = [int(top3[0]), int((top3[1] + 1) % 3), int(top3[2])]  # the middle row was wrong

    assert feedback(url, {"id": one, "truth": top}) == (
        200,
        {"id": one, "status": 200, "revision": REVISION, "rows": 1, "correct": 1},
    )
    status, answer = feedback(url, [{"id": three, "truth": truth3}])
    assert status == 200 and answer["results"][0]["correct"] == 2

    assert counted(gw, "correct", revision=REVISION) == 3
    assert counted(gw, "incorrect", revision=REVISION) == 1
    confidences = [probabilities[0].max(), *batch.max(axis=1)]
    assert counted(gw, series="feedback_by_confidence", revision=REVISION) == 4
    assert counted(gw, series="feedback_confidence", revision=REVISION) == pytest.approx(sum(confidences), rel=1e-6)
    wrong_bucket = CALIBRATION_LABELS[calibration_bin(float(batch[1].max()))]
    assert counted(gw, "incorrect", series="feedback_by_confidence", bucket=wrong_bucket) == 1


def test_an_answer_without_an_id_is_fed_back_by_the_id_serving_gave_it(gateway: tuple[str, Gateway]) -> None:
    url, gw = gateway
    answer_id, probabilities = infer(url, 1)
    assert answer_id  # the protocol's answer carries an id even when the request had none
    assert feedback(url, {"id": answer_id, "truth": str(int(probabilities[0].argmax()))})[0] == 200
    assert counted(gw, "correct") == 1


def test_an_answer_compressed_for_the_client_is_kept(gateway: tuple[str, Gateway]) -> None:
    """A client that accepts gzip gets a large answer compressed by the revision, and the gateway
    passes it on as it came: it must decode it to read the classes (it read nothing before)."""
    url, gw = gateway
    x = sample_models.sample_inputs(100, seed=2)
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    request = urllib.request.Request(
        f"{url}/v2/models/{MODEL}/infer",
        data=json.dumps({"id": "zipped", "inputs": [tensor]}).encode(),
        headers={"Accept-Encoding": "gzip"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        answer = json.loads(gzip.decompress(response.read()))
    top = np.asarray(answer["outputs"][0]["data"]).reshape(100, 3).argmax(axis=1).tolist()
    assert feedback(url, {"id": "zipped", "truth": top})[1]["correct"] == 100
    assert counted(gw, series="feedback_unreadable") == 0


def test_binary_answers_and_the_classification_extension_through_tritonclient(gateway: tuple[str, Gateway]) -> None:
    url, gw = gateway
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    x = sample_models.sample_inputs(2, seed=3)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    binary = client.infer(
        MODEL, [tensor], request_id="binary", outputs=[httpclient.InferRequestedOutput("probabilities")]
    )
    classes = client.infer(
        MODEL,
        [tensor],
        request_id="classes",
        outputs=[httpclient.InferRequestedOutput("probabilities", class_count=2)],
    )
    top = binary.as_numpy("probabilities").argmax(axis=1)
    best = [int(row[0].decode().split(":")[1]) for row in classes.as_numpy("probabilities")]
    assert best == top.tolist()
    assert feedback(url, {"id": "binary", "truth": top.tolist()})[1]["correct"] == 2
    assert feedback(url, {"id": "classes", "truth": [best[0], best[1] + 1]})[1]["correct"] == 1
    assert counted(gw, "correct") == 3 and counted(gw, "incorrect") == 1
    assert counted(gw, series="feedback_by_confidence") == 4  # the extension's value is the probability


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"not json", "the body must be JSON"),
        ({"truth": 1}, "id must be the answer's id"),
        ({"id": 7, "truth": 1}, "id must be the answer's id"),
        ({"id": "x" * 257, "truth": 1}, "id must be the answer's id"),
        ({"id": "k"}, "truth is required"),
        ({"id": "k", "truth": True}, "a class is an integer index or a string label, not true"),
        ({"id": "k", "truth": 1.5}, "not 1.5"),
        ({"id": "k", "truth": {"class": 1}}, "a class is an integer index or a string label"),
        ({"id": "k", "truth": []}, "not an empty list"),
        ({"id": "k", "truth": [1, None]}, r"truth\[1\]"),
        ({"id": "k", "truth": ""}, "a label has 1 to 256 characters"),
        ({"id": "k", "truth": 1, "reward": 1}, "unknown fields \\['reward'\\]"),
        ([], "a feedback batch has 1 to 10000 items, not 0"),
        ([{"id": "k", "truth": 1}, "k"], "item 1 must be an object"),
        ([{"id": "k", "truth": 1}, {"id": "k", "truth": 2}], "id 'k' appears twice in the batch"),
        ("k", "the feedback must be an object"),
    ],
)
def test_malformed_feedback_is_a_400_that_counts_nothing_and_spends_no_id(
    gateway: tuple[str, Gateway], body: Any, said: str
) -> None:
    url, gw = gateway
    answer_id, probabilities = infer(url, 1, id="k")
    status, answer = feedback(url, body)
    assert status == 400 and set(answer) == {"error"}
    assert re.search(said, answer["error"]), answer["error"]
    assert counted(gw) == 0 and counted(gw, series="feedback_refused") == 0
    assert feedback(url, {"id": answer_id, "truth": int(probabilities[0].argmax())})[0] == 200  # still open


def test_unknown_late_duplicate_and_reused_ids_are_refused_and_counted_once(gateway: tuple[str, Gateway]) -> None:
    url, gw = gateway
    _, probabilities = infer(url, 1, id="once")
    truth = int(probabilities[0].argmax())
    assert feedback(url, {"id": "once", "truth": truth})[0] == 200
    status, answer = feedback(url, {"id": "once", "truth": truth})
    assert (status, answer["reason"]) == (409, "duplicate") and "already has its truth" in answer["error"]
    assert counted(gw) == 1  # not twice

    status, answer = feedback(url, {"id": "never-answered", "truth": 0})
    assert (status, answer["reason"]) == (404, "unknown")

    infer(url, 1, id="reused")
    infer(url, 1, id="reused", seed=5)  # two answers, maybe by two revisions: which one is the truth for?
    status, answer = feedback(url, {"id": "reused", "truth": 0})
    assert (status, answer["reason"]) == (409, "ambiguous")

    infer(url, 2, id="two-rows")
    status, answer = feedback(url, {"id": "two-rows", "truth": 0})
    assert (status, answer["reason"]) == (400, "invalid") and "give a list of 2 class(es)" in answer["error"]

    infer(url, 1, id="late")
    now = gw.feedback.clock()
    gw.feedback.clock = lambda: now + gw.config.feedback_window + 1
    status, answer = feedback(url, {"id": "late", "truth": 0})
    assert (status, answer["reason"]) == (404, "late") and "older than the feedback window (3600s)" in answer["error"]

    for reason in ("duplicate", "unknown", "ambiguous", "invalid", "late"):
        assert refused(gw, reason) == 1, reason
    assert counted(gw) == 1


def test_a_batch_takes_what_it_can_and_says_what_it_did_not(gateway: tuple[str, Gateway]) -> None:
    url, gw = gateway
    _, probabilities = infer(url, 1, id="good")
    status, answer = feedback(
        url, [{"id": "good", "truth": int(probabilities[0].argmax())}, {"id": "gone", "truth": 1}]
    )
    assert status == 207
    assert [(r["id"], r["status"]) for r in answer["results"]] == [("good", 200), ("gone", 404)]
    assert counted(gw, "correct") == 1 and refused(gw, "unknown") == 1


def test_a_feedback_body_beyond_its_limit_is_a_413_before_parsing_and_a_full_batch_is_taken(
    gateway: tuple[str, Gateway],
) -> None:
    """A body at the gateway's request limit (64 MiB) held the event loop for seconds and took
    650 MB to parse before the item limit refused it."""
    url, gw = gateway
    item = '{"id": "0123456789abcdef0123456789abcdef0123", "truth": 1}'
    status, answer = feedback(url, ("[" + ",".join([item] * 40_000) + "]").encode())
    assert status == 413 and "error" in answer
    assert counted(gw, series="feedback_refused") == 0
    answer_id, probabilities = infer(url, 1)
    batch = [{"id": f"{n:036d}", "truth": 1} for n in range(MAX_ITEMS - 1)]
    status, answer = feedback(url, [*batch, {"id": answer_id, "truth": int(probabilities[0].argmax())}])
    assert status == 207 and [r["status"] for r in answer["results"]] == [404] * (MAX_ITEMS - 1) + [200]
    assert refused(gw, "unknown") == MAX_ITEMS - 1 and counted(gw, "correct") == 1


def test_feedback_needs_a_model_that_takes_it(serving: Serving, gateway: tuple[str, Gateway]) -> None:
    url, _ = gateway
    status, answer = feedback(url, {"id": "x", "truth": 1}, model="nobody")
    assert (status, answer) == (404, {"error": "unknown model 'nobody'"})
    with threaded_gateway(MODEL, serving.url) as (plain, gw):
        answer_id, _ = infer(plain, 1)
        status, answer = feedback(plain, {"id": answer_id, "truth": 1})
        assert status == 404 and "does not set spec.feedback" in answer["error"]
        assert not gw.feedback.kept  # its answers were never parsed


def test_feedback_needs_a_key_that_may_call_the_model(serving: Serving) -> None:
    with threaded_gateway(MODEL, serving.url, spec={"feedback": {}}, auth=True) as (url, gw):
        gw.keys.replace([key_secret("mine", "cut_mine", "pro"), key_secret("other", "cut_other", "pro", models="x")])
        answer_id, probabilities = infer(url, 1, headers={"Authorization": "Bearer cut_mine"})
        body = json.dumps({"id": answer_id, "truth": int(probabilities[0].argmax())}).encode()
        assert post(f"{url}/v2/models/{MODEL}/feedback", body)[0] == 401
        status, answer = post(f"{url}/v2/models/{MODEL}/feedback", body, {"Authorization": "Bearer cut_other"})
        assert status == 403 and "error" in answer
        assert counted(gw) == 0
        assert post(f"{url}/v2/models/{MODEL}/feedback", body, {"Authorization": "Bearer cut_mine"})[0] == 200


def test_the_store_drops_its_oldest_answer_beyond_its_capacity(serving: Serving) -> None:
    with threaded_gateway(MODEL, serving.url, spec={"feedback": {}}, feedback_max_answers=2) as (url, gw):
        for n in range(3):
            infer(url, 1, id=f"n{n}")
        assert [key[1] for key in gw.feedback.kept] == ["n1", "n2"]
        assert feedback(url, {"id": "n0", "truth": 0})[1]["reason"] == "unknown"


# -- reading an answer's class, without a network ------------------------------------------------


def answer(output: dict[str, Any], answer_id: str | None = "id-1") -> bytes:
    body: dict[str, Any] = {"model_name": MODEL, "model_version": "1", "outputs": [output]}
    if answer_id is not None:
        body["id"] = answer_id
    return json.dumps(body).encode()


def tensor(datatype: str, shape: list[int], data: list[Any], name: str = "out") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


@pytest.mark.parametrize(
    ("output", "rows"),
    [
        (tensor("FP32", [2, 3], [0.2, 0.7, 0.1, 0.5, 0.25, 0.25]), [(1, None, 0.7), (0, None, 0.5)]),
        (tensor("FP32", [1, 3], [2.0, -1.0, 0.5]), [(0, None, None)]),  # logits: a class, no probability
        (tensor("FP32", [2, 1], [0.9, 0.2]), [(1, None, 0.9), (0, None, 0.8)]),  # binary scores
        (tensor("INT64", [3], [2, 0, 1]), [(2, None, None), (0, None, None), (1, None, None)]),
        (tensor("BYTES", [2, 1], ["0.900000:2:cat", "0.600000:0:dog"]), [(2, "cat", 0.9), (0, "dog", 0.6)]),
        (tensor("BYTES", [2], ["cat", "dog"]), [(None, "cat", None), (None, "dog", None)]),
    ],
)
def test_each_kind_of_classifier_output_gives_its_rows_classes(
    output: dict[str, Any], rows: list[tuple[Any, ...]]
) -> None:
    read = predicted(answer(output), None, None)
    assert read is not None and read[0] == "id-1"
    assert [(i, label, None if p is None else pytest.approx(p, abs=1e-6)) for i, label, p in read[1]] == rows


@pytest.mark.parametrize(
    ("body", "output"),
    [
        (answer(tensor("FP32", [1, 2], [None, 0.5])), None),  # a missing score
        (answer(tensor("FP32", [1, 2], [0.5, 0.5])), "other"),  # no such output
        (answer(tensor("FP32", [1, 2], [0.5, 0.5]), answer_id=None), None),
        (answer(tensor("BYTES", [1, 2], ["a", "b"])), None),  # neither classes nor one label a row
        (b'{"outputs": 3}', None),
        (b"\xff", None),
    ],
)
def test_an_answer_without_a_readable_class_is_not_kept(body: bytes, output: str | None) -> None:
    assert predicted(body, None, output) is None


def test_an_unreadable_answer_is_counted_and_never_fails_the_request() -> None:
    metrics = GatewayMetrics()
    store = Feedback(metrics)
    backend = Backend(REVISION, "stable", "http://127.0.0.1:1", 100)
    route = Route("tests", MODEL, MODEL, (backend,), feedback=FeedbackSettings())
    store.keep(route, Answer(200, b"<html>", {}, backend))
    assert not store.kept
    assert (
        metrics.registry.get_sample_value(
            "cutover_gateway_feedback_unreadable_total", {"namespace": "tests", "model": MODEL, "revision": REVISION}
        )
        == 1
    )


def test_an_entry_costs_what_the_docs_say_and_nothing_at_garbage_collection() -> None:
    """gateway/feedback.py states about 450 bytes for a one-row answer with a 36-character id,
    in tuples the garbage collector stops tracking."""
    store = Feedback(GatewayMetrics(), capacity=20_000)
    backend = Backend(REVISION, "stable", "http://127.0.0.1:1", 100)
    route = Route("tests", MODEL, MODEL, (backend,), feedback=FeedbackSettings())
    bodies = [answer(tensor("FP32", [1, 3], [0.2, 0.7, 0.1]), f"{n:036d}") for n in range(20_000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for body in bodies:
        store.keep(route, Answer(200, body, {}, backend))
    per_entry = (tracemalloc.get_traced_memory()[0] - before) / len(bodies)
    tracemalloc.stop()
    assert len(store.kept) == 20_000
    assert 300 < per_entry < 500, per_entry
    for _ in range(3):  # a tuple is untracked at a collection once what it holds is: row, rows, entry
        gc.collect()
    assert not any(gc.is_tracked(entry) for entry in store.kept.values())  # full collections never walk them


@pytest.mark.parametrize(
    ("flag", "said"),
    [
        ("--feedback-max-answers=0", "0 is not a count above 0"),
        ("--feedback-max-answers=-1", "-1 is not a count above 0"),
        ("--feedback-window=-1", "-1 is not a number of seconds above 0"),
        ("--feedback-window=inf", "inf is not a number of seconds above 0"),
    ],
)
def test_a_store_that_could_not_hold_anything_is_a_usage_error(flag: str, said: str) -> None:
    """A negative capacity once emptied the store and then failed every answer (popping from an
    empty store); 0 kept nothing, and a window of 0 or less refused all feedback as late."""
    done = subprocess.run(
        [sys.executable, "-m", "cutover.operator.cli", "gateway", flag], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and said in done.stderr, done.stderr
    with pytest.raises(ValueError, match="capacity above 0"):
        Feedback(GatewayMetrics(), capacity=0)


def test_the_store_is_bounded_by_rows_not_answers() -> None:
    """An answer of n rows takes n places: a client sending answers of many rows could make a
    store bounded by answers hold any number of rows (about 100 bytes each)."""
    metrics = GatewayMetrics()
    store = Feedback(metrics, capacity=10)
    backend = Backend(REVISION, "stable", "http://127.0.0.1:1", 100)
    route = Route("tests", MODEL, MODEL, (backend,), feedback=FeedbackSettings())
    for n in range(3):
        store.keep(route, Answer(200, answer(tensor("INT64", [4], [0, 1, 2, 3]), f"four-{n}"), {}, backend))
    assert [key[1] for key in store.kept] == ["four-1", "four-2"]
    store.keep(route, Answer(200, answer(tensor("INT64", [11], [0] * 11), "eleven"), {}, backend))
    assert [key[1] for key in store.kept] == ["four-1", "four-2"]  # not kept: it would have emptied the store
    labels = {"namespace": "tests", "model": MODEL, "revision": REVISION}
    assert metrics.registry.get_sample_value("cutover_gateway_feedback_unreadable_total", labels) == 1


def test_an_answer_too_large_to_read_on_the_event_loop_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeping an answer parses it on the gateway's event loop; a 36 MB JSON answer would hold
    every client's requests about half a second. Past READ_ANSWER_BYTES (decoded) it is counted as unreadable
    without being parsed, compressed or not."""
    from cutover.serving.gateway import feedback, proxy

    parsed: list[bytes] = []
    monkeypatch.setattr(feedback, "predicted", lambda body, *_: parsed.append(body))
    metrics = GatewayMetrics()
    store = Feedback(metrics)
    backend = Backend(REVISION, "stable", "http://127.0.0.1:1", 100)
    route = Route("tests", MODEL, MODEL, (backend,), feedback=FeedbackSettings())
    large = answer(tensor("INT64", [1], [1]), "large") + b" " * proxy.READ_ANSWER_BYTES
    store.keep(route, Answer(200, large, {}, backend))
    store.keep(route, Answer(200, gzip.compress(large), {"Content-Encoding": "gzip"}, backend))
    assert not store.kept and parsed == [b"", b""], "nothing of the answers was parsed"
    labels = {"namespace": "tests", "model": MODEL, "revision": REVISION}
    assert metrics.registry.get_sample_value("cutover_gateway_feedback_unreadable_total", labels) == 2


def kept_answer(output: dict[str, Any]) -> tuple[GatewayMetrics, Feedback, Route]:
    """A store holding one answer (id ``id-1``) of ``output`` by the stable revision."""
    metrics = GatewayMetrics()
    store = Feedback(metrics)
    backend = Backend(REVISION, "stable", "http://127.0.0.1:1", 100)
    route = Route("tests", MODEL, MODEL, (backend,), feedback=FeedbackSettings())
    store.keep(route, Answer(200, answer(output), {}, backend))
    return metrics, store, route


@pytest.mark.parametrize(
    ("output", "truth"),
    [
        (tensor("FP32", [1, 3], [0.2, 0.7, 0.1]), 3),  # beyond the columns
        (tensor("FP32", [1, 3], [0.2, 0.7, 0.1]), "3"),
        (tensor("FP32", [1, 3], [0.2, 0.7, 0.1]), -1),
        (tensor("FP32", [1, 3], [0.2, 0.7, 0.1]), "cat"),  # a label, for an answer with none
        (tensor("FP32", [1, 1], [0.9]), 2),  # a binary score's classes are 0 and 1
        (tensor("INT64", [1], [2]), -1),
        (tensor("BYTES", [1, 1], ["0.900000:2"]), "dog"),  # the extension without labels
    ],
)
def test_a_truth_the_answer_could_not_give_is_a_400_not_a_wrong_answer(output: dict[str, Any], truth: Any) -> None:
    metrics, store, route = kept_answer(output)
    status, said = store.take(route, *parse(json.dumps({"id": "id-1", "truth": truth}).encode()))
    assert (status, said["reason"]) == (400, "invalid") and "is not a class the answer" in said["error"], said
    labels = {"namespace": "tests", "model": MODEL, "revision": REVISION, "outcome": "incorrect"}
    assert not metrics.registry.get_sample_value("cutover_gateway_feedback_total", labels)
    assert store.take(route, *parse(b'{"id": "id-1", "truth": 1}'))[0] == 200  # the id is still open


@pytest.mark.parametrize("truth", [2, "2", "02"])
def test_a_class_index_given_as_text_is_the_same_class(truth: Any) -> None:
    _, store, route = kept_answer(tensor("FP32", [1, 3], [0.1, 0.2, 0.7]))
    assert store.take(route, *parse(json.dumps({"id": "id-1", "truth": truth}).encode()))[1]["correct"] == 1
