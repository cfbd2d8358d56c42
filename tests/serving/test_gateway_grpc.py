"""The gateway's gRPC port as ``tritonclient.grpc`` meets it, in front of two real `cutover serve`
revisions: health, metadata, config and inference pass through; calls are routed by the traffic
table's weights and sticky metadata, mirrored and compared, and keyed by metadata as HTTP is;
bad input is INVALID_ARGUMENT and never counted against a revision."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from aiohttp import web
from tritonclient.utils import InferenceServerException

from cutover.serving import sample_models
from cutover.serving.gateway.app import Gateway, GatewayConfig
from cutover.serving.gateway.feedback import parse
from cutover.serving.gateway.grpc_proxy import GatewayInferenceService
from cutover.serving.grpc_server import listening

from .support import CLASSIFIER_INPUTS, Serving, key_secret
from .test_gateway_faults import split
from .test_gateway_requests import MODEL, Revision, Stack, comparisons, settled, shadowing, stack
from .test_server import expected, models

__all__ = ["models", "stack"]  # the fixtures, used by name


@pytest.fixture(scope="module")
def revisions(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Serving]]:
    """Revision aaa serves version 1 and bbb version 2 of the same model (both `good`)."""
    workdir = tmp_path_factory.mktemp("revisions")
    started: dict[str, Serving] = {}
    try:
        for revision, version in (("aaa", "1"), ("bbb", "2")):
            serving = Serving(
                workdir,
                "--format",
                "onnx",
                "--model-uri",
                str(models / "good.onnx"),
                "--inputs",
                CLASSIFIER_INPUTS,
                name=MODEL,
                version=version,
            )
            serving.args[serving.args.index("--revision") + 1] = revision
            started[revision] = serving.start()
        yield started
    finally:
        for serving in started.values():
            serving.stop()


class Front:
    """A gateway with its gRPC port, routing by ``md`` to the revisions; ``client`` calls it."""

    def __init__(self, gateway: Gateway, client: grpcclient.InferenceServerClient) -> None:
        self.gateway, self.client = gateway, client

    async def version(self, headers: dict[str, str] | None = None) -> str:
        """The model version that answered one inference call (which revision served it)."""
        result = await self.client.infer(MODEL, [tensor(sample_models.sample_inputs(1))], headers=headers)
        return str(result.get_response().model_version)


@pytest.fixture
async def front(revisions: dict[str, Serving]) -> AsyncIterator[Front]:
    urls = {f"svc-{revision}": serving.url for revision, serving in revisions.items()}
    gateway = Gateway(GatewayConfig(auth=False))
    gateway.unlisted = set()
    gateway.set_resolver(lambda namespace, service: urls.get(service))
    gateway.replace_deployments([split(100)])
    service = GatewayInferenceService(gateway)
    async with listening(service, "127.0.0.1", 0, max_message_bytes=1 << 20, shutdown_grace=1) as port:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        yield Front(gateway, client)
        await client.close()
    await gateway.close()


def tensor(x: np.ndarray) -> grpcclient.InferInput:
    infer_input = grpcclient.InferInput("input", list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    return infer_input


async def test_tritonclient_grpc_works_through_the_gateway(front: Front, models: Path) -> None:
    client = front.client
    assert await client.is_server_live() and await client.is_server_ready()
    assert await client.is_model_ready(MODEL) and await client.is_model_ready(MODEL, "1")
    metadata = await client.get_model_metadata(MODEL)
    assert metadata.name == MODEL and list(metadata.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("input", "FP32", [-1, 4])]
    config = (await client.get_model_config(MODEL)).config
    assert config.name == MODEL and list(config.output[0].dims) == [-1, 3]
    x = sample_models.sample_inputs(4, seed=9)
    result = await client.infer(MODEL, [tensor(x)], request_id="through-1")
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected(models, x), rtol=1e-6)
    assert result.get_response().id == "through-1" and result.get_response().model_version == "1"
    wanted = grpcclient.InferRequestedOutput("probabilities")
    pinned = await client.infer(MODEL, [tensor(x)], model_version="1", outputs=[wanted])
    np.testing.assert_array_equal(pinned.as_numpy("probabilities"), result.as_numpy("probabilities"))
    top = grpcclient.InferRequestedOutput("probabilities", class_count=1)
    classified = (await client.infer(MODEL, [tensor(x)], outputs=[top])).as_numpy("probabilities")
    best = result.as_numpy("probabilities").argmax(axis=1)
    assert [int(item.decode().split(":")[1]) for item in classified.ravel()] == best.tolist()
    statistics = (await client.get_inference_statistics(MODEL)).model_stats[0]
    assert statistics.name == MODEL and statistics.inference_count >= 4
    with pytest.raises(
        InferenceServerException, match="unknown version '7' of model 'fraud'; live versions: '1'"
    ) as unknown:
        await client.infer(MODEL, [tensor(x)], model_version="7")
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as missing:
        await client.get_model_metadata("nope")
    assert missing.value.status() == "StatusCode.NOT_FOUND"


async def test_calls_are_routed_by_weight_and_by_sticky_metadata(front: Front) -> None:
    assert {await front.version() for _ in range(5)} == {"1"}
    front.gateway.replace_deployments([split(0)])
    assert {await front.version() for _ in range(5)} == {"2"}

    by_header = split(50)
    by_header["spec"]["strategy"]["abTest"] = {"assignment": {"by": "header", "name": "X-Arm"}}
    front.gateway.replace_deployments([by_header])
    assert {await front.version({"x-arm": "candidate"}) for _ in range(8)} == {"2"}
    assert {await front.version({"x-arm": "aaa"}) for _ in range(8)} == {"1"}

    by_key = split(50)
    by_key["spec"]["strategy"]["abTest"] = {"assignment": {"by": "hashKey", "name": "X-User"}}
    front.gateway.replace_deployments([by_key])
    arms = {user: {await front.version({"x-user": user}) for _ in range(4)} for user in ("ana", "bo", "cy", "dee")}
    assert all(len(arm) == 1 for arm in arms.values()), arms  # each user keeps one arm
    assert {arm for user_arms in arms.values() for arm in user_arms} == {"1", "2"}, arms  # both arms are used


async def test_api_keys_come_from_metadata(front: Front) -> None:
    gateway = front.gateway
    gateway.config.auth = True
    gateway.keys.replace([key_secret("pro", "cut_pro", "pro"), key_secret("other", "cut_other", "pro", models="x")])
    for headers, status in (
        (None, "StatusCode.UNAUTHENTICATED"),
        ({"x-api-key": "cut_unknown"}, "StatusCode.UNAUTHENTICATED"),
        ({"authorization": "Bearer cut_other"}, "StatusCode.PERMISSION_DENIED"),
    ):
        with pytest.raises(InferenceServerException) as refused:
            await front.version(headers)
        assert refused.value.status() == status, (headers, refused.value)
    assert await front.version({"authorization": "Bearer cut_pro"}) == "1"
    assert await front.version({"x-api-key": "cut_pro"}) == "1"
    with pytest.raises(InferenceServerException, match="API key is required"):
        await front.client.get_model_metadata(MODEL)
    index = await front.client.get_model_repository_index(headers={"x-api-key": "cut_pro"})
    assert {(model.name, model.version, model.state) for model in index.models} == {(MODEL, "1", "READY")}
    hidden = await front.client.get_model_repository_index(headers={"x-api-key": "cut_other"})
    assert list(hidden.models) == []  # its key may call model x only


async def test_mirrored_calls_are_compared(front: Front) -> None:
    front.gateway.replace_deployments([shadowing({})])
    for _ in range(3):
        assert await front.version() == "1"
    await settled(front.gateway)
    assert comparisons(front.gateway, "bbb") == {"true": 3.0, "false": 0.0}


async def test_bad_input_is_invalid_argument_and_no_revision_failure(
    front: Front, revisions: dict[str, Serving]
) -> None:
    def counted(code: str) -> float:
        registry = front.gateway.metrics.registry
        labels = {"namespace": "ns", "model": MODEL, "revision": "aaa", "role": "stable", "code": code}
        return registry.get_sample_value("cutover_gateway_requests_total", labels) or 0.0

    client = front.client
    short = tensor(np.zeros((1, 3), dtype=np.float32))
    short.set_shape([1, 4])  # 12 bytes for a [1, 4] shape
    with pytest.raises(InferenceServerException, match="needs 16 bytes, got 12") as refused:
        await client.infer(MODEL, [short])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert counted("400") == 0, "refused at the gateway, before any revision"
    before = revisions["aaa"].metric("cutover_serving_requests_total", code="400")
    x = np.full((1, 4), 99, dtype=np.float32)  # beyond the revision's declared range
    with pytest.raises(InferenceServerException, match="maximum") as out_of_range:
        await client.infer(MODEL, [tensor(x)])
    assert out_of_range.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert counted("400") == 1 and not any(counted(str(code)) for code in (500, 502, 503, 504))
    assert revisions["aaa"].metric("cutover_serving_requests_total", code="400") == before + 1


async def test_a_call_the_client_gave_up_on_leaves_no_mirror_waiting(stack: Stack) -> None:
    """A gRPC client's deadline cancels the call in the gateway: the mirrors waiting to compare
    with its answer end too, rather than each holding one of the gateway's mirror slots forever."""
    release = asyncio.Event()

    class Stuck(Revision):
        async def handle(self, request: web.Request) -> web.Response:
            if request.path.endswith("/infer"):
                await release.wait()
            return await super().handle(request)

    _, gateway = await stack([Stuck("aaa", "1"), Revision("bbb", "2")], shadowing({}))
    service = GatewayInferenceService(gateway)
    async with listening(service, "127.0.0.1", 0, max_message_bytes=1 << 20, shutdown_grace=0) as port:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        with pytest.raises(InferenceServerException) as gave_up:
            await client.infer(MODEL, [tensor(sample_models.sample_inputs(1))], client_timeout=0.5)
        assert gave_up.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        await settled(gateway)
        assert comparisons(gateway, "bbb") == {"true": 0.0, "false": 0.0}
        release.set()
        await client.close()


async def test_answers_over_grpc_are_kept_for_feedback(front: Front) -> None:
    """Ground truth for a gRPC answer (tritonclient.grpc, binary tensors underneath) is taken as
    for an HTTP one: the gateway keeps every inference answer it forwards for a model with
    spec.feedback, whatever protocol the client spoke."""
    md = split(100)
    md["spec"]["feedback"] = {}
    front.gateway.replace_deployments([md])
    x = sample_models.sample_inputs(2, seed=5)
    result = await front.client.infer(MODEL, [tensor(x)], request_id="over-grpc")
    top = result.as_numpy("probabilities").argmax(axis=1).tolist()
    route = front.gateway.routes[MODEL]
    status, answer = front.gateway.feedback.take(route, *parse(json.dumps({"id": "over-grpc", "truth": top}).encode()))
    assert (status, answer["revision"], answer["correct"]) == (200, "aaa", 2)
