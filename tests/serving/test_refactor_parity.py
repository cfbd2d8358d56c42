"""What the split of the serving runtime and the gateway, and the merge of the two Kubernetes
clients, must not have changed, where the review of that refactor found that it had: a model that
cannot take the tensors it is sent answers 400 (client input, never the revision's failure), and
the gateway's watches reach an API server whose address has a path (a cluster behind a proxy,
such as Rancher's ``/k8s/clusters/<id>``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cutover.serving.adapters.base import Adapter, TensorInfo
from cutover.serving.config import ServeConfig
from cutover.serving.errors import NotSupported
from cutover.serving.gateway.app import Gateway, GatewayConfig
from cutover.serving.gateway.watch import watch
from cutover.serving.kube import Credentials
from cutover.serving.server import ModelServer
from tests.support.waiting import wait_until


class ChatOnly(Adapter):
    """A model that answers chat completions only: tensors are not something it can do."""

    platform: ClassVar[str] = "test_chat_only"
    inputs = (TensorInfo("input", "FP32", (-1, 2)),)
    outputs = (TensorInfo("output", "FP32", (-1, 2)),)

    async def load(self) -> None:
        pass

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotSupported("this model answers chat completions, not tensors")


async def test_tensors_a_model_cannot_take_are_a_400_not_counted_as_the_revisions_failure() -> None:
    config = ServeConfig(name="chat", version="1", format="llm", revision="rev-1", namespace="tests")
    server = ModelServer(config, ChatOnly())
    await server.load()
    rows = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    async with TestClient(TestServer(server.app())) as client:
        answer = await client.post("/v2/models/chat/infer", json=rows)
        assert answer.status == 400
        assert await answer.json() == {"error": "this model answers chat completions, not tensors"}
    await server.close()
    labels = {"namespace": "tests", "model": "chat", "revision": "rev-1"}
    counted = server.metrics.registry.get_sample_value
    assert counted("cutover_serving_requests_total", labels | {"code": "400"}) == 1
    assert counted("cutover_serving_requests_total", labels | {"code": "404"}) is None


async def test_the_gateway_watches_an_api_server_whose_address_has_a_path() -> None:
    prefix = "/k8s/clusters/c-1"
    seen: list[str] = []

    async def api(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if request.query.get("watch") != "1":
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
        stream = web.StreamResponse()
        await stream.prepare(request)
        await asyncio.sleep(60)  # a watch with no events yet: held open until the test ends
        return stream

    app = web.Application()
    app.router.add_get("/{tail:.*}", api)
    async with TestServer(app) as server:
        gateway = Gateway(GatewayConfig())
        credentials = Credentials(str(server.make_url(prefix)), False, {"Authorization": "Bearer t0ken"})
        watching = asyncio.create_task(watch(gateway, credentials, ["payments"]))
        try:
            await asyncio.to_thread(wait_until, lambda: watching.done() or not gateway.unlisted, 10, "the first lists")
            if watching.done():
                watching.result()  # the watch ended: its error is the test's failure
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
    assert not gateway.unlisted
    assert seen and all(path.startswith(prefix + "/") for path in seen)
