"""Shared fixtures: one real control plane per test run, a fresh namespace per test.

With KUBECONFIG set, tests use that cluster (kind, a real one) instead of starting their own.
Otherwise `hack/cluster up` starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok on 127.0.0.1, and the session tears it down at the end. When a test
fails, the control-plane logs are copied to test-logs/ before teardown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kubectl import Kube

REPO = Path(__file__).resolve().parent.parent
CLUSTER_NAME = "pytest"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the real-node tests (``realnode``: slow, root, a kubelet and containerd to
    build) unless the ``-m`` expression names them, as `make e2e-real` does."""
    if "realnode" in (config.option.markexpr or ""):
        return
    left_out = [item for item in items if item.get_closest_marker("realnode")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("realnode")]


def _failed(session: pytest.Session) -> bool:
    return session.testsfailed > 0


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Iterator[Kube]:
    if os.environ.get("KUBECONFIG"):
        kubeconfig = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
        pids = kubeconfig.parent / "pids"  # a cluster that `hack/cluster up NAME` started
        client = Kube(str(kubeconfig), pids if pids.is_dir() else None)
        client.run("apply", "--server-side", "--force-conflicts", "--field-manager=pytest", "-f", str(REPO / "crds"))
        yield client
        return
    # The audit log of ServiceAccounts' requests: what test_rbac compares the chart's grants with.
    audit = {"CUTOVER_AUDIT_POLICY": str(REPO / "hack" / "audit-policy.yaml")}
    up = subprocess.run(
        [REPO / "hack/cluster", "up", CLUSTER_NAME], capture_output=True, text=True, env={**os.environ, **audit}
    )
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
