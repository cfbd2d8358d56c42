"""The server's HTTP wiring in process (aiohttp's test server on loopback, no `cutover serve`
process): errors as JSON bodies with their status, Retry-After while loading, the revision on
every answer, readiness, and infer and chat answers counted by status code."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cutover.api.contract import REVISION_HEADER
from cutover.serving.server import ModelServer

from .test_pipeline import Classifier, config

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def server() -> AsyncIterator[tuple[ModelServer, Client]]:
    server = ModelServer(config(), Classifier())
    async with TestClient(TestServer(server.app())) as client:
        yield server, client
    await server.close()


INFER = "/v2/models/classifier/infer"
ROWS = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}


async def test_before_the_model_loads_requests_get_503_with_retry_after_and_the_reason(
    server: tuple[ModelServer, Client],
) -> None:
    _, client = server

    answer = await client.post(INFER, json=ROWS)
    ready = await client.get("/v2/health/ready")

    assert answer.status == 503 and answer.headers["Retry-After"] == "1"
    assert await answer.json() == {"error": "model 'classifier' is not ready: loading"}
    assert answer.headers[REVISION_HEADER] == "rev-1"
    assert ready.status == 503 and await ready.json() == {"ready": False, "error": "loading"}


async def test_once_loaded_answers_and_errors_are_json_named_by_revision_and_counted(
    server: tuple[ModelServer, Client],
) -> None:
    model_server, client = server
    await model_server.load()

    answers = {
        "ok": await client.post(INFER, json=ROWS),
        "bad": await client.post(INFER, data=b"{not json"),
        "model": await client.post("/v2/models/other/infer", json=ROWS),
        "version": await client.get("/v2/models/classifier/versions/7/ready"),
        "route": await client.get("/v2/nothing"),
        "chat": await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}),
    }

    assert {name: answer.status for name, answer in answers.items()} == {
        "ok": 200,
        "bad": 400,
        "model": 404,
        "version": 404,
        "route": 404,
        "chat": 404,
    }
    assert (await answers["ok"].json())["outputs"][0]["name"] == "probabilities"
    assert (await answers["route"].json()) == {"error": "Not Found"}
    assert (await answers["chat"].json())["error"] == {
        "message": "this model takes tensors; chat completions need an llm model",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    assert {answer.headers[REVISION_HEADER] for answer in answers.values()} == {"rev-1"}
    assert (await client.get("/v2/health/ready")).status == 200
    assert "cutover_serving_requests_total" in await (await client.get("/metrics")).text()
    labels = {"namespace": "tests", "model": "classifier", "revision": "rev-1"}
    registry = model_server.metrics.registry
    counted = {
        code: registry.get_sample_value("cutover_serving_requests_total", {**labels, "code": code})
        for code in ("200", "400", "404")
    }
    assert counted == {"200": 1, "400": 1, "404": 2}, "infer and chat answers only, by status"


async def test_draining_turns_readiness_to_503_while_requests_are_still_served(
    server: tuple[ModelServer, Client],
) -> None:
    model_server, client = server
    await model_server.load()
    model_server.draining = True

    ready = await client.get("/v2/health/ready")
    model_ready = await client.get("/v2/models/classifier/ready")
    answer = await client.post(INFER, json=ROWS)

    assert ready.status == 503 and await ready.json() == {"ready": False, "error": "shutting down"}
    assert await model_ready.json() == {"name": "classifier", "ready": False, "error": "shutting down"}
    assert answer.status == 200
