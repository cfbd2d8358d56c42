"""The revision hash and the children are functions of the parsed spec's values only.

The API server hands a spec back with keys in another order, numbers as its JSON encoder writes
them (``10`` for a ``10.0`` that was sent) and defaults either omitted or spelled out, depending
on who wrote it; status (revision history) comes back through the same JSON round trip. None of
that may change a revision hash or a pod template: a change there rolls every pod once (two
ReplicaSets for one revision). Perturbations are random (hypothesis) over every example.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cutover.api.v1alpha1 import ModelDeployment
from cutover.operator import builders
from cutover.operator.rollout import Source, Workload, revision_of

from ..apiserver_json import round_trip
from ..cases import EXAMPLES, load

MODEL_DEPLOYMENTS = sorted(p.name for p in EXAMPLES.glob("modeldeployment-*.yaml"))


def perturb(value: Any, rng: random.Random) -> Any:
    """The same values spelled another way: keys shuffled, integral numbers as int or float."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: perturb(item, rng) for key, item in items}
    if isinstance(value, list):
        return [perturb(item, rng) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and float(value).is_integer() and abs(value) < 2**53:
        return rng.choice([int(value), float(value)])
    return value


def parsed(doc: dict[str, Any]) -> ModelDeployment:
    doc = copy.deepcopy(doc)
    doc["metadata"].update(uid="3f1c", generation=1)
    return ModelDeployment.model_validate(doc)


def spelled(example: str, rng: random.Random, defaults_spelled_out: bool) -> dict[str, Any]:
    """An example as a user might write it: with or without the defaults, randomly perturbed."""
    doc = copy.deepcopy(load(example))
    if defaults_spelled_out:
        doc["spec"] = parsed(doc).spec.wire()
    perturbed: dict[str, Any] = perturb(doc, rng)
    return perturbed


def children_of(md: ModelDeployment, source: Source) -> list[dict[str, Any]]:
    stable = Workload("abc123", "stable", 2, source)
    candidate = Workload("def456", "candidate", 1, source)
    return builders.children(md, (stable, candidate), [])


def source_of(md: ModelDeployment, read_back: bool) -> Source:
    """The revision's source from the spec, or from status history after the JSON round trip."""
    wire = md.spec.wire()
    if read_back:
        wire = round_trip(wire)
    return Source(wire["model"], wire["runtime"])


two_spellings = given(
    example=st.sampled_from(MODEL_DEPLOYMENTS),
    seeds=st.tuples(st.integers(0, 2**32), st.integers(0, 2**32)),
    spelled_out=st.tuples(st.booleans(), st.booleans()),
    read_back=st.tuples(st.booleans(), st.booleans()),
)
"""Two spellings of one example (key order, 10 vs 10.0, defaults spelled out or omitted), each
taken from the spec or read back after the API server's JSON round trip."""


@settings(max_examples=60, deadline=None)
@two_spellings
def test_children_are_a_function_of_the_parsed_values(
    example: str, seeds: tuple[int, int], spelled_out: tuple[bool, bool], read_back: tuple[bool, bool]
) -> None:
    one, two = (
        parsed(spelled(example, random.Random(seed), out)) for seed, out in zip(seeds, spelled_out, strict=True)
    )
    assert children_of(one, source_of(one, read_back[0])) == children_of(two, source_of(two, read_back[1]))


@settings(max_examples=60, deadline=None)
@two_spellings
def test_revision_hash_is_a_function_of_the_parsed_values(
    example: str, seeds: tuple[int, int], spelled_out: tuple[bool, bool], read_back: tuple[bool, bool]
) -> None:
    sources = [
        source_of(parsed(spelled(example, random.Random(seed), out)), back)
        for seed, out, back in zip(seeds, spelled_out, read_back, strict=True)
    ]
    assert len({revision_of(s.model, s.runtime) for s in sources}) == 1


def test_canary_example_value_range_survives_the_api_server_round_trip() -> None:
    """The reported case: ``range: {min: -10, max: 10}`` gave ``10.0`` in the first pod template
    and ``10`` once the revision's source came back from status."""
    md = parsed(load("modeldeployment-canary.yaml"))
    fresh = builders.deployment(md, Workload("abc123", "stable", 3, source_of(md, read_back=False)))
    again = builders.deployment(md, Workload("abc123", "stable", 3, source_of(md, read_back=True)))
    assert fresh["spec"]["template"] == again["spec"]["template"]
    wire = md.spec.wire()
    back = round_trip(wire)
    assert revision_of(wire["model"], wire["runtime"]) == revision_of(back["model"], back["runtime"])
