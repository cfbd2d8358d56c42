"""The parameters of an inference request that ``cutover serve`` honours, and the refusal of
every other one.

The Open Inference Protocol lets a request carry ``parameters`` at three levels (the request,
each input, each requested output), and Triton defines what several of them mean. A parameter
the server ignored would answer a different question than the one asked (a ``priority`` that
never jumps the queue, a ``sequence_id`` whose state is never kept, an output read from a shared
memory region nobody wrote), so each one is either honoured or refused with ``InvalidInput``
(400) naming it; a parameter that holds its default value asks for nothing and passes.

=====================================================  ========  ==========================================
parameter                                              level     decision
=====================================================  ========  ==========================================
binary_data_output                                     request   honoured (outputs in binary by default)
binary_data_size                                       input     honoured (the binary tensor extension)
binary_data                                            output    honoured
classification                                         output    honoured (Triton's classification extension)
sequence_id, sequence_start, sequence_end              request   refused unless 0 / false: no stateful models
priority                                               request   refused unless 0: one queue, arrival order
timeout                                                request   refused: no per-request queue timeout
headers, triton_* and any other name                   request   refused
shared_memory_region, _byte_size, _offset              input,    refused: no shared-memory extension;
                                                       output    tensors travel in the body
content_type and any other name                        input,    refused
                                                       output
=====================================================  ========  ==========================================

Sources: the KServe Open Inference Protocol REST spec (parameters), Triton's
``docs/protocol/extension_binary_data.md``, ``extension_classification.md``,
``extension_sequence.md``, ``extension_schedule_policy.md``, ``extension_shared_memory.md``, and
the parameters ``tritonclient.http`` reserves (``TRITON_RESERVED_REQUEST_PARAMS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidInput

_NO_SEQUENCES = "sequences (stateful models) are not supported: each request stands alone"
_NO_SHARED_MEMORY = "shared memory is not supported: send the tensor in the request body (JSON or binary)"
REFUSED = {
    "sequence_id": _NO_SEQUENCES,
    "sequence_start": _NO_SEQUENCES,
    "sequence_end": _NO_SEQUENCES,
    "priority": "request priorities are not supported: one queue serves requests in arrival order",
    "timeout": "per-request timeouts are not supported",
    "headers": "request headers as a parameter are not supported",
    "shared_memory_region": _NO_SHARED_MEMORY,
    "shared_memory_byte_size": _NO_SHARED_MEMORY,
    "shared_memory_offset": _NO_SHARED_MEMORY,
}
"""Why each parameter the protocols define, and this server does not honour, is refused."""
DEFAULTS: dict[str, tuple[Any, ...]] = {
    "sequence_id": (0, ""),
    "sequence_start": (False,),
    "sequence_end": (False,),
    "priority": (0,),
}
"""Values that ask for nothing (Triton's defaults): accepted, as a client may send them."""
HONOURED = {
    "request": frozenset({"binary_data_output"}),
    "input": frozenset({"binary_data_size"}),
    "output": frozenset({"binary_data", "classification"}),
}


def check_parameters(parameters: Any, level: str, where: str) -> dict[str, Any]:
    """The ``parameters`` object of a request (``level`` "request"), an input or a requested
    output, checked: returned as a mapping (empty when absent) when every parameter in it is one
    ``level`` honours or holds its default. ``where`` names the place in errors ("the request",
    "input 'x'"). Raises ``InvalidInput`` for parameters that are not an object, and for the
    first parameter the server does not honour, saying which and why."""
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}: parameters must be an object")
    for name, value in parameters.items():
        if name in HONOURED[level] or _is_default(name, value):
            continue
        reason = REFUSED.get(name, "this server does not know it")
        raise InvalidInput(f"{where}: parameter {name!r} is not supported: {reason}")
    return parameters


def _is_default(name: str, value: Any) -> bool:
    return any(value == default and type(value) is type(default) for default in DEFAULTS.get(name, ()))


def flag(parameters: Mapping[str, Any], name: str, where: str) -> bool | None:
    """A boolean parameter (``binary_data``, ``binary_data_output``); None when absent. Raises
    ``InvalidInput`` when it is not a boolean."""
    value = parameters.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{where}: parameter {name!r} must be true or false")
    return value


def class_count(parameters: Mapping[str, Any], where: str) -> int | None:
    """The ``classification`` parameter of a requested output: how many top classes to answer;
    None when absent. Raises ``InvalidInput`` unless it is a positive integer."""
    value = parameters.get("classification")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput(f"{where}: parameter 'classification' must be a positive integer, got {value!r}")
    return value
