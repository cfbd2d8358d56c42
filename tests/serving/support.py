"""Real `cutover serve` processes on loopback ports, for the serving tests."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from cutover.serving.gateway.app import Gateway, GatewayConfig
from cutover.serving.gateway.keys import secret_manifest
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def openai_error(body: Any) -> str:
    """The message of an OpenAI error object (``{"error": {"message", "type", "param", "code"}}``,
    what ``/v1`` routes answer), after checking its shape."""
    assert isinstance(body, dict) and set(body["error"]) == {"message", "type", "param", "code"}, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


CLASSIFIER_INPUTS = json.dumps(
    [{"name": "input", "datatype": "FP32", "shape": [-1, 4], "range": {"min": -50, "max": 50}}]
)
"""``--inputs`` for the sample classifier (``cutover.serving.sample_models``): its FP32 input of
four features a row, any number of rows, with the declared value range [-50, 50]."""


@contextmanager
def threaded_http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A standard-library ``ThreadingHTTPServer`` answering with ``handler`` on a free loopback
    port, on its own thread (an upstream, a file server, an OTLP receiver); yields its base URL
    (``http://127.0.0.1:PORT``), then stops it and closes its socket."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def samples_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of series ``name`` in Prometheus text ``text`` whose labels include
    ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


class Serving:
    """One `cutover serve` process; ``url`` is its base address once started."""

    def __init__(self, workdir: Path, *args: str, name: str = "classifier", version: str = "1") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name, self.version = name, version
        self.log_path = workdir / f"serve-{self.port}.log"
        self.args = [
            sys.executable,
            "-m",
            "cutover.operator.cli",
            "serve",
            "--name",
            name,
            "--version",
            version,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--revision",
            f"rev-{version}",
            "--namespace",
            "tests",
            "--threads",
            "1",
            *args,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = True, timeout: float = 60) -> Serving:
        process = self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self.log_path.open("ab"))
        path = "/v2/health/ready" if ready else "/v2/health/live"

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"cutover serve exited with {process.returncode}:\n{self.log()}")
            return self.get(path)[0] == 200

        wait_until(
            answers,
            timeout,
            f"cutover serve to be {'ready' if ready else 'live'}",
            0.05,
            detail=lambda: "\n" + self.log(),
        )
        return self

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                body = response.read()
                return response.status, json.loads(body) if body.startswith(b"{") else body.decode()
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")
        except (urllib.error.URLError, OSError):
            return 0, None

    def load_error(self, timeout: float = 30) -> tuple[int, Any]:
        """The ready endpoint once it reports why the model failed to load (not just "loading")."""

        def reported() -> tuple[int, Any] | None:
            status, body = self.get("/v2/health/ready")
            return (status, body) if "failed" in str(body) else None

        found: tuple[int, Any] = wait_until(
            reported, timeout, "a load error reported", 0.05, detail=lambda: "\n" + self.log()
        )
        return found

    def post(self, path: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            payload = error.read()
            try:
                return error.code, json.loads(payload)
            except ValueError:
                raise AssertionError(f"{error.code} with a body that is not JSON: {payload[:200]!r}") from None

    def metrics(self) -> str:
        status, text = self.get("/metrics")
        assert status == 200
        return str(text)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a series' samples whose labels include ``labels``."""
        return samples_sum(self.metrics(), name, **labels)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"cutover serve did not stop within {timeout}s:\n{self.log()}") from None


def probe_while(url: str, senders: list[threading.Thread]) -> list[float]:
    """Start ``senders``, then probe ``url`` (``/v2/health/live`` of a server) every 0.1 s, as
    the kubelet's period sends its probes, until they are all done; each probe's seconds. A
    probe that takes longer than the operator's probe timeout raises, as the kubelet would
    count a failure."""
    from cutover.api.contract import PROBE_TIMEOUT_SECONDS

    for sender in senders:
        sender.start()
    answered: list[float] = []
    while any(sender.is_alive() for sender in senders):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_SECONDS) as response:
            assert response.status == 200
        answered.append(time.perf_counter() - started)
        next((s for s in senders if s.is_alive()), senders[0]).join(0.1)
    return answered


def key_secret(name: str, key: str, tier: str, **extra: str) -> dict[str, Any]:
    """A key Secret as the API server returns it (base64 ``data``), as the gateway's watch sees it."""
    manifest = secret_manifest(name, "ns", key, tier)
    data = {**manifest["stringData"], **extra}
    return {
        "metadata": manifest["metadata"],
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


@contextmanager
def threaded_gateway(
    model: str, url: str | Mapping[str, str], spec: dict[str, Any] | None = None, **config: Any
) -> Iterator[tuple[str, Gateway]]:
    """`cutover gateway`'s app on its own event loop and thread, routing all of ``model``'s
    traffic to the serving process at ``url`` (one stable revision, "a"), or split evenly between
    the revisions of a mapping revision -> URL (the first stable, the others canary); no keys
    needed unless ``config`` says ``auth=True``; ``spec`` adds to the ModelDeployment's spec.
    Yields its base URL and the gateway."""
    loop = asyncio.new_event_loop()
    gateway = Gateway(GatewayConfig(**{"auth": False, **config}))
    gateway.unlisted = set()
    urls = {"a": url} if isinstance(url, str) else dict(url)
    gateway.set_resolver(lambda namespace, service: urls[service.removeprefix(f"{model}-")])
    traffic = [
        {
            "revision": revision,
            "role": "canary" if i else "stable",
            "weight": 100 // len(urls),
            "service": f"{model}-{revision}",
        }
        for i, revision in enumerate(urls)
    ]
    deployment = {"metadata": {"namespace": "tests", "name": model}, "spec": {"model": {"name": model}, **(spec or {})}}
    gateway.replace_deployments([{**deployment, "status": {"traffic": traffic}}])
    runner = web.AppRunner(gateway.app(), access_log=None, handler_cancellation=True)  # as http.listening runs it
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", gateway
    finally:

        async def stop() -> None:
            await runner.cleanup()
            await gateway.close()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def linear_onnx(path: Path, weight: np.ndarray, features: int | str | None = None) -> Path:
    """An ONNX model ``output = input @ weight``: FP32 [batch, F] -> [batch, K]; ``features``
    overrides the input's declared width (a name makes it free)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width = weight.shape[0] if features is None else features
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "weight"], ["output"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", weight.shape[1]])],
        [numpy_helper.from_array(weight.astype(np.float32), "weight")],
    )
    # IR version 8, as sample_models writes: onnx's newer default is refused by onnxruntime
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path))
    return path


def relying_on(path: Path, feature: int) -> Path:
    """A four-feature model whose one output is feature ``feature`` alone."""
    weight = np.zeros((4, 1))
    weight[feature, 0] = 1.0
    return linear_onnx(path, weight)
