"""Ground-truth feedback: which revision answered a request, what class it gave, and whether the
truth a client sends later agrees (``POST /v2/models/{name}/feedback``).

No anchor has this route: Seldon Core v1 had ``/api/v1.0/feedback`` (request, response, reward,
truth); KServe, MLServer, Triton and the Open Inference Protocol have none. SageMaker Model
Monitor and NannyML join late labels on an inference id offline. Here the gateway joins them
online, so a rollout can be judged on accuracy and calibration while it runs (docs/analysis.md).

Which answers are kept. Only those of a ModelDeployment with ``spec.feedback`` (the route's
``feedback``), answered 200 to an ``.../infer`` through this gateway, over HTTP or gRPC (which the
gateway sends on as HTTP); reading an answer costs a JSON parse per answer, which no other model
pays. The id is the answer's ``id``: the request's own
``id``, else its ``X-Request-Id`` header, else the one serving made up (the client reads it in
the answer). Each row of the answer keeps its top class, read from the output
``spec.feedback.output`` names (else the first):

- a floating output with more than one column: the arg-max over its last axis (rows are the
  other axes), the same rule as the shadow comparison's ``top1``; its largest value is the
  confidence when the row is a probability distribution (values in [0, 1] summing to 1 within
  1e-3), else there is none (logits);
- a floating output with one column: a binary score, class 1 when it is at least 0.5, with
  confidence max(p, 1 - p) when it is within [0, 1];
- an integer or boolean output: each element is a row's class index, without confidence;
- Triton's classification extension (BYTES ``"value:index[:label]"``, top class first in each
  row): the index and label, and the value as confidence when it is within [0, 1];
- another BYTES output with one element per row: that text is the row's label.

An answer that fits none of these (or an output that is missing) is not kept and is counted
(``cutover_gateway_feedback_unreadable_total``).

The store. At most ``capacity`` rows of answers (an answer of n rows counts n: the bound is on
memory, which a client sending answers of many rows would otherwise multiply), in the order
they were answered; the oldest answers are dropped for each new one beyond it, whatever their
age, and an answer of more rows than the store holds, or of more than
``proxy.READ_ANSWER_BYTES``, is not kept (counted as unreadable). An
answer older than ``window`` seconds is still held until then, and feedback for it is refused
as late. One entry costs about 450 bytes for a one-row answer with a 36-character id, plus about
100 bytes per extra row (``tests/serving/test_feedback.py`` measures it): the default 100,000
rows take at most about 45 MB.
The store is per gateway replica: feedback that reaches a replica other than the one that
answered is refused as unknown (404). With several replicas, route a client's feedback to the
replica that answered it (session affinity by client IP on the gateway Service), or accept that
a share of feedback is lost; the counters of all replicas add up in Prometheus either way.

The feedback. ``{"id": ID, "truth": T}``, or a JSON list of such objects (a batch). ``T`` is one
class (an integer index, or a string: a label, or an index written as text) for a one-row answer,
or a list of one class per row. Each item is answered on its own: 200 with how many rows were
right; 404 for an id this replica has not kept for that model (unknown) or kept longer than the
window ago (late); 409 for an id already given its truth (duplicate) or that answered more than
once (ambiguous: a client reused it, and no one can tell which answer the truth is for); 400 for
a truth that does not fit the answer (its row count, a float, or a class the answer could not
give: a negative index, an index beyond the output's columns or a binary score's 0 and 1, text
that is no index for an answer without labels), which would otherwise count as a wrong answer of
the revision. Nothing is counted twice: an id takes one truth, once. A body that is not one of
these shapes, or a batch naming an id twice, is refused whole (400) before anything is counted,
and one over ``MAX_BODY_BYTES`` (413) before it is parsed.
A single item answers with its own status; a batch answers 200 when every item was taken, else
207 with each item's status in ``results``.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput, ServingError
from ..protocol import HEADER_LENGTH, decode_response

if TYPE_CHECKING:  # routing reads FeedbackSettings from here
    from .metrics import GatewayMetrics
    from .proxy import Answer
    from .routing import Route

DEFAULT_WINDOW = 3600.0
"""Seconds after an answer during which its truth is taken (``--feedback-window``)."""
DEFAULT_CAPACITY = 100_000
"""Rows of answers kept per gateway replica (``--feedback-max-answers``: one-row answers, as
most are; an answer of n rows counts n)."""
MAX_ITEMS = 10_000
"""Items in one feedback batch."""
MAX_BODY_BYTES = 2 << 20
"""Bytes of one feedback body, decoded: twice a batch of MAX_ITEMS items with 36-character ids
and 20-class truths (about 1 MB). Beyond it a 413, before any parsing: a body at the gateway's
request limit (64 MiB) made about 3 million items, 650 MB of Python objects and seconds of
parsing before MAX_ITEMS could refuse it."""
MAX_ID_LENGTH = 256
MAX_LABEL_LENGTH = 256
PROBABILITY_TOLERANCE = 1e-3
"""How far from 1 a row's values may sum and still be read as probabilities."""
_UNREADABLE = (ServingError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)
"""What parsing an answer of the wrong shape raises."""

Truth = int | str
Row = tuple[int | None, str | None, float | None]
"""One row's top class: its index, its label, and its probability, each None when not known."""


@dataclass(frozen=True)
class FeedbackSettings:
    """``spec.feedback`` of a ModelDeployment: keep its answers for feedback."""

    output: str | None = None
    """The output the class is read from; None: the answer's first output."""

    @classmethod
    def of(cls, spec: Mapping[str, Any] | None) -> FeedbackSettings | None:
        """From ``spec.feedback`` as the API server stores it; None when it is not set."""
        if not isinstance(spec, Mapping):
            return None
        output = spec.get("output")
        return cls(output if isinstance(output, str) else None)


def predicted(
    body: bytes, header_length: str | None, output: str | None
) -> tuple[str, tuple[Row, ...], int | None] | None:
    """The answer's id, each row's top class, and how many classes the output can name (its
    columns, 2 for a binary score; None when the answer does not say: class indices, the
    classification extension's top classes, labels), read as the module says; None when the
    answer has no id or no class can be read from it. A JSON answer is read with ``json`` alone (a
    classifier's few values a row cost less as Python lists than as numpy arrays); a binary one
    through the protocol's decoder."""
    try:
        if header_length is None:
            header = json.loads(body)
            tensor = _json_tensor(header, output)
        else:
            header, arrays = decode_response(body, header_length)
            array = arrays[output if output is not None else header["outputs"][0]["name"]]
            kind = {"f": "f", "i": "i", "u": "i", "b": "i", "O": "s"}[array.dtype.kind]
            values = array.reshape(-1).tolist()
            if kind == "s":
                values = [v.decode() for v in values]
            tensor = (kind, tuple(array.shape), values)
        answer_id = header.get("id")
        rows = _rows(*tensor)
    except _UNREADABLE:
        return None
    if not isinstance(answer_id, str) or not answer_id or len(answer_id) > MAX_ID_LENGTH:
        return None
    kind, shape, _ = tensor
    classes = None if kind != "f" else shape[-1] if shape and shape[-1] > 1 else 2
    return (answer_id, rows, classes) if rows else None


_KINDS = {"FP16": "f", "FP32": "f", "FP64": "f", "BF16": "f", "BOOL": "i", "BYTES": "s"}
"""The kind of values of each Open Inference Protocol datatype (``i`` for the integer types too)."""


def _json_tensor(header: Mapping[str, Any], output: str | None) -> tuple[str, tuple[int, ...], list[Any]]:
    """(kind, shape, flat values) of the output named ``output`` (else the first) of a JSON
    answer. Raises ``ValueError`` (or another of ``_UNREADABLE``) when it is not one."""
    outputs = header["outputs"]
    tensor = outputs[0] if output is None else next((t for t in outputs if t["name"] == output), None)
    if tensor is None:
        raise KeyError(f"no output {output!r}")
    datatype, shape, data = tensor["datatype"], tuple(tensor["shape"]), tensor["data"]
    kind = _KINDS.get(datatype) or ("i" if datatype.startswith(("INT", "UINT")) else "")
    while data and isinstance(data[0], list):  # the protocol allows nested data too
        data = [v for row in data for v in row]
    valid = {"f": (int, float), "i": (int,), "s": (str,)}.get(kind)
    if valid is None or len(data) != math.prod(shape) or not all(isinstance(v, valid) for v in data):
        raise ValueError(f"output {tensor['name']!r} is not a readable {datatype} tensor")
    return kind, shape, data


def _rows(kind: str, shape: tuple[int, ...], values: list[Any]) -> tuple[Row, ...] | None:
    if kind == "f" and shape and shape[-1] > 1:
        width, rows = shape[-1], []
        for start in range(0, len(values), width):
            scores = values[start : start + width]
            if not all(math.isfinite(v) for v in scores):
                return None
            best = max(scores)
            probability = all(0 <= v <= 1 for v in scores) and abs(math.fsum(scores) - 1) <= PROBABILITY_TOLERANCE
            rows.append((scores.index(best), None, float(best) if probability else None))
        return tuple(rows)
    if kind == "f":
        if not all(math.isfinite(p) for p in values):
            return None
        return tuple((int(p >= 0.5), None, max(p, 1 - p) if 0 <= p <= 1 else None) for p in values)
    if kind == "i":
        return tuple((int(v), None, None) for v in values)
    return _text_rows(shape, values)


def _text_rows(shape: tuple[int, ...], values: list[str]) -> tuple[Row, ...] | None:
    """Rows of a BYTES output: the classification extension's top class per row (the first of
    each row's "value:index[:label]"), else one label per element when it has one per row."""
    count = shape[0] if len(shape) > 1 else 1
    width = len(values) // count if count else 0
    rows: list[Row] = []
    for text in values[::width] if width else ():
        value, _, rest = text.partition(":")
        index, _, label = rest.partition(":")
        try:
            score, position = float(value), int(index)
        except ValueError:
            break
        rows.append((position, label or None, score if 0 <= score <= 1 else None))
    else:
        return tuple(rows)
    if len(shape) == 1 or width == 1:  # not classification: one label per row
        return tuple((None, label, None) for label in values)
    return None


def _right(row: Row, truth: Truth) -> bool:
    index, label, _ = row
    if isinstance(truth, int):
        return index == truth or label == str(truth)
    return label == truth or (index is not None and truth.isascii() and truth.isdigit() and int(truth) == index)


def _unfit(row: Row, truth: Truth, classes: int | None) -> bool:
    """Whether ``truth`` cannot name a class the answer's row could have given: a negative
    index, one beyond the output's ``classes``, or text that is no index where the row has
    only an index. Such a truth says nothing about the revision: counted, it would be a wrong
    answer the model could not have avoided."""
    index, label, _ = row
    if index is None or (isinstance(truth, str) and label is not None):
        return False  # compared as text to the row's label, which may be any text
    if isinstance(truth, str):
        if not (truth.isascii() and truth.isdigit()):
            return True
        truth = int(truth)
    return truth < 0 or (classes is not None and truth >= classes)


@dataclass(frozen=True)
class Item:
    """One feedback item: the id of an answer and its truth, one class per row."""

    id: str
    truth: tuple[Truth, ...]
    single: bool
    """The truth was given as one class, not a list: it fits a one-row answer only."""


def _truth(value: Any, where: str) -> Truth:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"{where}: a class is an integer index or a string label, not {json.dumps(value)[:64]}")
    if isinstance(value, str) and not 0 < len(value) <= MAX_LABEL_LENGTH:
        raise InvalidInput(f"{where}: a label has 1 to {MAX_LABEL_LENGTH} characters")
    return value


def _item(value: Any, where: str) -> Item:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be an object with id and truth")
    unknown = set(value) - {"id", "truth"}
    if unknown:
        raise InvalidInput(f"{where} has unknown fields {sorted(unknown)}; it takes id and truth")
    answer_id, truth = value.get("id"), value.get("truth")
    if not isinstance(answer_id, str) or not 0 < len(answer_id) <= MAX_ID_LENGTH:
        raise InvalidInput(f"{where}: id must be the answer's id, a string of 1 to {MAX_ID_LENGTH} characters")
    if truth is None:
        raise InvalidInput(f"{where}: truth is required")
    if isinstance(truth, list):
        if not truth:
            raise InvalidInput(f"{where}: truth must name a class for each row of the answer, not an empty list")
        return Item(answer_id, tuple(_truth(t, f"{where}: truth[{i}]") for i, t in enumerate(truth)), single=False)
    return Item(answer_id, (_truth(truth, f"{where}: truth"),), single=True)


def parse(body: bytes) -> tuple[list[Item], bool]:
    """The items of a feedback body and whether it was a batch (a list). Raises ``InvalidInput``
    for anything else, or a batch that names an id twice: nothing of it is taken."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInput('the body must be JSON: {"id": ..., "truth": ...} or a list of them') from None
    if not isinstance(value, list):
        return [_item(value, "the feedback")], False
    if not 0 < len(value) <= MAX_ITEMS:
        raise InvalidInput(f"a feedback batch has 1 to {MAX_ITEMS} items, not {len(value)}")
    items = [_item(v, f"item {i}") for i, v in enumerate(value)]
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InvalidInput(f"id {item.id!r} appears twice in the batch: an answer takes one truth")
        seen.add(item.id)
    return items, True


Kept = tuple[str, tuple[Row, ...], int | None, float, str]
"""One answer kept for feedback: the revision that answered, its rows, how many classes its
output can name (None: not known), when (the store's clock), and its state: open, given (its
truth came) or ambiguous (its id answered again). A plain tuple of strings, numbers and tuples
of them: the garbage collector stops tracking such tuples, so a full store adds nothing to its
collections (a class instance each would be traversed at every full collection)."""


class Feedback:
    """The kept answers of one gateway replica, and the feedback they take."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        capacity: int = DEFAULT_CAPACITY,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or not 0 < window < math.inf:
            raise ValueError(
                f"the feedback store needs a capacity above 0 and a finite window above 0, not {capacity}, {window}"
            )
        self.metrics, self.capacity, self.window, self.clock = metrics, capacity, window, clock
        self.kept: OrderedDict[tuple[str, str], Kept] = OrderedDict()
        """By (model name, answer id), oldest first."""
        self.rows = 0
        """Rows of the kept answers: the store's bound (``capacity``)."""

    def keep(self, route: Route, answer: Answer) -> None:
        """Keep ``answer`` (a revision's 200 to an inference request on ``route``, which has
        ``feedback``) by its id; an id answered before is ambiguous from now on."""
        assert route.feedback is not None and answer.backend is not None
        body = answer.readable_body() or b""  # None: not read on the event loop
        read = predicted(body, answer.headers.get(HEADER_LENGTH), route.feedback.output)
        if read is None or len(read[1]) > self.capacity:  # the latter would empty the store
            self.metrics.answer_unreadable(route, answer.backend)
            return
        answer_id, rows, classes = read
        self.metrics.answer_kept(route, answer.backend)
        key = (route.model, answer_id)
        before = self.kept.get(key)
        if before is not None:
            self.kept[key] = (*before[:4], "ambiguous")
            return
        self.kept[key] = (answer.backend.revision, rows, classes, self.clock(), "open")
        self.rows += len(rows)
        while self.rows > self.capacity:
            _, dropped = self.kept.popitem(last=False)
            self.rows -= len(dropped[1])

    def take(self, route: Route, items: list[Item], batch: bool) -> tuple[int, dict[str, Any]]:
        """Take the items of a feedback body ``parse`` read, for ``route``'s model: the status
        and JSON body of the answer."""
        results = [self._one(route, item) for item in items]
        if not batch:
            return results[0]["status"], results[0]
        taken = all(r["status"] == 200 for r in results)
        return (200 if taken else 207), {"results": results}

    def _one(self, route: Route, item: Item) -> dict[str, Any]:
        key = (route.model, item.id)
        kept = self.kept.get(key)
        if kept is None:
            return self._refused(route, item, 404, "unknown", f"no answer of model {route.model!r} with id {item.id!r}")
        revision, kept_rows, classes, at, state = kept
        if self.clock() - at > self.window:
            message = f"the answer {item.id!r} is older than the feedback window ({self.window:g}s)"
            return self._refused(route, item, 404, "late", message)
        if state == "given":
            return self._refused(route, item, 409, "duplicate", f"the answer {item.id!r} already has its truth")
        if state == "ambiguous":
            message = f"the id {item.id!r} answered more than one request: the truth cannot be matched to one"
            return self._refused(route, item, 409, "ambiguous", message)
        rows = len(kept_rows)
        if rows != len(item.truth) or (item.single and rows != 1):
            message = f"the answer {item.id!r} has {rows} row(s): give a list of {rows} class(es) as truth"
            return self._refused(route, item, 400, "invalid", message)
        unfit = [
            (i, t) for i, (row, t) in enumerate(zip(kept_rows, item.truth, strict=True)) if _unfit(row, t, classes)
        ]
        if unfit:
            row_index, truth = unfit[0]
            names = f"classes 0 to {classes - 1}" if classes is not None else "class indices from 0"
            message = (
                f"the truth {truth!r} of row {row_index} is not a class the answer {item.id!r} could give ({names})"
            )
            return self._refused(route, item, 400, "invalid", message)
        self.kept[key] = (revision, kept_rows, classes, at, "given")
        right = 0
        for row, truth in zip(kept_rows, item.truth, strict=True):
            correct = _right(row, truth)
            right += correct
            self.metrics.feedback(route, revision, correct, row[2])
        return {"id": item.id, "status": 200, "revision": revision, "rows": rows, "correct": right}

    def _refused(self, route: Route, item: Item, status: int, reason: str, message: str) -> dict[str, Any]:
        self.metrics.feedback_refused(route, reason)
        return {"id": item.id, "status": status, "reason": reason, "error": message}
