"""A revision is the hash of a ModelDeployment's model and runtime sections as stored, so a field
added to the API with a default the object takes on (in pydantic or in the CRD) changes the
revision of every object written before it: the operator's upgrade would then roll out, to every
model, the version it already runs. The examples' revisions are pinned here as they were before
any field of today's API existed; a new field must leave them as they are (unset stays unset)."""

from __future__ import annotations

import pytest

from cutover.api.v1alpha1 import ModelDeployment
from cutover.operator.rollout.types import revision_of

from ..cases import load

REVISIONS = {
    "modeldeployment-abtest.yaml": "b3d9363573",
    "modeldeployment-bluegreen.yaml": "37d1e19b99",
    "modeldeployment-canary.yaml": "0ddc3de3b8",
    "modeldeployment-gpu-mig.yaml": "8549f77a7f",
    "modeldeployment-shadow.yaml": "6e71c879f7",
}


@pytest.mark.parametrize("example", sorted(REVISIONS))
def test_an_unchanged_object_keeps_its_revision_across_api_changes(example: str) -> None:
    spec = ModelDeployment.model_validate(load(example)).wire()["spec"]
    assert revision_of(spec["model"], spec["runtime"]) == REVISIONS[example]


DEFAULTED = {
    "model.upstream.timeoutSeconds",
    "runtime",
    "runtime.image",
    "runtime.replicas",
    "runtime.gpu.count",
    "runtime.gpu.sharing",
    "runtime.tolerations[].operator",
    "runtime.batching.maxBatchSize",
    "runtime.batching.maxQueueDelay",
    "runtime.batching.maxQueueSize",
    "runtime.cache.maxEntries",
    "runtime.cache.maxBytes",
    "runtime.explain.enabled",
    "runtime.explain.maxInFlight",
    "runtime.explain.timeout",
    "runtime.explain.background",
    "runtime.autoscaling.minReplicas",
    "runtime.env[].value",
}
"""The fields under model and runtime the API server fills in. A default on a field that stored
objects may lack changes their revisions as a pydantic default would (the server writes it into
the object); one inside an optional block added in the same change (runtime.explain) is safe, as
no stored object holds that block yet. Add to this set only such a field."""


def test_the_crd_fills_in_no_new_field_under_model_or_runtime() -> None:
    from cutover.api.crd import KINDS, crd

    schema = crd(KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    found: set[str] = set()

    def walk(node: object, path: str) -> None:
        if not isinstance(node, dict):
            return
        if node.get("default") is not None:
            found.add(path)
        for key, value in node.items():
            if key == "properties":
                for name, child in value.items():
                    walk(child, f"{path}.{name}")
            elif key in ("items", "additionalProperties"):
                walk(value, f"{path}[]")

    walk(schema["model"], "model")
    walk(schema["runtime"], "runtime")
    assert found == DEFAULTED
