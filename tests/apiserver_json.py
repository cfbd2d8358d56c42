"""JSON as the Kubernetes API server writes it, for tests that compare with what it hands back.

Written independently of the code under test (numpy's shortest positional formatting rather
than cutover's own normalisation): Go's encoding/json writes a float64 with 1e-6 <= |f| < 1e21
in shortest positional form, so an integral one has neither fraction nor exponent (``10.0``
comes back as ``10``), and other floats in exponent form; object keys come out sorted.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def go_json(value: Any) -> str:
    """``value`` (plain JSON data) encoded the way Go's encoding/json encodes it."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, float):
        if value == 0 or 1e-6 <= abs(value) < 1e21:
            return str(np.format_float_positional(value, unique=True, trim="-"))
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(go_json(item) for item in value) + "]"
    return "{" + ",".join(f"{json.dumps(k)}:{go_json(v)}" for k, v in sorted(value.items())) + "}"


def round_trip(value: Any) -> Any:
    """What reading ``value`` back from the API server returns."""
    return json.loads(go_json(value))
