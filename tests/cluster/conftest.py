"""Fixtures shared by the control-plane tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kubectl import Kube

from .operator_support import Operator


@pytest.fixture
def operator(kube: Kube, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    """The real `cutover operator` process, scoped to the test's namespace, stopped at teardown."""
    op = Operator(kube, namespace, tmp_path).start()
    yield op
    op.stop()


@pytest.fixture
def replicas(kube: Kube, namespace: str, tmp_path: Path) -> Iterator[list[Operator]]:
    """Two `cutover operator` processes electing a leader on the Lease ``cutover-operator`` in
    the test's namespace (operator_support.LEASE_TIMING), reading the verdicts of the first's
    folder; stopped at teardown."""
    first = Operator(kube, namespace, tmp_path / "a", lease="cutover-operator")
    second = Operator(kube, namespace, tmp_path / "b", lease=first.lease, verdicts=first.verdicts)
    pair = [first.start(), second.start()]
    yield pair
    for replica in pair:
        replica.stop()
