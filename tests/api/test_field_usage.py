"""Every ModelDeployment field does something: some code outside operator/api/ reads it.

A field that validates and lands in the CRD but that nothing reads is a promise the product
breaks silently (``runtime.gpu.sharing`` was one). The fields are found by walking the pydantic
models under ``spec`` and ``status``; a field counts as read where the operator or the data
plane uses its Python attribute (``.field_name``) or its wire name as a dict key
(``"fieldName"``, where code reads wire dicts such as a revision's source or the traffic table).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from cutover.api.v1alpha1 import ModelDeployment

REPO = Path(__file__).resolve().parents[2]
READERS = sorted(
    path
    for folder in ("operator", "serving")
    for path in (REPO / folder).rglob("*.py")
    if (REPO / "operator" / "api") not in path.parents
)
"""Code that may read a field: the operator, the kubectl plugin, serving and the gateway."""

METADATA_ONLY = frozenset(
    {
        # Written by the operator for people and tools (kubectl, Argo CD, Flux), never read back:
        "status.message",
        "status.conditions.reason",
        "status.conditions.message",
        "status.conditions.lastTransitionTime",
        "status.lastAnalysis.metrics.reason",
        "status.handledRequests.at",
        # Evidence for people; the analysis fills it by field name (judges.Evidence.alpha_spent).
        "status.lastAnalysis.metrics.alphaSpent",
    }
)
"""Pure metadata: fields that exist to be read by people, so no code needs to read them."""

PASSED_THROUGH = frozenset(
    {
        # runtime.tolerations are handed to the pod spec whole (core/v1 Toleration), so this key
        # is honoured by Kubernetes without cutover ever naming it.
        "runtime.tolerations.tolerationSeconds",
    }
)

UNWIRED: frozenset[str] = frozenset()
"""Fields nothing outside operator/api/ reads yet, each the subject of an open issue that makes
it act (the autoscaling targets left it when the operator's autoscaler came). A field leaves
this set when code reads it (test_unwired_fields_are_still_unread then fails until it is out).
"""


def models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation refers to (through Optional, list, dict, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            yield from models_in(arg)


def fields(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str]]:
    """(dotted wire path, Python attribute, wire name) of every field under ``model``."""
    for attr, info in model.model_fields.items():
        wire = info.alias or attr
        path = f"{prefix}.{wire}" if prefix else wire
        yield path, attr, wire
        for inner in models_in(info.annotation):
            yield from fields(inner, path)


def all_fields() -> list[tuple[str, str, str]]:
    spec = ModelDeployment.model_fields["spec"].annotation
    status = ModelDeployment.model_fields["status"].annotation
    return [*fields(next(models_in(spec)), ""), *fields(next(models_in(status)), "status")]


def unread(sources: dict[Path, str]) -> list[str]:
    """Dotted wire paths of the fields that no source reads, allow-lists left out."""
    text = "\n".join(sources.values())
    missing = []
    for path, attr, wire in all_fields():
        if path in METADATA_ONLY | PASSED_THROUGH | UNWIRED:
            continue
        attribute = re.search(rf"\.{re.escape(attr)}\b", text)
        key = re.search(rf"[\"']{re.escape(wire)}[\"']", text)
        if not attribute and not key:
            missing.append(path)
    return missing


def read_sources() -> dict[Path, str]:
    return {path: path.read_text() for path in READERS}


def test_every_field_is_read_outside_the_api_package() -> None:
    assert unread(read_sources()) == []


def test_unwired_fields_are_still_unread() -> None:
    """UNWIRED shrinks as fields get wired: one that code reads now must leave the set."""
    sources = read_sources()
    text = "\n".join(sources.values())
    wired = [
        path
        for path, attr, wire in all_fields()
        if path in UNWIRED
        and (re.search(rf"\.{re.escape(attr)}\b", text) or re.search(rf"[\"']{re.escape(wire)}[\"']", text))
    ]
    assert wired == []


def test_the_check_notices_a_field_losing_its_only_reader() -> None:
    """The check is real: take away the reads of runtime.gpu.sharing and it is reported."""
    sources = read_sources()
    assert "runtime.gpu.sharing" not in unread(sources)
    stripped = {path: re.sub(r"\.sharing\b|[\"']sharing[\"']", "_", text) for path, text in sources.items()}
    assert "runtime.gpu.sharing" in unread(stripped)


def test_the_allow_lists_name_real_fields() -> None:
    known = {path for path, _, _ in all_fields()}
    assert known >= (METADATA_ONLY | PASSED_THROUGH | UNWIRED)
