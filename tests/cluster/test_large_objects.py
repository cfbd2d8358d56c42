"""Objects as large as the API server stores flow through every watch: the gateway's own
(cutover.serving.kube, which the local runner shares) and kopf's in the operator. A watch event
is one line holding the whole object; a line over aiohttp's buffer limit once ended the
gateway's watch on every change of such an object."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cutover.serving import sample_models
from cutover.serving.gateway.keys import KEY_LABEL, secret_manifest
from cutover.serving.kube import Credentials, Watcher
from tests.serving.support import Serving
from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from .operator_support import Operator
from .test_gateway import KEYS, MODEL, GatewayProcess, body, run, send, set_traffic
from .test_operator import deploy_v1, fast_canary, md, new_version

pytestmark = pytest.mark.cluster

SAFE_DEFAULT_BYTES = 1_100_000
ANNOTATION_BYTES = 200_000
"""Together about 1.3 MB: near etcd's 1.5 MiB request limit, with room for the rest of the object
and its status; an annotation alone may hold at most 256 KiB (all annotations together)."""


def large_fields() -> tuple[dict[str, str], dict[str, Any]]:
    """A large annotation, and a large ``spec.fallback`` (its free-form safeDefault)."""
    annotations = {"example.com/notes": "n" * ANNOTATION_BYTES}
    fallback = {
        "safeDefault": {
            "outputs": [{"name": "label", "datatype": "BYTES", "shape": [1], "data": ["d" * SAFE_DEFAULT_BYTES]}]
        }
    }
    return annotations, fallback


def large_md(namespace: str, name: str, version: str = "1") -> dict[str, Any]:
    annotations, fallback = large_fields()
    return {
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "model": {"name": name, "version": version, "format": "onnx", "storageUri": "file:///models/m.onnx"},
            "strategy": {"type": "canary", "canary": {"steps": [{"setWeight": 20}]}},
            "fallback": fallback,
        },
    }


async def _next(events: AsyncIterator[tuple[str, Any]], wanted: Any, timeout: float = 30) -> tuple[str, Any]:
    """The next event that ``wanted(event, object)`` accepts; a relist (SYNC) fails the test."""

    async def read() -> tuple[str, Any]:
        async for event, obj in events:
            assert event != "SYNC", "the watch ended and the collection was listed again"
            if wanted(event, obj):
                return event, obj
        raise AssertionError("the watch ended")

    return await asyncio.wait_for(read(), timeout)


@pytest.mark.parametrize("kind", ["modeldeployments", "secrets"])
async def test_the_gateway_watch_delivers_objects_at_the_size_limit_and_the_changes_after_them(
    kube: Kube, namespace: str, kind: str
) -> None:
    credentials = Credentials.load(kube.kubeconfig)
    if kind == "modeldeployments":
        path, params = f"/apis/cutover.dev/v1alpha1/namespaces/{namespace}/modeldeployments", {}
        large = large_md(namespace, "large")
    else:
        path, params = f"/api/v1/namespaces/{namespace}/secrets", {"labelSelector": f"{KEY_LABEL}=true"}
        large = secret_manifest("large", namespace, "k-large", "pro")
        large["metadata"]["annotations"] = large_fields()[0]
        large["stringData"]["padding"] = "p" * 700_000  # a Secret's data may hold at most 1 MiB
    async with aiohttp.ClientSession() as session:
        events = Watcher(session, credentials, path, **params).events()
        try:
            assert (await asyncio.wait_for(anext(events), 30))[0] == "SYNC"
            await asyncio.to_thread(kube.apply, large)
            event, obj = await _next(events, lambda e, o: o["metadata"]["name"] == "large")
            assert event == "ADDED"
            assert obj["metadata"]["annotations"]["example.com/notes"] == "n" * ANNOTATION_BYTES
            # Every later change of the large object, and of others, still comes through the same watch.
            for label in ("one", "two"):
                await asyncio.to_thread(
                    kube.run, "label", kind, "large", "-n", namespace, f"example.com/mark={label}", "--overwrite"
                )
                event, obj = await _next(
                    events, lambda e, o, label=label: o["metadata"].get("labels", {}).get("example.com/mark") == label
                )
                assert event == "MODIFIED"
        finally:
            await events.aclose()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    sample_models.onnx_classifier(folder / "good.onnx", "good")
    return folder


def test_the_gateway_routes_a_model_deployment_at_the_size_limit(
    kube: Kube, namespace: str, models: Path, tmp_path: Path
) -> None:
    serving = Serving(tmp_path, "--format", "onnx", "--model-uri", str(models / "good.onnx"), name=MODEL).start()
    backends = tmp_path / "backends.json"
    backends.write_text(json.dumps({f"{namespace}/clf-aaa": serving.url, f"{namespace}/clf-bbb": serving.url}))
    kube.apply(secret_manifest("key-pro", namespace, KEYS["pro"], "pro"))
    kube.apply(secret_manifest("key-admin", namespace, KEYS["admin"], "admin"))
    gateway = GatewayProcess(kube, namespace, tmp_path, backends).start()
    try:
        doc = large_md(namespace, "clf")
        doc["spec"]["model"]["name"] = MODEL
        kube.apply(doc)
        set_traffic(kube, namespace, {"aaa": 100})
        x = body(sample_models.sample_inputs(1, seed=1))
        wait_until(lambda: run(send(gateway.url, [x]))[0][0] == 200, 20, "the large ModelDeployment's route", 0.1)
        # A change after it: the candidate row appears in the table the gateway serves.
        set_traffic(kube, namespace, {"aaa": 50, "bbb": 50})
        wait_until(lambda: "bbb" in routes(gateway), 20, "the traffic change after the large object", 0.1)
        log = gateway.log_path.read_text()
        assert "relisting" not in log, log[-2000:]
    finally:
        gateway.stop()
        serving.stop()


def routes(gateway: GatewayProcess) -> set[str]:
    """The revisions the gateway routes to now, from its table."""
    return {b["revision"] for r in gateway.table().values() for b in r["backends"]}


def test_the_operator_reconciles_a_model_deployment_at_the_size_limit_and_sees_the_change_after_it(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    annotations, fallback = large_fields()
    doc = fast_canary("large", fallback=fallback)
    doc["metadata"]["annotations"] = annotations
    stable = deploy_v1(kube, namespace, doc)
    deployment = kube.json("get", "deployment", f"large-{stable}", "-n", namespace)
    args = json.dumps(deployment["spec"]["template"]["spec"]["containers"][0].get("args", []))
    assert "d" * SAFE_DEFAULT_BYTES in args, "the safeDefault reaches the serving pods"
    later = new_version(kube, namespace, copy.deepcopy(doc), "2")
    body_ = wait_until(
        lambda: (b := md(kube, namespace, "large")).get("status", {}).get("candidateRevision") and b,
        what="the change after the large object to start a rollout",
    )
    assert body_["status"]["candidateRevision"] != stable
    assert later["spec"]["model"]["version"] == "2"
