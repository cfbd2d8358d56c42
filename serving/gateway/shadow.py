"""Whether a mirrored (shadow) answer agrees with the live one, per the ModelDeployment's
``spec.strategy.shadow.agreement`` and ``tolerance``. Pure functions over response bodies, so
each rule is tested without a network; the gateway counts the outcome per revision
(``cutover_gateway_shadow_comparisons_total``) and the operator gates promotion on the share
that agreed (``minAgreement``).

Open Inference Protocol answers (``/v2/models/.../infer``): both answers must have the same
outputs with the same shapes, and then

- ``top1``: each row's predicted class agrees: the arg-max over the last axis of a floating
  output with more than one column, the value itself of an integer, boolean or string output
  (a label); a floating output with one column (a score or a regression) agrees within
  ``tolerance``, as ``numeric``.
- ``numeric``: every element of every output is within ``tolerance`` (absolute difference);
  non-numeric outputs are equal. Missing values (``null``, NaN) agree only with each other.

The divergence reported beside it is the largest absolute difference over the numeric outputs.

LLM chat answers (``/v1/chat/completions``, with or without a query string; a JSON completion or
a streamed one, whose ``data:`` chunks are assembled into the message they carry): a sampled model
seldom says the same thing in the same words twice, so text equality measured sampling, not the
candidate. Both answers are normalised (Unicode NFKC, case-folded, punctuation dropped, split
into words), and then

- ``top1``: the first words agree: the answer's label when the prompt asks for one (yes/no, a
  category, a grade), which sampling at a sensible temperature does not flip unless the model
  is itself unsure.
- ``numeric``: the word overlap is high enough: 1 - F1 of the two answers' words (the
  bag-of-words F1 that question-answering benchmarks score answers with) is at most
  ``tolerance``, which here is the share of words that may differ (0 to 1; 0.5 suits
  free-form answers). The divergence reported is that 1 - F1.

The text of a message is its ``content``, or the text parts of a content given as a list of
parts. An answer that calls tools is compared by the names of the functions it calls, in order
(its text, usually null, says nothing): the same calls agree, under either rule.

Two empty texts agree; an empty text and a non-empty one do not.

Not every pair can be compared, and a pair that cannot is not counted at all (``None``), neither
as agreement nor as disagreement: a live answer that cannot be read (an unknown format, a stream
cut short) or that has no output (inference without outputs, chat with neither content nor tool
calls) is no reference. A mirrored answer that cannot be read, or has no output, when the live
one has disagrees: the candidate failed to answer what the live revision answered.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ServingError
from ..protocol import decode_response

log = logging.getLogger("cutover.gateway")
Agreement = Literal["top1", "numeric"]
_WORD = re.compile(r"\w+")
_UNREADABLE = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)
"""What parsing an answer of the wrong shape raises (a list where an object belongs, and so on)."""


@dataclass(frozen=True)
class Comparison:
    """How mirrored answers are compared: ``spec.strategy.shadow.agreement`` and ``tolerance``."""

    agreement: Agreement = "top1"
    tolerance: float = 1e-3

    @classmethod
    def of(cls, shadow: Mapping[str, Any] | None) -> Comparison:
        """From a ``spec.strategy.shadow`` object as the API server stores it (the API's
        defaults where a field is absent or unusable)."""
        shadow = shadow or {}
        agreement = shadow.get("agreement", "top1")
        tolerance = shadow.get("tolerance", 1e-3)
        valid = isinstance(tolerance, int | float) and not isinstance(tolerance, bool) and tolerance >= 0
        return cls(
            agreement if agreement in ("top1", "numeric") else "top1",
            float(tolerance) if valid else 1e-3,
        )


@dataclass(frozen=True)
class Outcome:
    agree: bool
    divergence: float | None = None
    """The largest absolute difference (inference) or 1 - word F1 (chat); None when not measured."""


def compare_inference(
    live: bytes, live_length: str | None, mirror: bytes, mirror_length: str | None, rule: Comparison
) -> Outcome | None:
    """Compare two Open Inference Protocol answers (JSON, or binary with ``Inference-Header-Content-Length``);
    None when they cannot be compared (the live answer cannot be decoded or has no outputs)."""
    try:
        _, ours = decode_response(live, live_length)
    except (ServingError, *_UNREADABLE):
        return None
    if not ours:
        return None
    try:
        _, theirs = decode_response(mirror, mirror_length)
    except (ServingError, *_UNREADABLE):
        return Outcome(False)
    if ours.keys() != theirs.keys():
        return Outcome(False)
    agree, divergence = True, 0.0 if ours else None
    for name, a in ours.items():
        b = theirs[name]
        if a.shape != b.shape:
            return Outcome(False)
        numeric = a.dtype.kind in "fiub" and b.dtype.kind in "fiub"
        if not numeric:
            agree = agree and bool(np.array_equal(a, b))
            continue
        x, y = a.astype(np.float64), b.astype(np.float64)
        close = np.isclose(x, y, rtol=0.0, atol=rule.tolerance, equal_nan=True)
        difference = _largest_difference(x, y)
        if divergence is not None:
            divergence = None if difference is None else max(divergence, difference)
        if rule.agreement == "top1" and a.dtype.kind == "f" and a.ndim >= 1 and a.shape[-1] > 1:
            agree = agree and _same_class(x, y)
        elif rule.agreement == "top1" and a.dtype.kind in "iub" and b.dtype.kind in "iub":
            agree = agree and bool(np.array_equal(a, b))
        else:
            agree = agree and bool(close.all())
    return Outcome(agree, divergence)


def _largest_difference(x: np.ndarray, y: np.ndarray) -> float | None:
    """The largest absolute difference, ignoring places where both are missing; None when only
    one of them is (no finite difference says how far apart that is)."""
    both_missing = np.isnan(x) & np.isnan(y)
    difference = np.abs(x - y)[~both_missing]
    if difference.size == 0:
        return 0.0
    largest = float(difference.max())
    return largest if np.isfinite(largest) else None


def _same_class(x: np.ndarray, y: np.ndarray) -> bool:
    """Each row's arg-max over the last axis is the same; a row with a missing score disagrees."""
    if np.isnan(x).any() or np.isnan(y).any():
        return bool(np.array_equal(x, y, equal_nan=True))
    return bool((x.argmax(axis=-1) == y.argmax(axis=-1)).all())


@dataclass(frozen=True)
class ChatAnswer:
    """What a chat completion's first choice says: the normalised words of its text (None when
    it has no text) and the names of the functions it calls, in order."""

    words: list[str] | None
    tools: tuple[str, ...] = ()

    @property
    def has_output(self) -> bool:
        return self.words is not None or bool(self.tools)


def chat_answer(body: bytes) -> ChatAnswer:
    """The first choice of an OpenAI chat completion: a JSON completion or a streamed one
    (``data:`` lines of chunks whose deltas are assembled). Raises ``ValueError`` for a body
    that is neither."""
    try:
        if body.lstrip()[:1] == b"{":
            choices = json.loads(body)["choices"]
            message = (choices[0] if choices else {}).get("message") or {}
            return _answer(message.get("content"), message.get("tool_calls"))
        return _streamed(body)
    except _UNREADABLE as error:
        raise ValueError(f"not a chat completion: {error!r}") from None


def _streamed(body: bytes) -> ChatAnswer:
    """Assemble a streamed completion's first choice from its server-sent events."""
    parts: list[str] = []
    tools: dict[int, str] = {}
    events = 0
    for line in body.decode("utf-8").splitlines():
        if not line.startswith("data:"):
            continue  # blank lines, comments, event names
        data = line[5:].strip()
        if data == "[DONE]":
            break
        events += 1
        for choice in json.loads(data).get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content is not None:
                parts.append(_text(content))
            for call in delta.get("tool_calls") or []:
                name = (call.get("function") or {}).get("name")
                if name:
                    index = call.get("index", len(tools))
                    tools[index] = tools.get(index, "") + str(name)
    if not events:
        raise ValueError("no data: events")
    text = "".join(parts) if parts else None
    return ChatAnswer(_words(text), tuple(tools[i] for i in sorted(tools)))


def _answer(content: Any, tool_calls: Any) -> ChatAnswer:
    names = tuple(str((call.get("function") or {}).get("name")) for call in tool_calls or [])
    return ChatAnswer(_words(None if content is None else _text(content)), names)


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    return str(content)


def _words(text: str | None) -> list[str] | None:
    return None if text is None else _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def chat_words(body: bytes) -> list[str]:
    """The first choice's text of a chat completion, normalised into words ([] when it has none).
    Raises ``ValueError`` for a body that is not a chat completion."""
    return chat_answer(body).words or []


def word_f1(a: list[str], b: list[str]) -> float:
    """F1 of the two bags of words (1 when both are empty)."""
    if not a and not b:
        return 1.0
    common = sum((Counter(a) & Counter(b)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(b), common / len(a)
    return 2 * precision * recall / (precision + recall)


def compare(
    path: str, live: bytes, live_length: str | None, mirror: bytes | None, mirror_length: str | None, rule: Comparison
) -> Outcome | None:
    """Compare the mirrored answer to a request with the live revision's 200 answer to it: as a
    chat completion when ``path`` (with or without its query) ends in ``/chat/completions``, else
    as an Open Inference Protocol answer (``*_length``: their ``Inference-Header-Content-Length``).

    ``mirror`` is None when the mirror did not answer 200 (or at all), which disagrees: it failed
    where the live revision answered. A pair of a shape the comparison did not foresee (it raised)
    disagrees too, never agrees. None when the pair cannot be compared (see the module docstring)."""
    if mirror is None:
        return Outcome(False)
    try:
        if path.partition("?")[0].endswith("/chat/completions"):
            return compare_chat(live, mirror, rule)
        return compare_inference(live, live_length, mirror, mirror_length, rule)
    except Exception as error:
        log.warning("comparing the answers to %s failed: %r", path, error)
        return Outcome(False)


def compare_chat(live: bytes, mirror: bytes, rule: Comparison) -> Outcome | None:
    """Compare two chat completions as the module docstring says; None when they cannot be
    compared (the live answer cannot be read or has no output)."""
    try:
        ours = chat_answer(live)
    except ValueError:
        return None
    if not ours.has_output:
        return None
    try:
        theirs = chat_answer(mirror)
    except ValueError:
        return Outcome(False)
    if ours.tools or theirs.tools:
        return Outcome(ours.tools == theirs.tools)
    if theirs.words is None:
        return Outcome(False)
    assert ours.words is not None
    distance = 1.0 - word_f1(ours.words, theirs.words)
    if rule.agreement == "top1":
        return Outcome(ours.words[:1] == theirs.words[:1], distance)
    return Outcome(distance <= rule.tolerance, distance)
