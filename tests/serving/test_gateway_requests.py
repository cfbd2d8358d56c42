"""The gateway app in front of small fake revisions: a request that names a model version
reaches a revision serving it (or gets the gateway's 404), and mirrored answers are compared
per the ModelDeployment's spec.strategy.shadow (agreement, tolerance)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cutover.serving.breaker import CircuitBreaker
from cutover.serving.compression import compressed
from cutover.serving.gateway.app import Gateway, GatewayConfig

from .support import key_secret

MODEL = "fraud"


@dataclass
class Revision:
    """A fake serving process: one model version, a fixed inference output and chat answer,
    and the paths it was asked for. Like the real one, it refuses a version it does not serve
    and compresses its answers when the client accepts it (whatever their size)."""

    revision: str
    version: str
    output: list[list[float]] = field(default_factory=lambda: [[0.9, 0.1]])
    chat: str = "Yes."
    paths: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        for prefix in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/{{version}}"):
            app.router.add_get(prefix, self.handle)
            app.router.add_get(prefix + "/ready", self.handle)
            app.router.add_get(prefix + "/config", self.handle)
            app.router.add_post(prefix + "/infer", self.handle)
        app.router.add_post("/v1/chat/completions", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path_qs)
        headers = {"Cutover-Revision": self.revision}
        version = request.match_info.get("version")
        if version is not None and version != self.version:
            return web.json_response({"error": f"unknown version {version!r}"}, status=404, headers=headers)
        if request.path.endswith("/chat/completions"):
            answer = {"choices": [{"message": {"role": "assistant", "content": self.chat}}]}
            return compressed(request, web.json_response(answer, headers=headers), min_bytes=0)
        rows = len(self.output)
        output = {"name": "probabilities", "datatype": "FP32", "shape": [rows, len(self.output[0])]}
        data = [v for row in self.output for v in row]
        body = {"model_name": MODEL, "model_version": self.version, "outputs": [{**output, "data": data}]}
        return compressed(request, web.json_response(body, headers=headers), min_bytes=0)


def deployment(
    traffic: list[dict[str, Any]],
    *,
    history: dict[str, str] | None = None,
    candidate: str | None = None,
    version: str = "3",
    shadow: dict[str, Any] | None = None,
    generation: int = 1,
    observed: int = 1,
) -> dict[str, Any]:
    strategy: dict[str, Any] = {"type": "shadow" if shadow is not None else "canary"}
    if shadow is not None:
        strategy["shadow"] = shadow
    return {
        "metadata": {"namespace": "ns", "name": "fraud-md", "generation": generation},
        "spec": {"model": {"name": MODEL, "version": version}, "strategy": strategy},
        "status": {
            "observedGeneration": observed,
            "stableRevision": next((r["revision"] for r in traffic if r["role"] == "stable"), None),
            "candidateRevision": candidate,
            "history": [{"revision": r, "modelVersion": v} for r, v in (history or {}).items()],
            "traffic": [{"service": f"svc-{r['revision']}", "mirrorPercent": 0, **r} for r in traffic],
        },
    }


Stack = Callable[[list[Revision], dict[str, Any]], Awaitable[tuple[TestClient[Any, Any], Gateway]]]


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """Start the fake revisions and the gateway app routing to them by the given ModelDeployment."""
    servers: list[TestServer] = []
    clients: list[TestClient[Any, Any]] = []
    gateways: list[Gateway] = []

    async def start(revisions: list[Revision], md: dict[str, Any]) -> tuple[TestClient[Any, Any], Gateway]:
        urls = {}
        for revision in revisions:
            server = TestServer(revision.app())
            await server.start_server()
            servers.append(server)
            urls[f"svc-{revision.revision}"] = str(server.make_url("")).rstrip("/")
        gateway = Gateway(GatewayConfig(auth=False))
        gateway.unlisted = set()
        gateway.set_resolver(lambda namespace, service: urls.get(service))
        gateway.replace_deployments([md])
        client = TestClient(TestServer(gateway.app()))
        await client.start_server()
        clients.append(client)
        gateways.append(gateway)
        return client, gateway

    yield start
    for client in clients:
        await client.close()
    for gateway in gateways:
        await gateway.close()
    for server in servers:
        await server.close()


async def test_a_versioned_request_reaches_a_revision_serving_that_version(stack: Stack) -> None:
    old, new = Revision("aaa", "1"), Revision("bbb", "2")
    md = deployment(
        [{"revision": "aaa", "role": "stable", "weight": 50}, {"revision": "bbb", "role": "candidate", "weight": 50}],
        history={"aaa": "1"},
        candidate="bbb",
        version="2",
    )
    client, _ = await stack([old, new], md)
    for version, revision in (("1", "aaa"), ("2", "bbb")):
        base = f"/v2/models/{MODEL}/versions/{version}"
        answers = [await client.post(f"{base}/infer", json={"inputs": []}) for _ in range(40)]
        answers += [await client.get(base + suffix) for suffix in ("", "/ready", "/config") for _ in range(10)]
        assert Counter((a.status, a.headers["Cutover-Revision"]) for a in answers) == {(200, revision): 70}
    # Without a version the weighted split still holds: both revisions answer.
    unversioned = [await client.post(f"/v2/models/{MODEL}/infer", json={"inputs": []}) for _ in range(60)]
    assert {a.headers["Cutover-Revision"] for a in unversioned} == {"aaa", "bbb"}


async def test_a_version_no_live_revision_serves_is_a_404_from_the_gateway(stack: Stack) -> None:
    stable, shadowed = Revision("aaa", "1"), Revision("bbb", "2")
    md = shadowing({})
    client, _ = await stack([stable, shadowed], md)
    for path in ("/infer", "", "/ready", "/config"):
        for version in ("2", "9"):  # a shadowed candidate's version takes no live traffic either
            url = f"/v2/models/{MODEL}/versions/{version}{path}"
            answer = await (client.post(url, json={}) if path == "/infer" else client.get(url))
            assert answer.status == 404 and answer.content_type == "application/json"
            error = (await answer.json())["error"]
            assert f"unknown version {version!r}" in error and "'1'" in error, error
            assert "Cutover-Revision" not in answer.headers, "answered by the gateway, not a revision"
    assert stable.paths == [] and shadowed.paths == []


async def test_a_versioned_request_is_mirrored_without_its_version(stack: Stack) -> None:
    stable, shadowed = Revision("aaa", "1"), Revision("bbb", "2")
    md = shadowing({})
    client, gateway = await stack([stable, shadowed], md)
    answer = await client.post(f"/v2/models/{MODEL}/versions/1/infer?x=1", json={"inputs": []})
    assert answer.status == 200 and answer.headers["Cutover-Revision"] == "aaa"
    await settled(gateway)
    assert stable.paths == [f"/v2/models/{MODEL}/versions/1/infer?x=1"]
    assert shadowed.paths == [f"/v2/models/{MODEL}/infer?x=1"]
    assert comparisons(gateway, "bbb") == {"true": 1.0, "false": 0.0}


async def settled(gateway: Gateway) -> None:
    """Every mirrored request has been answered and compared."""
    await asyncio.wait_for(asyncio.gather(*gateway._mirrors), 10)


def comparisons(gateway: Gateway, revision: str) -> dict[str, float]:
    registry = gateway.metrics.registry
    labels = {"namespace": "ns", "model": MODEL, "revision": revision}
    return {
        agree: registry.get_sample_value("cutover_gateway_shadow_comparisons_total", {**labels, "agree": agree}) or 0.0
        for agree in ("true", "false")
    }


def shadowing(shadow: dict[str, Any]) -> dict[str, Any]:
    return deployment(
        [
            {"revision": "aaa", "role": "stable", "weight": 100},
            {"revision": "bbb", "role": "candidate", "weight": 0, "mirrorPercent": 100},
        ],
        history={"aaa": "1"},
        candidate="bbb",
        version="2",
        shadow=shadow,
    )


@pytest.mark.parametrize(
    ("shadow", "agrees"),
    [
        ({}, True),  # top1 (default): the same class on every row, however far the scores
        ({"agreement": "top1"}, True),
        ({"agreement": "numeric", "tolerance": 0.25}, True),
        ({"agreement": "numeric", "tolerance": 0.1}, False),
        ({"agreement": "numeric"}, False),  # default tolerance 1e-3
    ],
)
async def test_mirrored_inference_is_compared_per_the_shadow_spec(
    stack: Stack, shadow: dict[str, Any], agrees: bool
) -> None:
    stable = Revision("aaa", "1", output=[[0.9, 0.1], [0.2, 0.8]])
    shadowed = Revision("bbb", "2", output=[[0.7, 0.3], [0.4, 0.6]])  # same classes, scores 0.2 apart
    client, gateway = await stack([stable, shadowed], shadowing(shadow))
    for _ in range(5):
        assert (await client.post(f"/v2/models/{MODEL}/infer", json={"inputs": []})).status == 200
    await settled(gateway)
    assert comparisons(gateway, "bbb") == ({"true": 5.0, "false": 0.0} if agrees else {"true": 0.0, "false": 5.0})


@pytest.mark.parametrize(
    ("shadow", "agrees"),
    [
        ({}, True),  # top1: the same first word, the answer's label
        ({"agreement": "numeric", "tolerance": 0.5}, True),  # most words shared
        ({"agreement": "numeric", "tolerance": 0.1}, False),
    ],
)
async def test_mirrored_chat_is_compared_per_the_shadow_spec_not_by_identical_text(
    stack: Stack, shadow: dict[str, Any], agrees: bool
) -> None:
    stable = Revision("aaa", "1", chat="Yes, the transaction looks fraudulent.")
    shadowed = Revision("bbb", "2", chat="yes - this transaction looks fraudulent to me")
    client, gateway = await stack([stable, shadowed], shadowing(shadow))
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Fraud?"}]}
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", data=json.dumps(request))).status == 200
    await settled(gateway)
    assert comparisons(gateway, "bbb") == ({"true": 3.0, "false": 0.0} if agrees else {"true": 0.0, "false": 3.0})


async def test_protocol_paths_the_revisions_do_not_serve_get_a_json_404_at_the_gateway(stack: Stack) -> None:
    """The trace and generate extensions of the Open Inference Protocol (with or without a
    version) are not served: a consistent 4xx JSON error, never a revision's answer or a 5xx.
    (Statistics and model loading go to the revision: tests/serving/test_triton_extensions.py.)"""
    stable = Revision("aaa", "1")
    client, _ = await stack([stable], deployment([{"revision": "aaa", "role": "stable", "weight": 100}]))
    for method, path in (
        ("GET", f"/v2/models/{MODEL}/trace/setting"),
        ("POST", f"/v2/models/{MODEL}/versions/1/generate"),
    ):
        answer = await client.request(method, path)
        assert answer.status in (404, 405) and answer.content_type == "application/json", (path, answer.status)
        assert "error" in await answer.json()
    assert stable.paths == []


async def test_the_repository_index_lists_the_versions_a_key_may_call_and_their_state(stack: Stack) -> None:
    traffic = [
        {"revision": "aaa", "role": "stable", "weight": 90},
        {"revision": "bbb", "role": "candidate", "weight": 10},
    ]
    md = deployment(traffic, history={"aaa": "1"}, candidate="bbb", version="2")
    client, gateway = await stack([Revision("aaa", "1"), Revision("bbb", "2")], md)
    failing = CircuitBreaker(1, 60)
    failing.record_failure()
    gateway.proxy.breakers[gateway.routes[MODEL].backends[1].url] = failing
    answer = await client.post("/v2/repository/index")
    assert await answer.json() == [
        {"name": MODEL, "version": "1", "state": "READY", "reason": ""},
        {
            "name": MODEL,
            "version": "2",
            "state": "UNAVAILABLE",
            "reason": "every revision serving it is failing (circuit open)",
        },
    ]
    gateway.config.auth = True
    gateway.keys.replace(
        [key_secret("other", "cut_other", "pro", models="other"), key_secret("mine", "cut_mine", "pro")]
    )
    assert (await client.post("/v2/repository/index")).status == 401
    other = await client.post("/v2/repository/index", headers={"Authorization": "Bearer cut_other"})
    assert await other.json() == []
    ready = await client.post(
        "/v2/repository/index", data=b'{"ready": true}', headers={"Authorization": "Bearer cut_mine"}
    )
    assert [entry["version"] for entry in await ready.json()] == ["1"]
    malformed = await client.post("/v2/repository/index", data=b"[]", headers={"Authorization": "Bearer cut_mine"})
    assert malformed.status == 400
