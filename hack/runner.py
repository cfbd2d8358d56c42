"""Development only: the data plane for the local control plane.

kwok marks pods Running but runs no containers. This runner watches the serving Deployments the
operator creates and, for each revision that should have pods, starts ONE real `cutover serve`
process on loopback with that Deployment's arguments (one process per revision, whatever the
replica count), and stops it when the revision is scaled to zero or deleted. It writes:

- a backends file (`namespace/service` -> URL) that `cutover gateway --backends` follows, for
  every Service the operator made (per revision, and the stable alias);
- a Prometheus file_sd targets file listing the serving processes.

Nothing in the operator knows this exists. Locally, `--previous-url` is dropped (the fallback
chain's previous-version link needs cluster DNS), and model files must be `file://` or http(s).

    .venv/bin/python -m hack.runner --kubeconfig K -n demo --state-dir .demo/runner   (from the repository root)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from cutover.api.contract import LABEL_APP_NAME, LABEL_MANAGED_BY, LABEL_REVISION, MANAGER, SERVING_APP_NAME
from cutover.serving.kube import Credentials, Watcher
from tests.support.ports import free_port
from tests.support.waiting import TimedOut, wait_until

log = logging.getLogger("cutover.runner")
SERVING_SELECTOR = f"{LABEL_APP_NAME}={SERVING_APP_NAME}"
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
DROPPED_FLAGS = {"--previous-url", "--port", "--host"}


def local_args(args: list[str], port: int) -> list[str]:
    """The Deployment's `cutover serve` arguments, for loopback."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in DROPPED_FLAGS:
            skip = True
            continue
        out.append(arg)
    return [*out, "--host", "127.0.0.1", "--port", str(port)]


@dataclass
class Process:
    revision: str
    namespace: str
    args: list[str]
    port: int
    popen: subprocess.Popen[bytes]
    ready: bool = False
    """Listed as a backend only once its ready endpoint answers 200, as a readiness probe would."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Runner:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[tuple[str, str], Process] = {}
        """By (namespace, Deployment name)."""
        self.services: dict[tuple[str, str], str] = {}
        """(namespace, Service name) -> the revision its selector picks."""
        self.backends_file = state_dir / "backends.json"
        self.targets_file = state_dir / "serving-targets.json"
        self._probes: set[asyncio.Task[None]] = set()
        self._stopping: list[Process] = []
        self._write()

    def deployment(self, obj: dict[str, Any], deleted: bool = False) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        replicas = obj.get("spec", {}).get("replicas", 1)
        containers = obj["spec"]["template"]["spec"]["containers"]
        args = list(containers[0].get("args", []))
        current = self.processes.get(key)
        if deleted or not replicas:
            if current is not None:
                self._stop(key)
            return
        if current is not None and current.args == args and current.popen.poll() is None:
            return
        if current is not None:
            self._stop(key)
        port = free_port()
        logfile = (self.state_dir / f"{meta['namespace']}_{meta['name']}.log").open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "cutover.operator.cli", *local_args(args, port)],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        revision = obj["spec"]["template"]["metadata"]["labels"].get(LABEL_REVISION, meta["name"])
        process = self.processes[key] = Process(revision, meta["namespace"], args, port, popen)
        log.info("started %s/%s (revision %s) on port %d", meta["namespace"], meta["name"], revision, port)
        task = asyncio.get_running_loop().create_task(self._await_ready(process))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _await_ready(self, process: Process) -> None:
        async with aiohttp.ClientSession() as session:
            while process.popen.poll() is None:
                try:
                    async with session.get(f"{process.url}/v2/health/ready") as response:
                        if response.status == 200:
                            process.ready = True
                            self._write()
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    def service(self, obj: dict[str, Any], deleted: bool = False) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        revision = (obj.get("spec", {}).get("selector") or {}).get(LABEL_REVISION)
        if deleted or revision is None:
            self.services.pop(key, None)
        else:
            self.services[key] = revision
        self._write()

    def _stop(self, key: tuple[str, str]) -> None:
        """Take the revision out of the backends first, then SIGTERM it: it keeps answering for its
        shutdown delay while the gateway moves on, as a terminating pod does."""
        process = self.processes.pop(key)
        self._write()
        if process.popen.poll() is None:
            os.killpg(process.popen.pid, signal.SIGTERM)
        log.info("stopping %s/%s (revision %s)", key[0], key[1], process.revision)
        self._stopping.append(process)

    def reap(self) -> None:
        for process in list(self._stopping):
            if process.popen.poll() is not None:
                self._stopping.remove(process)

    def wait_stopped(self, timeout: float = 60) -> None:
        """Until every stopping process has exited; SIGKILL those still running after ``timeout`` s."""
        try:
            wait_until(
                lambda: all(p.popen.poll() is not None for p in self._stopping), timeout, "the revisions to stop", 0.1
            )
        except TimedOut:
            for process in self._stopping:
                if process.popen.poll() is None:
                    os.killpg(process.popen.pid, signal.SIGKILL)

    def _write(self) -> None:
        by_revision = {(p.namespace, p.revision): p for p in self.processes.values() if p.ready}
        backends = {
            f"{namespace}/{name}": by_revision[(namespace, revision)].url
            for (namespace, name), revision in self.services.items()
            if (namespace, revision) in by_revision
        }
        _replace(self.backends_file, json.dumps(backends, indent=1, sort_keys=True))
        targets = [
            {"targets": [f"127.0.0.1:{p.port}"], "labels": {"job": "cutover-serving"}} for p in by_revision.values()
        ]
        _replace(self.targets_file, json.dumps(targets, indent=1))

    def stop_all(self) -> None:
        for key in list(self.processes):
            self._stop(key)
        self.wait_stopped()


def _replace(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


async def follow(runner: Runner, credentials: Credentials, namespace: str) -> None:
    async with aiohttp.ClientSession() as session:
        deployments = Watcher(
            session, credentials, f"/apis/apps/v1/namespaces/{namespace}/deployments", labelSelector=SERVING_SELECTOR
        )
        services = Watcher(
            session,
            credentials,
            f"/api/v1/namespaces/{namespace}/services",
            labelSelector=MANAGED_SELECTOR,
        )

        async def run(watcher: Watcher, apply: Any) -> None:
            async for event, obj in watcher.events():
                if event == "SYNC":
                    seen = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in obj}
                    if apply == runner.deployment:
                        for key in [k for k in runner.processes if k[0] == namespace and k not in seen]:
                            runner._stop(key)
                    for item in obj:
                        apply(item)
                else:
                    apply(obj, deleted=event == "DELETED")
                runner.reap()

        await asyncio.gather(run(deployments, runner.deployment), run(services, runner.service))


async def main_async(args: argparse.Namespace) -> None:
    runner = Runner(args.state_dir)
    credentials = Credentials.load(args.kubeconfig)
    tasks = [asyncio.create_task(follow(runner, credentials, namespace)) for namespace in args.namespace]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    runner.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("-n", "--namespace", action="append", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
