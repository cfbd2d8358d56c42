"""The prediction cache (``runtime.cache``, off unless set): the primary model's outputs for
inputs it has answered before, kept in the serving process's memory and bounded by entries and by
bytes (the least recently used answer goes first), and optionally by age.

Where it stands. The cache takes the model call's place in the pipeline (``serving/pipeline.py``):
after decoding, validation, the SafetyPolicy's input screening and the input filters, so the key
is what the model would be given (an input the policy redacted is looked up redacted), and before
the batcher and the model. It keeps the model's own outputs, all of them. Everything after the
model runs on every request, hit or miss: confidence and the predictions counted (a cached answer
is the primary model's answer), the fallback chain (a cached answer below the confidence threshold
still goes to the previous version, whose answer is not cached: another revision, behind a
circuit breaker), the output filters and the SafetyPolicy's output screening (the policy may
have changed since the answer was cached), the requested outputs' selection and encoding
(classification included), and the audit record, which says ``cache: hit``. The
out-of-distribution score is computed from the inputs on every request as well, so a hit is
counted in every series a miss is counted in, except the model's own (batch sizes, queue time).

The key is a BLAKE2b digest (256 bits) of the revision; each input's name, datatype, shape and
bytes, in name order (the order a client lists inputs in does not change the answer); and the
request's parameters except ``binary_data_output``, which only says how outputs are encoded.
The requested outputs and their parameters are left out on purpose: they choose and encode what
the model answered, and are applied to each request after the cache. Digests of inputs over
OFF_LOOP_BYTES are computed on a worker thread (hashlib releases the GIL), so a large body does
not hold up the event loop and its health probes.

Not cached: a request with sequence parameters (``sequence_id``, ``sequence_start``,
``sequence_end``: a stateful model's answer depends on the requests before it) passes by the cache
(``bypass``); models of format ``llm`` (sampled answers) have no cache: the API and
``cutover serve`` refuse one. Errors are never cached.

Identical requests in flight together share one model call (single-flight): the first makes it
(``miss``), the others wait for its answer (``coalesced``; counted as hits, since they cost no
model call of their own) instead of calling the model again. When the call fails, every request
waiting for it gets that error; when the first request goes away before the answer (its client
disconnected), the waiting ones do not fail: one of them calls the model again. (A task of its
own for every call would spare that second call, at about 10 microseconds on every miss.)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .protocol import datatype_of, tensor_bytes

Tensors = dict[str, np.ndarray]
Lookup = Literal["hit", "coalesced", "miss", "bypass"]
"""How the cache answered a request, as the audit record says it."""

ENCODING_ONLY = frozenset({"binary_data_output"})
"""Request parameters that change how the answer is encoded, never what it is: not in the key."""
SEQUENCE = frozenset({"sequence_id", "sequence_start", "sequence_end"})
"""Triton's sequence (stateful model) parameters; a request that sets one is never cached."""
OFF_LOOP_BYTES = 1 << 20
"""Inputs larger than this are digested on a worker thread."""


class CacheMetrics:
    """What the cache reports (``serving/metrics.py`` implements it with Prometheus series)."""

    def hit(self) -> None:
        """A request answered without a model call of its own."""

    def miss(self) -> None:
        """A request that called the model."""

    def evicted(self, reason: Literal["capacity", "expired"]) -> None:
        """An answer dropped to stay within the bounds, or because it was older than the ttl."""

    def held(self, entries: Callable[[], float], nbytes: Callable[[], float]) -> None:
        """How to read the answers held and their bytes when the metrics are read."""


class _Abandoned(Exception):
    """The request whose model call others were waiting for went away before the answer."""


@dataclass(frozen=True, slots=True)
class _Entry:
    outputs: Tensors
    nbytes: int
    expires: float


def _stateful(parameters: Mapping[str, Any]) -> bool:
    """Whether a request's parameters put it in a sequence (Triton's defaults 0 and false do not)."""
    return any(parameters.get(name) not in (None, 0, "", False) for name in SEQUENCE)


def digest(revision: str, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, Any]) -> bytes:
    """The cache key of a request: 32 bytes of BLAKE2b over the revision, every input's name,
    datatype, shape and little-endian bytes (BYTES elements length-prefixed) in name order, and
    the parameters that are not ENCODING_ONLY (as canonical JSON). Raises ``InferenceError`` for
    an array with no protocol datatype."""
    hasher = hashlib.blake2b(digest_size=32)
    # Lengths and counts before what they measure, datatypes padded to one width: the stream parses
    # back one way only, so two different requests never hash the same bytes.
    label = revision.encode()
    hasher.update(struct.pack("<2Q", len(label), len(inputs)) + label)
    for name in sorted(inputs):
        array = inputs[name]
        datatype = datatype_of(array)
        if datatype == "BYTES":
            data: bytes | memoryview = tensor_bytes(array)
        else:
            data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).data
        label = name.encode()
        hasher.update(struct.pack(f"<3Q{array.ndim}Q", len(label), array.ndim, memoryview(data).nbytes, *array.shape))
        hasher.update(label + datatype.encode().ljust(8))
        hasher.update(data)
    meaningful = {k: v for k, v in parameters.items() if k not in ENCODING_ONLY}
    if meaningful:
        hasher.update(json.dumps(meaningful, sort_keys=True, separators=(",", ":")).encode())
    return hasher.digest()


def _nbytes(outputs: Mapping[str, np.ndarray]) -> int:
    """Bytes an answer holds: its arrays, plus each BYTES element's own bytes."""
    total = 0
    for array in outputs.values():
        total += array.nbytes
        if array.dtype.kind == "O":
            total += sum(len(item) for item in array.ravel() if isinstance(item, bytes | str))
    return total


def _owned(outputs: Mapping[str, np.ndarray]) -> Tensors:
    """The outputs as arrays of their own (a batch's slice would keep the whole batch alive, and
    be counted short), read-only: every request that hits shares them."""
    owned = {}
    for name, array in outputs.items():
        own = array.copy() if isinstance(array.base, np.ndarray) else array
        own.flags.writeable = False
        owned[name] = own
    return owned


class PredictionCache:
    """A bounded LRU of one revision's answers (see the module docstring for what is kept and
    how). ``max_entries`` answers and ``max_bytes`` bytes of outputs at most (an answer larger
    than ``max_bytes`` alone is not kept); ``ttl`` seconds the longest an answer is reused
    (None: until evicted); ``clock`` is monotonic seconds."""

    def __init__(
        self,
        revision: str,
        max_entries: int,
        max_bytes: int,
        ttl: float | None = None,
        metrics: CacheMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.revision = revision
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.metrics = metrics or CacheMetrics()
        self.clock = clock
        self.nbytes = 0
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._calls: dict[bytes, asyncio.Future[Tensors]] = {}
        self.metrics.held(lambda: len(self._entries), lambda: self.nbytes)

    @property
    def entries(self) -> int:
        """Answers held. Not ``__len__``: an empty cache would then be false, and ``if
        model.cache`` read "no cache" (the batcher's ``__len__`` once told perf_analyzer a
        batching model did not batch)."""
        return len(self._entries)

    async def outputs(
        self,
        inputs: Mapping[str, np.ndarray],
        parameters: Mapping[str, Any],
        predict: Callable[[], Awaitable[Tensors]],
    ) -> tuple[Tensors, Lookup]:
        """The model's outputs for ``inputs`` (as the model is given them) and ``parameters``
        (the request's): from the cache, from an identical request's model call in flight, or
        from ``predict()`` (kept for the next one); and how they were found. Raises what
        ``predict`` raises."""
        if _stateful(parameters):
            return await predict(), "bypass"
        if sum(array.nbytes for array in inputs.values()) > OFF_LOOP_BYTES:
            key = await asyncio.to_thread(digest, self.revision, inputs, parameters)
        else:
            key = digest(self.revision, inputs, parameters)
        while True:
            entry = self._get(key)
            if entry is not None:
                self.metrics.hit()
                return entry.outputs, "hit"
            call = self._calls.get(key)
            if call is None:
                break
            try:  # shielded: a waiting request that goes away must not cancel the call for the others
                outputs = await asyncio.shield(call)
            except _Abandoned:
                continue  # the request that called the model went away first: ask again
            self.metrics.hit()
            return outputs, "coalesced"
        self.metrics.miss()
        call = self._calls[key] = asyncio.get_running_loop().create_future()
        try:
            outputs = _owned(await predict())
        except BaseException as error:
            call.set_exception(_Abandoned() if isinstance(error, asyncio.CancelledError) else error)
            call.exception()  # marked as read: no request may be waiting for it
            raise
        finally:
            del self._calls[key]
        call.set_result(outputs)
        self._put(key, outputs)
        return outputs, "miss"

    def _get(self, key: bytes) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            self._drop(key, "expired")
            return None
        self._entries.move_to_end(key)
        return entry

    def _put(self, key: bytes, outputs: Tensors) -> None:
        nbytes = _nbytes(outputs) + len(key)
        if nbytes > self.max_bytes:
            return
        expires = self.clock() + self.ttl if self.ttl is not None else float("inf")
        self._entries[key] = _Entry(outputs, nbytes, expires)
        self.nbytes += nbytes
        while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)), "capacity")

    def _drop(self, key: bytes, reason: Literal["capacity", "expired"]) -> None:
        self.nbytes -= self._entries.pop(key).nbytes
        self.metrics.evicted(reason)
