"""Development only: the data plane for the local control plane.

kwok marks pods Running but runs no containers. This runner watches the serving Deployments the
operator creates and, for each revision that should have pods, starts ONE real `cutover serve`
process on loopback with that Deployment's arguments (one process per revision, whatever the
replica count), and stops it when the revision is scaled to zero or deleted. It writes:

- a backends file (`namespace/service` -> URL) that `cutover gateway --backends` follows, for
  every Service the operator made (per revision, and the stable alias);
- a Prometheus file_sd targets file listing the serving processes;
- the ConfigMap and Secret volumes of each serving pod (a SafetyPolicy's rendered ConfigMap
  and webhook Secret), as files under `<state dir>/volumes/<namespace>_<deployment>/<volume>/`,
  kept current the way kubelet keeps them (each key a symlink into a `..data` directory that
  is swapped atomically when the object changes, emptied when it is deleted); the pod's
  arguments that name a path under such a mount are rewritten to the local copy.

Nothing in the operator knows this exists. Locally, `--previous-url` is dropped (the fallback
chain's previous-version link needs cluster DNS), and model files must be `file://` or http(s).

    .venv/bin/python -m hack.runner --kubeconfig K -n demo --state-dir .demo/runner   (from the repository root)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
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
DROPPED_FLAGS = {"--previous-url", "--port", "--host", "--grpc-port"}
"""Dropped, with their values: the pod's ports would collide on loopback (gRPC is not served locally)."""


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


ObjectKey = tuple[str, str, str]
"""(kind, namespace, name) of a ConfigMap or Secret."""


@dataclass(frozen=True)
class Volume:
    """A ConfigMap or Secret volume mounted into a serving pod, and where the runner keeps it."""

    kind: str
    """ConfigMap or Secret."""
    source: str
    """The object's name."""
    mount_path: str
    """Where the pod mounts it."""
    local: Path
    """Where the runner materialises it."""


def volumes_of(obj: Mapping[str, Any], root: Path) -> list[Volume]:
    """The ConfigMap and Secret volumes a Deployment's first container mounts (``items``
    projections and ``subPath`` mounts are not reproduced: the operator makes neither)."""
    meta = obj["metadata"]
    pod = obj["spec"]["template"]["spec"]
    sources: dict[str, tuple[str, str]] = {}
    for volume in pod.get("volumes") or []:
        if "configMap" in volume:
            sources[volume["name"]] = ("ConfigMap", volume["configMap"]["name"])
        elif "secret" in volume:
            sources[volume["name"]] = ("Secret", volume["secret"]["secretName"])
    out = []
    for mount in pod["containers"][0].get("volumeMounts") or []:
        if mount["name"] in sources and not mount.get("subPath"):
            kind, source = sources[mount["name"]]
            local = root / f"{meta['namespace']}_{meta['name']}" / mount["name"]
            out.append(Volume(kind, source, mount["mountPath"].rstrip("/"), local))
    return out


def rewrite_paths(args: list[str], volumes: list[Volume]) -> list[str]:
    """``args`` with every path under a volume's mount path moved to its local copy."""
    out = []
    for arg in args:
        for volume in volumes:
            if arg == volume.mount_path or arg.startswith(volume.mount_path + "/"):
                arg = str(volume.local) + arg[len(volume.mount_path) :]
                break
        out.append(arg)
    return out


def files_of(kind: str, obj: Mapping[str, Any]) -> dict[str, bytes]:
    """A ConfigMap's or Secret's keys as file contents (Secret data and ConfigMap binaryData
    are base64, ConfigMap data is text)."""
    if kind == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    files = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    files.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return files


def project(directory: Path, files: Mapping[str, bytes]) -> bool:
    """Write ``files`` into ``directory`` as kubelet's atomic writer does: the contents go into
    a fresh hidden directory, the ``..data`` symlink is swapped to it in one rename, and each
    key is a symlink ``key -> ..data/key``; keys no longer there lose their link. Returns
    whether anything changed (the same contents are left alone, as kubelet leaves them)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "..data"
    wanted = {k: v for k, v in files.items() if not k.startswith("..") and "/" not in k}
    if data.is_symlink():
        current = directory / os.readlink(data)
        present = {p.name: p.read_bytes() for p in current.iterdir()} if current.is_dir() else {}
        if present == wanted:
            return False
        old: Path | None = current
    else:
        old = None
    fresh = directory / f"..{time.time_ns()}"
    fresh.mkdir()
    for key, value in wanted.items():
        (fresh / key).write_bytes(value)
    link = directory / "..data_tmp"
    link.unlink(missing_ok=True)
    os.symlink(fresh.name, link)
    os.replace(link, data)
    for entry in directory.iterdir():
        if not entry.name.startswith("..") and entry.name not in wanted:
            entry.unlink()
    for key in wanted:
        if not (directory / key).is_symlink():
            os.symlink(f"..data/{key}", directory / key)
    if old is not None and old.is_dir():
        shutil.rmtree(old)
    return True


@dataclass
class Process:
    revision: str
    namespace: str
    args: list[str]
    port: int
    popen: subprocess.Popen[bytes]
    ready: bool = False
    """Listed as a backend only once its ready endpoint answers 200, as a readiness probe would."""
    volumes: list[Volume] = field(default_factory=list)
    """Its ConfigMap and Secret volumes, materialised under the state dir."""

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
        self.objects: dict[ObjectKey, dict[str, bytes]] = {}
        """ConfigMaps and Secrets seen, as the files a volume of each would hold."""
        self.volumes_dir = state_dir / "volumes"
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
        volumes = volumes_of(obj, self.volumes_dir)
        for volume in volumes:
            # Optional volumes: an object that does not exist yet is an empty directory.
            project(volume.local, self.objects.get((volume.kind, meta["namespace"], volume.source), {}))
        logfile = (self.state_dir / f"{meta['namespace']}_{meta['name']}.log").open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "cutover.operator.cli", *local_args(rewrite_paths(args, volumes), port)],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        revision = obj["spec"]["template"]["metadata"]["labels"].get(LABEL_REVISION, meta["name"])
        process = self.processes[key] = Process(revision, meta["namespace"], args, port, popen, volumes=volumes)
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

    def config(self, kind: str, obj: dict[str, Any], deleted: bool = False) -> None:
        """A ConfigMap or Secret changed: bring every volume of it up to date, as kubelet does
        (a deleted object leaves its optional volumes empty)."""
        meta = obj["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        if deleted:
            self.objects.pop(key, None)
        else:
            self.objects[key] = files_of(kind, obj)
        for process in self.processes.values():
            for volume in process.volumes:
                if (volume.kind, process.namespace, volume.source) == key and project(
                    volume.local, self.objects.get(key, {})
                ):
                    log.info(
                        "updated volume %s of revision %s from %s %s", volume.local, process.revision, kind, key[2]
                    )

    def config_map(self, obj: dict[str, Any], deleted: bool = False) -> None:
        self.config("ConfigMap", obj, deleted)

    def secret(self, obj: dict[str, Any], deleted: bool = False) -> None:
        self.config("Secret", obj, deleted)

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

        config_maps = Watcher(session, credentials, f"/api/v1/namespaces/{namespace}/configmaps")
        secrets = Watcher(session, credentials, f"/api/v1/namespaces/{namespace}/secrets")

        async def run(watcher: Watcher, apply: Any, kind: str = "") -> None:
            async for event, obj in watcher.events():
                if event == "SYNC":
                    seen = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in obj}
                    if apply == runner.deployment:
                        for key in [k for k in runner.processes if k[0] == namespace and k not in seen]:
                            runner._stop(key)
                    if kind:  # objects deleted while the watch was down
                        for gone in [k for k in runner.objects if k[:2] == (kind, namespace) and k[1:] not in seen]:
                            apply({"metadata": {"namespace": gone[1], "name": gone[2]}}, deleted=True)
                    for item in obj:
                        apply(item)
                else:
                    apply(obj, deleted=event == "DELETED")
                runner.reap()

        # ConfigMaps and Secrets first, so that a process starts with its volumes filled.
        await asyncio.gather(
            run(config_maps, runner.config_map, "ConfigMap"),
            run(secrets, runner.secret, "Secret"),
            run(deployments, runner.deployment),
            run(services, runner.service),
        )


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
