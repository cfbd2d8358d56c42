"""What the operator process loads: its resident memory is its cost per cluster, so heavy
modules it does not need stay out (benchmarks/operator_scale.py measures the memory itself)."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import kopf
import pytest

from cutover.operator import main

from ..cases import CANARY, load


def test_the_operator_does_not_import_scipy_stats() -> None:
    """scipy.stats (46 MB resident, 1.3 s to import) came in for one chi-square quantile, which
    scipy.special.chdtri gives."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cutover.operator.main; print(sorted(m for m in sys.modules if m.startswith('scipy.stats')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert loaded == "[]"


class Uncopyable:
    """A value that fails the test if anything deep-copies it."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Uncopyable:
        raise AssertionError("copied")


def test_an_objects_essence_is_built_without_copying_its_status_or_managed_fields() -> None:
    """kopf builds every object's essence on every watch event by deep-copying the whole body
    and then dropping its status and most of its metadata; that copy was a tenth of the
    operator's CPU while 500 ModelDeployments came up. The essence is kopf's own, the copy
    of what it leaves out is gone."""
    body = copy.deepcopy(load(CANARY))
    body["metadata"].update(
        namespace="shop",
        uid="uid-1",
        labels={"team": "t1"},
        annotations={"cutover.dev/rollback": "r1", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
    )
    body["status"] = {"phase": "Healthy", "history": [{"revision": "abc"}]}
    storage = main.DiffBaseStorage(prefix="cutover.dev", key="last-handled-configuration")
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="cutover.dev", key="last-handled-configuration")
    assert storage.build(body=kopf.Body(body)) == kopfs.build(body=kopf.Body(body))
    body["status"]["evidence"] = body["metadata"]["managedFields"] = Uncopyable()
    with pytest.raises(AssertionError, match="copied"):
        kopfs.build(body=kopf.Body(body))
    assert storage.build(body=kopf.Body(body))["spec"] == load(CANARY)["spec"]


def test_the_operator_builds_essences_with_its_own_storage() -> None:
    settings = kopf.OperatorSettings()
    main.configure(settings)
    assert isinstance(settings.persistence.diffbase_storage, main.DiffBaseStorage)
