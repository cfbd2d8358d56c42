"""analysis.prometheus.bearerTokenSecretRef: the token is read from the Secret on the real control
plane and sent to Prometheus; a missing Secret or key is a clear `unavailable`, never a crash.

Prometheus itself serves no bearer authentication; deployments that need it put an
authenticating proxy in front (kube-rbac-proxy, an OAuth proxy). The server here plays that
proxy: it answers 401 unless the right token comes, and an empty result otherwise."""

from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import kopf
import pytest
from aiohttp import web

from cutover.api.v1alpha1 import ModelDeployment
from cutover.operator.kube import Kube as ApiClient
from cutover.operator.verdicts import PrometheusVerdicts
from tests.support.kubectl import Kube
from tests.support.ports import free_port

from ..cases import load

pytestmark = pytest.mark.cluster
TOKEN = "s3cret-token"


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[str, list[str | None]]]:
    seen: list[str | None] = []

    async def query(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="Unauthorized")
        return web.json_response({"status": "success", "data": {"resultType": "matrix", "result": []}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def _rolling(namespace: str, address: str, secret: str, key: str = "token") -> ModelDeployment:
    """A ModelDeployment in the middle of a rollout (a fresh uid: a fresh analysis run)."""
    doc = copy.deepcopy(load("modeldeployment-canary.yaml"))
    doc["metadata"].update({"namespace": namespace, "uid": str(uuid.uuid4())})
    doc["spec"]["analysis"]["prometheus"] = {
        "address": address,
        "bearerTokenSecretRef": {"name": secret, "key": key},
    }
    now = datetime.now(UTC).isoformat()
    doc["status"] = {"stableRevision": "aaaaaaaaaa", "candidateRevision": "bbbbbbbbbb", "rolloutStartedAt": now}
    return ModelDeployment.model_validate(doc)


async def test_the_token_from_the_secret_reaches_prometheus(
    kube: Kube, namespace: str, proxy: tuple[str, list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, seen = proxy
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    api = ApiClient.from_connection(kopf.login_with_kubeconfig(settings=kopf.OperatorSettings()))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "prom-token", "namespace": namespace},
        "data": {"token": base64.b64encode(f"{TOKEN}\n".encode()).decode(), "wrong": base64.b64encode(b"x").decode()},
    }
    kube.apply(secret)
    try:
        async with httpx.AsyncClient() as http:
            verdicts = PrometheusVerdicts(http, api)
            now = datetime.now(UTC).timestamp() + 60

            result = await verdicts.current(_rolling(namespace, address, "prom-token"), now)
            assert result is not None and seen and set(seen) == {f"Bearer {TOKEN}"}
            assert "401" not in result.reason  # authorised: what is missing now is data, not access

            result = await verdicts.current(_rolling(namespace, address, "no-such-secret"), now)
            assert result is not None and result.verdict == "unavailable"
            assert f"Secret {namespace}/no-such-secret: not found" in result.reason

            result = await verdicts.current(_rolling(namespace, address, "prom-token", key="missing"), now)
            assert result is not None and result.verdict == "unavailable" and "has no key 'missing'" in result.reason

            seen.clear()
            result = await verdicts.current(_rolling(namespace, address, "prom-token", key="wrong"), now)
            assert result is not None and result.verdict == "unavailable" and "401" in result.reason
            assert seen and set(seen) == {"Bearer x"}
    finally:
        await api.close()
