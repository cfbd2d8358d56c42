"""Development only: the whole stack on one machine, for `make demo` and the full-stack tests.

The real control plane (hack/cluster), real Prometheus (Debian's package) scraping the gateway,
the operator and every serving process (what the chart's dashboards read), the real operator
reading Prometheus, the real gateway, and the local runner (hack/runner.py) that starts a real
`cutover serve` process per revision. Everything runs on loopback and is stopped by `close()`,
which is also what Ctrl-C reaches.

The parts tests use too come from ``tests.support``: kubectl, Prometheus, free ports and waiting.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from cutover.api.contract import REVISION_HEADER
from cutover.serving import sample_models
from tests.support.kubectl import Kube
from tests.support.ports import free_port
from tests.support.prometheus import Prometheus
from tests.support.waiting import answers, wait_until

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class Stack:
    def __init__(
        self,
        workdir: Path,
        namespace: str = "demo",
        cluster: str = "demo",
        scrape_interval: str = "1s",
        kubeconfig: str | None = None,
        real_node: bool = False,
    ) -> None:
        """With ``kubeconfig``, use that cluster (the tests' own) instead of starting ``cluster``.

        ``real_node``: the serving pods run on that cluster's real node (hack/node) rather than
        under the local runner; Prometheus scrapes their pod IPs and the gateway calls those of
        ready endpoints, both as the EndpointSlices list them (hack/endpoints.py). Needs
        ``kubeconfig``."""
        if real_node and kubeconfig is None:
            raise ValueError("a real node joins an existing cluster: pass its kubeconfig")
        self.real_node = real_node
        self.workdir = workdir
        self.namespace = namespace
        self.cluster = cluster
        self.own_cluster = kubeconfig is None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kubeconfig = kubeconfig or ""
        self.gateway_port = free_port()
        self.operator_metrics_port = free_port()
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.runner_dir = workdir / "runner"
        self.api_key = "cut_demo-traffic-key"
        workdir.mkdir(parents=True, exist_ok=True)
        self.prometheus = Prometheus(
            workdir,
            [
                {"job_name": "cutover-gateway", "static_configs": [{"targets": [f"127.0.0.1:{self.gateway_port}"]}]},
                {
                    "job_name": "cutover-operator",
                    "static_configs": [{"targets": [f"127.0.0.1:{self.operator_metrics_port}"]}],
                },
                {
                    "job_name": "cutover-serving",
                    "file_sd_configs": [
                        {"files": [str(self.runner_dir / "serving-targets.json")], "refresh_interval": "1s"}
                    ],
                },
            ],
            scrape_interval,
        )
        self.prometheus_url = self.prometheus.address

    @property
    def kube(self) -> Kube:
        """kubectl on the stack's cluster, applying as the field manager ``demo``."""
        return Kube(self.kubeconfig, field_manager="demo")

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> Stack:
        if self.own_cluster:
            subprocess.run([str(REPO / "hack/cluster"), "down", self.cluster], capture_output=True)  # start fresh
            up = subprocess.run([str(REPO / "hack/cluster"), "up", self.cluster], capture_output=True, text=True)
            if up.returncode != 0:
                raise RuntimeError(f"hack/cluster up failed:\n{up.stderr}")
            self.kubeconfig = up.stdout.strip().splitlines()[-1]
        self.kube.run("create", "namespace", self.namespace, check=False)
        from cutover.serving.gateway.keys import secret_manifest

        self.apply(secret_manifest("demo-traffic", self.namespace, self.api_key, "admin", owner="demo"))
        self.runner_dir.mkdir(parents=True, exist_ok=True)
        # Both write the gateway's backends file and Prometheus's serving targets in runner_dir.
        data_plane = "hack.endpoints" if self.real_node else "hack.runner"
        self._spawn(
            "runner",
            [PYTHON, "-m", data_plane, "--kubeconfig", self.kubeconfig, "-n", self.namespace,
             "--state-dir", str(self.runner_dir)],
            cwd=REPO,
        )  # fmt: skip
        self.start_prometheus()
        self._spawn(
            "operator",
            [PYTHON, "-m", "cutover.operator.cli", "operator", "-n", self.namespace,
             "--metrics-port", str(self.operator_metrics_port)],
            env={"KUBECONFIG": self.kubeconfig},
        )  # fmt: skip
        self._spawn(
            "gateway",
            [PYTHON, "-m", "cutover.operator.cli", "gateway", "-n", self.namespace, "--kubeconfig", self.kubeconfig,
             "--host", "127.0.0.1", "--port", str(self.gateway_port),
             "--backends", str(self.runner_dir / "backends.json")],
        )  # fmt: skip
        gateway = self.processes["gateway"]
        wait_until(
            lambda: answers(self.gateway_url + "/v2/health/ready", gateway, "the gateway"), 60, "the gateway", 0.1
        )
        return self

    def start_prometheus(self) -> None:
        """Start Prometheus (again: its data and port survive a stop) and wait until it is ready."""
        self.prometheus.start(timeout=60)

    def stop_prometheus(self) -> None:
        self.prometheus.stop()

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
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
        for name in ("gateway", "operator", "runner"):
            self._stop(name)
        self.prometheus.stop()
        for name in list(self.processes):
            self._stop(name)
        if self.own_cluster and self.kubeconfig:
            subprocess.run([str(REPO / "hack/cluster"), "down", self.cluster], capture_output=True)

    # ---- kubectl ---------------------------------------------------------------------------

    def apply(self, *docs: dict[str, Any]) -> None:
        self.kube.apply(*docs)

    def wait_served(self, model: str, timeout: float = 60, *, chat: bool = False) -> None:
        """Until a request through the gateway is answered: the runner has the process up and the
        gateway has its route. ``chat``: ask a chat completion (an ``llm`` model), not a tensor."""
        if chat:
            path = "/v1/chat/completions"
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": CHAT_PROMPTS[0]}]})
        else:
            path = f"/v2/models/{model}/infer"
            body = json.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, -2, 0.5]}]}
            )
        request = urllib.request.Request(
            self.gateway_url + path,
            data=body.encode(),
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
        )

        def answered() -> bool:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_until(answered, timeout, f"the gateway to answer a request for {model}", 0.2)

    def md(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.kube.json("get", "md", name, "-n", self.namespace)
        return body


CHAT_PROMPTS = (
    "Can you help me write a short thank-you note to my team?",
    "What's a good way to learn Spanish in three months?",
    "My order hasn't arrived yet, what should I do?",
    "Summarise the plot of Pride and Prejudice in two sentences.",
    "How do I reset my password?",
    "Any tips for a first job interview?",
    "what's the difference between a list and a tuple in python",
    "Suggest a vegetarian dinner for four people.",
)
"""What the chat traffic asks, in turn (an ordinary assistant's day)."""


@dataclass
class Traffic:
    """Steady requests through the gateway; every request sent is counted, and so is every answer."""

    url: str
    key: str
    model: str
    rate: float = 40.0
    users: int = 0
    """With users, each request carries X-User-Id of one of them (for sticky A/B assignment)."""
    chat: bool = False
    """Send OpenAI chat completions (``/v1/chat/completions``, an ``llm`` model) instead of
    Open Inference Protocol tensors."""
    truth: tuple[int, ...] = ()
    """With truth (each body's true class, in the order of ``bodies()``), every answer is followed
    by its ground truth (``POST /v2/models/{model}/feedback`` with the answer's id), as a client
    whose labels arrive at once; ``fed_back`` counts the statuses of those calls."""
    sent: int = 0
    answered: Counter[int] = field(default_factory=Counter)
    recent: deque[tuple[float, str, int, str | None]] = field(default_factory=lambda: deque(maxlen=100_000))
    """(time, revision that answered, status, user) of each answer."""
    lost: int = 0
    fed_back: Counter[int] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.chat else f"/v2/models/{self.model}/infer"

    def bodies(self) -> list[str]:
        """The request bodies sent in turn."""
        if self.chat:
            return [
                json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}]})
                for prompt in CHAT_PROMPTS
            ]
        inputs = sample_models.sample_inputs(2000, seed=7)
        return [
            json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": row.tolist()}]})
            for row in inputs
        ]

    async def _run(self) -> None:
        bodies = self.bodies()
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        pending: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(headers=headers) as session:
            started = time.monotonic()
            while not self._stop.is_set():
                due = started + self.sent / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                user = f"user-{self.sent % self.users}" if self.users else None
                task = asyncio.create_task(self._one(session, self.sent % len(bodies), bodies, user))
                pending.add(task)
                task.add_done_callback(pending.discard)
                self.sent += 1
            await asyncio.gather(*pending)

    async def _one(self, session: aiohttp.ClientSession, index: int, bodies: list[str], user: str | None) -> None:
        headers = {"X-User-Id": user} if user else None
        try:
            async with session.post(f"{self.url}{self.path}", data=bodies[index], headers=headers) as response:
                answer = await response.read()
                revision = response.headers.get(REVISION_HEADER, "?")
                self.answered[response.status] += 1
                self.recent.append((time.monotonic(), revision, response.status, user))
            if self.truth and response.status == 200:
                feedback = {"id": json.loads(answer)["id"], "truth": self.truth[index]}
                async with session.post(f"{self.url}/v2/models/{self.model}/feedback", json=feedback) as given:
                    await given.read()
                    self.fed_back[given.status] += 1

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
