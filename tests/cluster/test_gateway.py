"""The gateway on the real control plane, in front of real `cutover serve` processes: the split
and stickiness hold, a traffic-table change applies live, mirroring never touches the client's
answer, keys and tiers are enforced (exactly), and a killed backend opens its circuit without
client-visible errors."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from cutover.api.contract import API_KEY_HEADER, REVISION_HEADER
from cutover.serving import sample_models
from cutover.serving.gateway.keys import secret_manifest
from tests.serving.support import Serving
from tests.support.kubectl import Kube
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.cluster
MODEL = "classifier"
KEYS = {"pro": "k-pro-1", "free": "k-free-1", "admin": "k-admin-1", "other": "k-other-1"}


class GatewayProcess:
    def __init__(self, kube: Kube, namespace: str, workdir: Path, backends: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "gateway.log"
        self.args = [
            sys.executable,
            "-m",
            "cutover.operator.cli",
            "gateway",
            "-n",
            namespace,
            "--kubeconfig",
            kube.kubeconfig,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backends",
            str(backends),
            *args,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self.log_path.open("ab"))
        wait_until(lambda: self._ready(), 30, "the gateway to be ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited:\n{self.log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"GET /v2/health/ready HTTP/1.0\r\n\r\n")
                return b" 200 " in s.recv(100)
        except OSError:
            return False

    def table(self) -> dict[str, Any]:
        """The routing table the gateway uses now, by model (``/gateway/routes``, read with the
        admin key): each with its ``backends`` and ``mirrors`` (revision, url, weight, ...)."""
        request = urllib.request.Request(f"{self.url}/gateway/routes", headers={API_KEY_HEADER: KEYS["admin"]})
        with urllib.request.urlopen(request, timeout=5) as response:
            table: dict[str, Any] = json.loads(response.read())
            return table

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rpartition(" ")[2])
        return total

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    for variant in ("good", "shifted"):
        sample_models.onnx_classifier(folder / f"{variant}.onnx", variant)
    return folder


@pytest.fixture
def stack(kube: Kube, namespace: str, models: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two revisions serving (aaa: good, bbb: shifted), a ModelDeployment whose status the test
    writes as the operator would, key Secrets, and the gateway."""
    a = Serving(tmp_path, "--format", "onnx", "--model-uri", str(models / "good.onnx"), name=MODEL).start()
    b = Serving(
        tmp_path, "--format", "onnx", "--model-uri", str(models / "shifted.onnx"), name=MODEL, version="2"
    ).start()
    backends = tmp_path / "backends.json"
    backends.write_text(json.dumps({f"{namespace}/clf-aaa": a.url, f"{namespace}/clf-bbb": b.url}))
    kube.apply(
        {
            "apiVersion": "cutover.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "clf", "namespace": namespace},
            "spec": {
                "model": {"name": MODEL, "version": "2", "format": "onnx", "storageUri": "file:///models/clf.onnx"},
                "strategy": {"type": "canary", "canary": {"steps": [{"setWeight": 20}]}},
            },
        }
    )
    for name, key in KEYS.items():
        tier = {"other": "pro"}.get(name, name)
        kube.apply(
            secret_manifest(f"key-{name}", namespace, key, tier, models="someone-else" if name == "other" else "")
        )
    tiers = tmp_path / "tiers.yaml"
    tiers.write_text(yaml.safe_dump({"free": {"rate": 0.001, "burst": 10}, "pro": {"rate": 10_000, "burst": 10_000}}))
    set_traffic(kube, namespace, {"aaa": 80, "bbb": 20})
    grpc_port = free_port()
    gateway = GatewayProcess(
        kube,
        namespace,
        tmp_path,
        backends,
        "--tiers",
        str(tiers),
        "--breaker-failures",
        "3",
        "--grpc-port",
        str(grpc_port),
    ).start()
    yield {"gateway": gateway, "a": a, "b": b, "kube": kube, "namespace": namespace, "grpc": f"127.0.0.1:{grpc_port}"}
    gateway.stop()
    a.stop()
    b.stop()


def set_traffic(kube: Kube, namespace: str, weights: dict[str, int], mirror: dict[str, int] | None = None) -> None:
    rows = [
        {
            "revision": revision,
            "role": "stable" if revision == "aaa" else "candidate",
            "weight": weight,
            "mirrorPercent": (mirror or {}).get(revision, 0),
            "service": f"clf-{revision}",
        }
        for revision, weight in weights.items()
    ]
    kube.run(
        "patch", "md", "clf", "-n", namespace, "--subresource=status", "--type=merge", "-p",
        json.dumps({"status": {"traffic": rows}}),
    )  # fmt: skip


def body(x: np.ndarray) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    ).encode()


Result = tuple[int, str, bytes, dict[str, str]]


async def send(
    url: str,
    bodies: list[bytes],
    *,
    key: str = KEYS["pro"],
    concurrency: int = 16,
    headers: list[dict[str, str]] | None = None,
) -> list[Result]:
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(i: int, data: bytes) -> Result:
            extra = headers[i] if headers else {}
            async with (
                semaphore,
                session.post(
                    f"{url}/v2/models/{MODEL}/infer", data=data, headers={"Authorization": f"Bearer {key}", **extra}
                ) as response,
            ):
                return (
                    response.status,
                    response.headers.get(REVISION_HEADER, ""),
                    await response.read(),
                    dict(response.headers),
                )

        return await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def within(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_weighted_split_and_a_live_table_change(stack: dict[str, Any]) -> None:
    gateway = stack["gateway"]
    x = body(sample_models.sample_inputs(1, seed=1))
    results = run(send(gateway.url, [x] * 1500))
    assert {status for status, *_ in results} == {200}
    counts = Counter(revision for _, revision, *_ in results)
    assert within(counts["rev-2"], 1500, 0.2), counts
    unusual = run(send(gateway.url, [x] * 4, headers=[{"X-Request-Id": "r\u00e9q-\u2603"}] * 4))
    assert {status for status, *_ in unusual} == {200}, "a UTF-8 request id is passed on as sent"
    set_traffic(stack["kube"], stack["namespace"], {"aaa": 0, "bbb": 100})
    changed = time.monotonic()
    wait_until(lambda: all(r[1] == "rev-2" for r in run(send(gateway.url, [x] * 20))), 10, "the new weights", 0.05)
    print(f"traffic table change applied in {time.monotonic() - changed:.2f} s")
    assert all(r[1] == "rev-2" for r in run(send(gateway.url, [x] * 200)))


def test_grpc_calls_take_the_same_split_and_keys(stack: dict[str, Any]) -> None:
    """tritonclient.grpc against the gateway's gRPC port: the key from metadata, the 80/20 split."""
    client = grpcclient.InferenceServerClient(stack["grpc"])
    assert client.is_server_live() and client.is_server_ready()
    tensor = grpcclient.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(sample_models.sample_inputs(1, seed=1))
    with pytest.raises(InferenceServerException, match="API key is required") as refused:
        client.infer(MODEL, [tensor])
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    key = {"authorization": f"Bearer {KEYS['pro']}"}
    assert client.is_model_ready(MODEL, headers=key)
    versions = Counter(client.infer(MODEL, [tensor], headers=key).get_response().model_version for _ in range(400))
    assert set(versions) <= {"1", "2"} and within(versions["2"], 400, 0.2), versions
    client.close()


def test_hashed_key_keeps_each_user_on_one_arm(kube: Kube, stack: dict[str, Any]) -> None:
    kube.run(
        "patch", "md", "clf", "-n", stack["namespace"], "--type=merge", "-p",
        json.dumps({"spec": {"strategy": {"type": "abTest", "canary": None, "abTest": {
            "assignment": {"by": "hashKey", "name": "X-User-Id"}, "candidateWeight": 20, "metric": "errors"}},
            "analysis": {"metrics": [{"name": "errors", "builtin": "errorRate"}]}}}),
    )  # fmt: skip
    gateway = stack["gateway"]
    x = body(sample_models.sample_inputs(1, seed=2))
    users = [f"user-{i}" for i in range(600)]
    wait_until(
        lambda: len({r[1] for r in run(send(gateway.url, [x] * 30, headers=[{"X-User-Id": "u0"}] * 30))}) == 1,
        10,
        "stickiness",
    )
    first = run(send(gateway.url, [x] * len(users), headers=[{"X-User-Id": u} for u in users]))
    again = run(send(gateway.url, [x] * len(users), headers=[{"X-User-Id": u} for u in users]))
    assert [r[1] for r in first] == [r[1] for r in again], "a user changed arms"
    assert within(sum(1 for r in first if r[1] == "rev-2"), len(users), 0.2)


def test_mirror_copies_without_touching_the_answer_and_compares(stack: dict[str, Any]) -> None:
    set_traffic(stack["kube"], stack["namespace"], {"aaa": 100, "bbb": 0}, mirror={"bbb": 100})
    gateway, a = stack["gateway"], stack["a"]
    inputs = [sample_models.sample_inputs(1, seed=100 + i) for i in range(200)]
    wait_until(
        lambda: (
            run(send(gateway.url, [body(inputs[0])])) and gateway.metric("cutover_gateway_shadow_comparisons_total")
        ),
        10,
        "mirroring to start",
        0.1,
    )
    before = gateway.metric("cutover_gateway_shadow_comparisons_total")
    results = run(send(gateway.url, [body(x) for x in inputs]))
    direct = run(send(a.url, [body(x) for x in inputs]))
    assert all(r[0] == 200 and r[1] == "rev-1" for r in results)
    assert [json.loads(r[2])["outputs"] for r in results] == [json.loads(d[2])["outputs"] for d in direct]
    wait_until(
        lambda: gateway.metric("cutover_gateway_shadow_comparisons_total") >= before + 200, 10, "the comparisons"
    )
    agree = gateway.metric("cutover_gateway_shadow_comparisons_total", agree="true", revision="bbb")
    disagree = gateway.metric("cutover_gateway_shadow_comparisons_total", agree="false", revision="bbb")
    assert agree > 0 and disagree > 0, (agree, disagree)  # the shifted model disagrees on about a third


def test_mirror_to_a_hung_backend_does_not_delay_the_client(kube: Kube, stack: dict[str, Any], tmp_path: Path) -> None:
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)  # accepts connections, never answers
    backends = json.loads(Path(stack["gateway"].args[stack["gateway"].args.index("--backends") + 1]).read_text())
    hung_url = backends[f"{stack['namespace']}/clf-bbb"] = f"http://127.0.0.1:{hung.getsockname()[1]}"
    Path(stack["gateway"].args[stack["gateway"].args.index("--backends") + 1]).write_text(json.dumps(backends))
    set_traffic(kube, stack["namespace"], {"aaa": 100, "bbb": 0}, mirror={"bbb": 100})
    try:
        x = body(sample_models.sample_inputs(1, seed=3))
        wait_until(
            lambda: any(m["url"] == hung_url for r in stack["gateway"].table().values() for m in r["mirrors"]),
            10,
            "the gateway to mirror to the hung backend",
            0.05,
        )
        results = run(asyncio.wait_for(send(stack["gateway"].url, [x] * 50), timeout=10))
        assert all(r[0] == 200 and r[1] == "rev-1" for r in results)
    finally:
        hung.close()


def test_keys_tiers_and_exact_rate_limits(kube: Kube, stack: dict[str, Any]) -> None:
    gateway, namespace = stack["gateway"], stack["namespace"]
    x = body(sample_models.sample_inputs(1, seed=4))
    assert run(send(gateway.url, [x], key=""))[0][0] == 401
    assert run(send(gateway.url, [x], key="not-a-key"))[0][0] == 401
    assert run(send(gateway.url, [x], key=KEYS["other"]))[0][0] == 403
    free = run(send(gateway.url, [x] * 60, key=KEYS["free"], concurrency=30))
    codes = Counter(r[0] for r in free)
    assert codes == {200: 10, 429: 50}, codes  # burst 10, refill negligible: exactly 10 admitted
    assert all(int(r[3]["Retry-After"]) >= 1 for r in free if r[0] == 429)
    assert gateway.metric("cutover_gateway_rate_limited_total", tier="free") == 50
    # revocation and rotation take effect live
    revoked = secret_manifest("key-pro", namespace, KEYS["pro"], "pro")
    revoked["stringData"]["revoked"] = "true"
    kube.apply(revoked)
    wait_until(lambda: run(send(gateway.url, [x]))[0][0] == 403, 10, "the revocation")
    kube.apply(secret_manifest("key-pro-2", namespace, "k-pro-2", "pro"))
    wait_until(lambda: run(send(gateway.url, [x], key="k-pro-2"))[0][0] == 200, 10, "the rotated key")
    import urllib.request

    request = urllib.request.Request(f"{gateway.url}/gateway/routes", headers={"X-API-Key": KEYS["admin"]})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert MODEL in json.loads(response.read())


def test_killed_backend_opens_its_circuit_without_client_errors(stack: dict[str, Any]) -> None:
    gateway, b = stack["gateway"], stack["b"]
    set_traffic(stack["kube"], stack["namespace"], {"aaa": 50, "bbb": 50})
    x = body(sample_models.sample_inputs(1, seed=5))
    wait_until(lambda: "rev-2" in {r[1] for r in run(send(gateway.url, [x] * 20))}, 10, "both revisions in use")
    results: list[Result] = []

    def load() -> None:
        for _ in range(15):
            results.extend(run(send(gateway.url, [x] * 40, concurrency=8)))

    thread = threading.Thread(target=load)
    thread.start()
    wait_until(lambda: len(results) >= 80, 30, "load to start", 0.01)
    assert b.process is not None
    b.process.kill()
    thread.join(60)
    codes = Counter(r[0] for r in results)
    assert codes == {200: len(results)}, codes  # connection refused is retried on the healthy revision
    assert gateway.metric("cutover_gateway_circuit_breaker_state", revision="bbb") == 2
    assert gateway.metric("cutover_gateway_retries_total") >= 1
    assert gateway.metric("cutover_gateway_requests_total", revision="bbb", code="502") >= 3


def set_versions(kube: Kube, namespace: str) -> None:
    """Status as the operator writes it mid-rollout: aaa (version 1) stable, bbb (spec.model.version 2) candidate."""
    status = {
        "stableRevision": "aaa",
        "candidateRevision": "bbb",
        "history": [{"revision": "aaa", "modelVersion": "1"}],
    }
    kube.run(
        "patch", "md", "clf", "-n", namespace, "--subresource=status", "--type=merge", "-p",
        json.dumps({"status": status}),
    )  # fmt: skip


async def fetch(url: str, requests: list[tuple[str, str]], key: str = KEYS["pro"]) -> list[Result]:
    """(method, path) requests in order, with a JSON inference body for POST."""
    x = body(sample_models.sample_inputs(1, seed=6))
    out: list[Result] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        for method, path in requests:
            async with session.request(method, url + path, data=x if method == "POST" else None) as response:
                out.append((response.status, response.headers.get(REVISION_HEADER, ""), await response.read(), {}))
    return out


def test_a_versioned_request_reaches_the_revision_serving_that_version(stack: dict[str, Any]) -> None:
    gateway, kube, namespace = stack["gateway"], stack["kube"], stack["namespace"]
    set_versions(kube, namespace)
    set_traffic(kube, namespace, {"aaa": 50, "bbb": 50})
    base = f"/v2/models/{MODEL}/versions"
    wait_until(
        lambda: {r[1] for r in run(fetch(gateway.url, [("POST", f"{base}/2/infer")] * 20))} == {"rev-2"},
        10,
        "the versions to reach the gateway",
        0.1,
    )
    for version, revision in (("1", "rev-1"), ("2", "rev-2")):
        paths = [("POST", f"{base}/{version}/infer")] * 60
        paths += [("GET", f"{base}/{version}{suffix}") for suffix in ("", "/ready", "/config") for _ in range(5)]
        results = run(fetch(gateway.url, paths))
        assert Counter((r[0], r[1]) for r in results) == {(200, revision): 75}, version
    for method, path in (("POST", f"{base}/3/infer"), ("GET", f"{base}/3"), ("GET", f"{base}/3/ready")):
        status, revision, payload, _ = run(fetch(gateway.url, [(method, path)]))[0]
        assert status == 404 and revision == "", "the gateway answers, not a revision"
        assert "unknown version '3'" in json.loads(payload)["error"]


def test_mirrored_answers_are_compared_per_the_shadow_spec(kube: Kube, stack: dict[str, Any]) -> None:
    """The shifted model's classes differ from the good one's on about a third of inputs (see the
    mirror test above); numeric with a tolerance wider than any score difference agrees on all."""
    gateway, namespace = stack["gateway"], stack["namespace"]
    kube.run(
        "patch", "md", "clf", "-n", namespace, "--type=merge", "-p",
        json.dumps({"spec": {"strategy": {"type": "shadow", "canary": None,
                                          "shadow": {"agreement": "numeric", "tolerance": 10}}}}),
    )  # fmt: skip
    set_traffic(kube, namespace, {"aaa": 100, "bbb": 0}, mirror={"bbb": 100})
    inputs = [body(sample_models.sample_inputs(1, seed=300 + i)) for i in range(100)]
    wait_until(
        lambda: run(send(gateway.url, inputs[:1])) and gateway.metric("cutover_gateway_shadow_comparisons_total"),
        10,
        "mirroring to start",
        0.1,
    )
    before = gateway.metric("cutover_gateway_shadow_comparisons_total", agree="true", revision="bbb")
    assert all(r[0] == 200 for r in run(send(gateway.url, inputs)))
    wait_until(
        lambda: (
            gateway.metric("cutover_gateway_shadow_comparisons_total", agree="true", revision="bbb") >= before + 100
        ),
        10,
        "the comparisons",
    )
    assert gateway.metric("cutover_gateway_shadow_comparisons_total", agree="false", revision="bbb") == 0
