"""Development only: the whole stack on one machine, for `make demo` and the full-stack tests.

The real control plane (hack/cluster), real Prometheus (Debian's package) scraping the gateway and
every serving process, the real operator reading Prometheus, the real gateway, and the local
runner (hack/runner.py) that starts a real `cutover serve` process per revision. Everything runs on
loopback and is stopped by `close()`, which is also what Ctrl-C reaches.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from cutover.serving import sample_models

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_http(url: str, timeout: float, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s ({url})")


class Stack:
    def __init__(
        self,
        workdir: Path,
        namespace: str = "demo",
        cluster: str = "demo",
        scrape_interval: str = "1s",
        kubeconfig: str | None = None,
    ) -> None:
        """With ``kubeconfig``, use that cluster (the tests' own) instead of starting ``cluster``."""
        self.workdir = workdir
        self.namespace = namespace
        self.cluster = cluster
        self.own_cluster = kubeconfig is None
        self.scrape_interval = scrape_interval
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kubeconfig = kubeconfig or ""
        self.prometheus_port = free_port()
        self.gateway_port = free_port()
        self.prometheus_url = f"http://127.0.0.1:{self.prometheus_port}"
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.runner_dir = workdir / "runner"
        self.api_key = "cut_demo-traffic-key"

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.own_cluster:
            subprocess.run([str(REPO / "hack/cluster"), "down", self.cluster], capture_output=True)  # start fresh
            up = subprocess.run([str(REPO / "hack/cluster"), "up", self.cluster], capture_output=True, text=True)
            if up.returncode != 0:
                raise RuntimeError(f"hack/cluster up failed:\n{up.stderr}")
            self.kubeconfig = up.stdout.strip().splitlines()[-1]
        self.kubectl("create", "namespace", self.namespace, check=False)
        from cutover.serving.gateway.keys import secret_manifest

        self.apply(secret_manifest("demo-traffic", self.namespace, self.api_key, "admin", owner="demo"))
        self.runner_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "runner",
            [PYTHON, str(REPO / "hack/runner.py"), "--kubeconfig", self.kubeconfig, "-n", self.namespace,
             "--state-dir", str(self.runner_dir)],
        )  # fmt: skip
        self.start_prometheus()
        self._spawn(
            "operator",
            [PYTHON, "-m", "cutover.operator.cli", "operator", "-n", self.namespace, "--metrics-port", "0"],
            env={"KUBECONFIG": self.kubeconfig},
        )
        self._spawn(
            "gateway",
            [PYTHON, "-m", "cutover.operator.cli", "gateway", "-n", self.namespace, "--kubeconfig", self.kubeconfig,
             "--host", "127.0.0.1", "--port", str(self.gateway_port),
             "--backends", str(self.runner_dir / "backends.json")],
        )  # fmt: skip
        wait_http(self.gateway_url + "/v2/health/ready", 60, "the gateway", self.processes["gateway"])
        return self

    def start_prometheus(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (hack/system-deps installs it)")
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {"job_name": "cutover-gateway", "static_configs": [{"targets": [f"127.0.0.1:{self.gateway_port}"]}]},
                {
                    "job_name": "cutover-serving",
                    "file_sd_configs": [
                        {"files": [str(self.runner_dir / "serving-targets.json")], "refresh_interval": "1s"}
                    ],
                },
            ],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._spawn(
            "prometheus",
            [binary, f"--config.file={self.workdir / 'prometheus.yml'}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.prometheus_port}"],
        )  # fmt: skip
        wait_http(self.prometheus_url + "/-/ready", 60, "Prometheus", self.processes["prometheus"])

    def stop_prometheus(self) -> None:
        self._stop("prometheus")

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )

    def _stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def close(self) -> None:
        for name in ("gateway", "operator", "runner", "prometheus"):
            self._stop(name)
        for name in list(self.processes):
            self._stop(name)
        if self.own_cluster and self.kubeconfig:
            subprocess.run([str(REPO / "hack/cluster"), "down", self.cluster], capture_output=True)

    # ---- kubectl ---------------------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        kubectl = shutil.which("kubectl", path=str(REPO / ".venv/bin")) or "kubectl"
        done = subprocess.run(
            [kubectl, "--kubeconfig", self.kubeconfig, *args], input=stdin, capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done.stdout

    def apply(self, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "--field-manager=demo", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def wait_served(self, model: str, timeout: float = 60) -> None:
        """Until a request through the gateway is answered: the runner has the process up and the
        gateway has its route."""
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, -2, 0.5]}]})
        request = urllib.request.Request(
            f"{self.gateway_url}/v2/models/{model}/infer",
            data=body.encode(),
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"the gateway never answered a request for {model}")

    def md(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.kubectl("get", "md", name, "-n", self.namespace, "-o", "json"))
        return body

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
            return result


@dataclass
class Traffic:
    """Steady requests through the gateway; every request sent is counted, and so is every answer."""

    url: str
    key: str
    model: str
    rate: float = 40.0
    users: int = 0
    """With users, each request carries X-User-Id of one of them (for sticky A/B assignment)."""
    sent: int = 0
    answered: Counter[int] = field(default_factory=Counter)
    recent: deque[tuple[float, str, int, str | None]] = field(default_factory=lambda: deque(maxlen=100_000))
    """(time, revision that answered, status, user) of each answer."""
    lost: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        inputs = sample_models.sample_inputs(2000, seed=7)
        bodies = [
            json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": row.tolist()}]})
            for row in inputs
        ]
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        pending: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(headers=headers) as session:
            started = time.monotonic()
            while not self._stop.is_set():
                due = started + self.sent / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                user = f"user-{self.sent % self.users}" if self.users else None
                task = asyncio.create_task(self._one(session, bodies[self.sent % len(bodies)], user))
                pending.add(task)
                task.add_done_callback(pending.discard)
                self.sent += 1
            await asyncio.gather(*pending)

    async def _one(self, session: aiohttp.ClientSession, body: str, user: str | None) -> None:
        headers = {"X-User-Id": user} if user else None
        try:
            async with session.post(f"{self.url}/v2/models/{self.model}/infer", data=body, headers=headers) as response:
                await response.read()
                revision = response.headers.get("Cutover-Revision", "?")
                self.answered[response.status] += 1
                self.recent.append((time.monotonic(), revision, response.status, user))

        except aiohttp.ClientError:
            self.lost += 1

    def error_rates(self, window: float = 10.0) -> dict[str, float]:
        now = time.monotonic()
        totals: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for at, revision, status, _ in list(self.recent):
            if now - at <= window:
                totals[revision] += 1
                errors[revision] += status >= 500
        return {revision: errors[revision] / totals[revision] for revision in totals}
