"""Shared fixtures: one real control plane per test run, a fresh namespace per test.

With KUBECONFIG set, tests use that cluster (kind, a real one) instead of starting their own.
Otherwise `hack/cluster up` starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok on 127.0.0.1, and the session tears it down at the end. When a test
fails, the control-plane logs are copied to test-logs/ before teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER_NAME = "pytest"


@dataclass(frozen=True)
class Kube:
    """kubectl bound to one kubeconfig: the same client a platform engineer uses."""

    kubeconfig: str
    pid_dir: Path | None = None
    """Where the local control plane's process ids are, when this run started it."""

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [shutil.which("kubectl") or "kubectl", "--kubeconfig", self.kubeconfig, *args]
        done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(
        self, *docs: dict[str, Any], namespace: str | None = None, check: bool = True, dry_run: bool = False
    ) -> subprocess.CompletedProcess[str]:
        args = ["apply", "--server-side", "--field-manager=pytest", "-f", "-"]
        if namespace:
            args += ["--namespace", namespace]
        if dry_run:
            args.append("--dry-run=server")
        return self.run(*args, input=yaml.safe_dump_all(docs), check=check)


def _failed(session: pytest.Session) -> bool:
    return session.testsfailed > 0


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Iterator[Kube]:
    if os.environ.get("KUBECONFIG"):
        client = Kube(os.environ["KUBECONFIG"].split(os.pathsep)[0])
        client.run("apply", "--server-side", "--force-conflicts", "--field-manager=pytest", "-f", str(REPO / "crds"))
        yield client
        return
    up = subprocess.run([REPO / "hack/cluster", "up", CLUSTER_NAME], capture_output=True, text=True)
    if up.returncode != 0:
        pytest.fail(f"hack/cluster up failed:\n{up.stderr}")
    try:
        yield Kube(up.stdout.strip().splitlines()[-1], REPO / ".cluster" / "clusters" / CLUSTER_NAME / "pids")
    finally:
        if _failed(request.session):
            logs = REPO / ".cluster" / "clusters" / CLUSTER_NAME / "logs"
            shutil.copytree(logs, REPO / "test-logs", dirs_exist_ok=True)
            print(f"\ncontrol-plane logs kept in {REPO / 'test-logs'}")
        subprocess.run([REPO / "hack/cluster", "down", CLUSTER_NAME], check=False)


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace, deleted at teardown (without waiting: nothing in it blocks deletion)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.run("create", "namespace", name)
    yield name
    kube.run("delete", "namespace", name, "--wait=false", "--ignore-not-found")
