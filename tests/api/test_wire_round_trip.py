"""``wire()`` is what the API server hands back, down to how each number is spelled.

What the operator derives from wire form as text (the revision hash, JSON in pod args) must be
the same whether it starts from a parsed object or from what the API server returned: a
``10.0`` sent comes back as ``10``, and ``"10.0"`` is not ``"10"``.
"""

from __future__ import annotations

import copy
import json

import pytest

from cutover.api.v1alpha1 import ModelDeployment
from cutover.api.v1alpha1.base import as_stored

from ..apiserver_json import round_trip
from ..cases import EXAMPLES, load


def text(value: object) -> str:
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("modeldeployment-*.yaml")))
def test_spec_wire_is_what_the_api_server_returns(example: str) -> None:
    wire = ModelDeployment.model_validate(copy.deepcopy(load(example))).spec.wire()
    assert text(round_trip(wire)) == text(wire)


@pytest.mark.parametrize(
    "value",
    [10.0, -10.0, 0.0, -0.0, 0.5, 12.5, 1e-7, 1e20, 1.5e20, 1e21, 1.152921504606847e18, 2.0**53 + 2, 1e300],
)
def test_numbers_are_written_as_the_api_server_writes_them(value: float) -> None:
    assert text(as_stored(value)) == text(round_trip(value))
    assert as_stored(round_trip(as_stored(value))) == as_stored(value)
