"""The audit log: one JSON line per prediction, so that any answer a model gave can be traced to
the request, the model revision that gave it and whether a fallback stepped in.

Auditing must never slow or fail a prediction. ``record`` only puts the entry on a bounded queue;
a daemon thread redacts personal data, serialises and writes it. When the writer falls behind
(a slow disk), entries are dropped and counted in ``dropped`` (the server exports that as
``cutover_serving_audit_dropped_total``) rather than making requests wait. Files rotate by size
through the standard library's ``RotatingFileHandler``, so disk use is bounded by
``max_bytes * (backup_count + 1)``.

A record as the server writes it (keys in this order)::

    time          RFC 3339 UTC timestamp, "2025-01-31T12:00:00Z"
    request_id    the protocol request id, X-Request-Id, or a generated one
    namespace     Kubernetes namespace of the serving pod
    model         model name
    version       model version
    revision      the ModelDeployment revision serving it
    input_digest  "sha256:<hex>" over the raw input bytes (inputs themselves are never logged)
    outputs       summarize_outputs(...): per output its shape, first values, truncated flag
    confidence    top-class probability per row (first 32 rows), or null
    ood_score     out-of-distribution distance per row (first 32 rows), or null
    fallback      null, or the fallback link that answered ("previous", "baseline", "default")
    cache         only with a prediction cache: "hit", "coalesced" (an identical request's model
                  call answered it), "miss" or "bypass" (not cacheable); serving/cache.py
    latency_ms    time spent on the request
    status        HTTP status (422 for a request the SafetyPolicy refused)
    trace_id      only when the request was traced: its OpenTelemetry trace id (32 hex digits)
    span_id       and the id of its span that wrote the record (16 hex digits); serving/tracing.py
    safety        only with a SafetyPolicy: what its filters found, one object per filter and
                  category with the highest score, {"filter", "category", "action", "score",
                  "scope"} (never the text)

Every string value is redacted with :mod:`pii` except those under :data:`NOT_REDACTED`, which are
identifiers the operator or server chose and must stay joinable with other logs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import math
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .pii import redact_value

log = logging.getLogger(__name__)

NOT_REDACTED = frozenset(
    {
        "request_id",
        "model",
        "version",
        "revision",
        "namespace",
        "input_digest",
        "time",
        "fallback",
        "cache",
        "trace_id",
        "span_id",
    }
)
_STOP = object()


def input_digest(parts: Iterable[bytes]) -> str:
    """``sha256:<hex>`` over the concatenated raw input bytes: proves which input an answer was
    for without keeping the input."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return f"sha256:{digest.hexdigest()}"


def summarize_outputs(outputs: Mapping[str, np.ndarray], max_values: int = 32) -> dict[str, dict[str, Any]]:
    """Each output as ``{"shape": [...], "values": [...], "truncated": bool}``: the first
    ``max_values`` values in row-major order, so that a large tensor (an embedding, an image) does
    not bloat every line. Text (BYTES) values become strings, so that redaction reaches them."""
    summary: dict[str, dict[str, Any]] = {}
    for name, output in outputs.items():
        array = np.asarray(output)
        flat = array.reshape(-1)
        head = flat[:max_values]
        summary[name] = {"shape": list(array.shape), "values": _plain(head), "truncated": flat.size > max_values}
    return summary


def _plain(values: np.ndarray) -> list[Any]:
    if values.dtype.kind == "f" and values.dtype.itemsize < 8:
        # float32's shortest repr, not the float64 widening: 0.1, not 0.10000000149011612.
        return [float(str(v)) for v in values]
    if values.dtype.kind in "SO":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values.tolist()]
    return list(values.tolist())


def _default(value: Any) -> Any:
    """numpy values as their plain JSON counterparts; anything else JSON cannot hold as its str().
    Redacted here too: these values were opaque to the redaction before serialisation."""
    if isinstance(value, np.generic | np.ndarray):
        return redact_value(value.tolist())
    return redact_value(str(value))


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity; a model that outputs them is still audited, as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


class AuditLog:
    """Writes audit records to ``path`` from a background thread.

    ``dropped`` counts records refused because the queue was full (or the log was closed);
    ``written`` counts records handed to the file handler (an I/O error there is reported by
    logging's ``handleError`` on stderr, like any log handler's); ``failed`` counts records that
    could not be serialised.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 50 * 2**20,
        backup_count: int = 5,
        queue_size: int = 10000,
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Opened here, not lazily, so that an unwritable path fails at startup, not silently later.
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.path = path
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self._closed = False
        self._thread = threading.Thread(target=self._write_all, name=f"audit-{path.name}", daemon=True)
        self._thread.start()

    def record(self, entry: Mapping[str, Any]) -> None:
        """Queue ``entry`` for writing; never blocks, never raises. The caller must not change
        ``entry`` afterwards: it is serialised later, on the writer thread."""
        if self._closed:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5) -> None:
        """Write what is queued, then stop the writer and close the file. Waits at most about
        ``timeout`` seconds; records still queued after that are lost."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("audit log %s: writer stuck, %d records not written", self.path, self._queue.qsize())
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._handler.close()

    def _write_all(self) -> None:
        while (entry := self._queue.get()) is not _STOP:
            try:
                line = self._line(entry)
                self._handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
            except Exception:
                self.failed += 1
                log.exception("audit log %s: record not written", self.path)
            else:
                self.written += 1

    @staticmethod
    def _line(entry: Mapping[str, Any]) -> str:
        redacted = {key: value if key in NOT_REDACTED else redact_value(value) for key, value in entry.items()}
        try:
            return json.dumps(redacted, separators=(",", ":"), default=_default, ensure_ascii=False, allow_nan=False)
        except ValueError:
            return json.dumps(_finite(redacted), separators=(",", ":"), default=_default, ensure_ascii=False)
