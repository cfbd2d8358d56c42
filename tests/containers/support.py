"""The project's images run as real containers (podman with runc, hack/images' store and
configuration), locked down as the chart and the operator's pod template run them, with their
ports published on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
SESSION_LABEL = "cutover.dev/test-session"
"""Each test container carries the process id of the pytest session that ran it."""


@dataclass(frozen=True)
class Images:
    """hack/images' images: ``env`` is the environment podman reaches them with (its
    containers.conf and storage.conf); ``repository`` and ``tag`` name them
    (``<repository>/<target>:<tag>``)."""

    env: dict[str, str]
    repository: str
    tag: str

    def name(self, target: str) -> str:
        return f"{self.repository}/{target}:{self.tag}"

    def podman(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``podman ARGS`` with hack/images' configuration; raises AssertionError when ``check``
        and podman exits non-zero."""
        done = subprocess.run(
            ["podman", *args], env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done


def build(*targets: str) -> Images:
    """Build ``targets`` with hack/images (a cache hit when nothing changed: `make test` builds
    them first) and say how to reach them."""
    built = subprocess.run([REPO / "hack/images", *targets], capture_output=True, text=True)
    assert built.returncode == 0, f"hack/images {' '.join(targets)} failed:\n{built.stderr}"
    lines = subprocess.run([REPO / "hack/images", "env"], capture_output=True, text=True, check=True).stdout
    env = dict(line.split("=", 1) for line in lines.splitlines())
    repository, tag = env.pop("CUTOVER_IMAGE_REPOSITORY"), env.pop("CUTOVER_IMAGE_TAG")
    images = Images(env, repository, tag)
    remove_orphans(images)
    return images


def remove_orphans(images: Images) -> None:
    """Remove the containers of test sessions that are gone: a session ended by SIGTERM or
    SIGKILL (a CI timeout) skips ``running``'s cleanup, and its containers ran on, an operator
    among them still watching the API server. Containers of sessions still running (another
    checkout's, at the same time) are left alone."""
    listed = json.loads(images.podman("ps", "--all", "--format", "json", "--filter", f"label={SESSION_LABEL}").stdout)
    for container in listed:
        try:
            os.kill(int(container["Labels"][SESSION_LABEL]), 0)
        except ProcessLookupError:
            images.podman("rm", "--force", "--time", "0", container["Id"], check=False)


@dataclass
class Container:
    """One running container; ``ports`` maps its ports to the host's (127.0.0.1)."""

    images: Images
    name: str
    ports: dict[int, int]

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def state(self) -> dict[str, Any]:
        """``podman inspect``'s State: Status, Running, ExitCode, ..."""
        inspected = json.loads(self.images.podman("inspect", self.name).stdout)
        state: dict[str, Any] = inspected[0]["State"]
        return state

    def logs(self) -> str:
        done = self.images.podman("logs", self.name, check=False)
        return (done.stdout + done.stderr)[-4000:]

    def stop(self, grace: int = 30) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds (`podman stop`, as the kubelet stops a
        container); the exit code: 137 when it had to be killed."""
        self.images.podman("stop", "--time", str(grace), self.name, timeout=grace + 60)
        code: int = self.state()["ExitCode"]
        return code


def _answers(container: Container, url: str) -> bool:
    """Whether a GET of ``url`` answers 200 now; raises AssertionError, with the container's log,
    when the container has exited."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        if not container.state()["Running"]:
            raise AssertionError(f"{container.name} exited:\n{container.logs()}") from None
        return False


def wait_ready(container: Container, url: str, timeout: float = 90) -> None:
    """Wait until ``url`` (a readiness endpoint) answers 200."""
    wait_until(lambda: _answers(container, url), timeout, f"{url} to be ready", 0.1, detail=container.logs)


def podman_flags(pod: Mapping[str, Any], claims: Mapping[str, Path]) -> list[str]:
    """`podman run` flags that run the pod's first container as the kubelet would: its pod's
    ``runAsUser``; ``readOnlyRootFilesystem`` as ``--read-only`` (and no tmpfs of podman's own);
    dropped capabilities; no privilege escalation; each volume mount: an emptyDir as a tmpfs, a
    PersistentVolumeClaim as the host folder ``claims`` gives for its claim name (read-only
    where the mount is). Raises KeyError for a claim ``claims`` lacks, AssertionError for a
    volume of another kind."""
    container = pod["containers"][0]
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    flags = ["--user", str(security["runAsUser"])]
    if security.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]
    flags += [f"--cap-drop={capability}" for capability in security.get("capabilities", {}).get("drop", [])]
    if security.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            flags += ["--tmpfs", f"{mount['mountPath']}:rw,nosuid,nodev"]
        elif "persistentVolumeClaim" in volume:
            source = claims[volume["persistentVolumeClaim"]["claimName"]]
            flags += ["--volume", f"{source}:{mount['mountPath']}:{'ro' if mount.get('readOnly') else 'rw'}"]
        else:
            raise AssertionError(f"no podman equivalent here for the volume {volume}")
    return flags


@contextmanager
def running(
    images: Images,
    pod: Mapping[str, Any],
    *,
    claims: Mapping[str, Path] | None = None,
    host_network: bool = False,
    extra: Sequence[str] = (),
    args: Sequence[str] = (),
) -> Iterator[Container]:
    """Run the first container of ``pod`` (a pod spec, as the operator's builders or the chart
    render it) with its image and args, locked down as its securityContext says
    (``podman_flags``). Its container ports are published on free ports of 127.0.0.1; with
    ``host_network`` it shares the host's network instead (to reach the local API server).
    ``extra`` are more podman flags, ``args`` more arguments after the pod's. The container is
    removed afterwards, its log printed when the body failed."""
    spec = pod["containers"][0]
    name = f"cutover-test-{uuid.uuid4().hex[:8]}"
    ports = [port["containerPort"] for port in spec.get("ports", [])]
    command = ["run", "--detach", "--name", name, f"--label={SESSION_LABEL}={os.getpid()}"]
    command += [*podman_flags(pod, claims or {}), *extra]
    command += ["--network=host"] if host_network else [f"--publish=127.0.0.1::{port}" for port in ports]
    images.podman(*command, spec["image"], *spec.get("args", []), *args)
    try:
        published = {}
        if not host_network:
            for port in ports:
                address = images.podman("port", name, f"{port}/tcp").stdout.strip()
                published[port] = int(address.rsplit(":", 1)[1])
        container = Container(images, name, published)
        try:
            yield container
        except BaseException:
            print(f"\n{name} log:\n{container.logs()}")
            raise
    finally:
        images.podman("rm", "--force", "--time", "0", name, check=False)


def kubeconfig_for(kube: Kube, folder: Path) -> Path:
    """A copy of ``kube``'s kubeconfig (its current context only) that the chart's user 10001 can
    read wherever ``folder`` is mounted: the certificate and key as files beside it (``ca.crt``,
    ``client.crt``, ``client.key``, named relative to it, as kubectl reads them), since a
    read-only root file system with no /tmp (the gateway's) leaves no room for the temporary
    files inline data needs. Returns the new kubeconfig's path in ``folder``."""
    config = kube.json("config", "view", "--raw", "--flatten", "--minify")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    for section, field, filename in (
        (config["clusters"][0]["cluster"], "certificate-authority", "ca.crt"),
        (config["users"][0]["user"], "client-certificate", "client.crt"),
        (config["users"][0]["user"], "client-key", "client.key"),
    ):
        target = folder / filename
        target.write_bytes(base64.b64decode(section.pop(f"{field}-data")))
        target.chmod(0o644)
        section[field] = filename
    path = folder / "kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o644)
    return path
