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
