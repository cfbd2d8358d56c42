"""What every SafetyPolicy filter is: a detector that reads one text and says what it found.

A detector knows nothing of HTTP, chat bodies, tensors, actions or metrics. The policy engine
(``serving/safety/policy.py``) takes the texts out of a request or response, hands each to the
detectors its scope selects, and applies the policy's action (block, escalate, redact, disclaim,
flag) to what they return; it also counts and audits the findings.

A detector is built once per policy generation from its API spec (``cutover.api.v1alpha1.
safetypolicy``) and then called concurrently from one event loop: ``scan`` must be pure CPU,
deterministic, thread-safe and fast (the whole policy has a budget of 2 ms p50 for a 300-character
message), and must never raise on any ``str`` (empty, huge, any script, lone surrogates). An
exception out of ``scan`` is a filter error: the engine counts it and, with ``failClosed``,
refuses the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Direction = Literal["input", "output"]
"""Which way a text travels: ``input`` is what the client sent (chat messages, request
tensors), ``output`` what the model answered. The API's ``scope`` (inputs, outputs, both)
selects directions."""

FilterName = Literal["crisis", "toxicity", "pii", "advice", "bias"]
"""The filters of a SafetyPolicy, as the API names them; the ``filter`` label of the metrics."""


@dataclass(frozen=True)
class Finding:
    """One thing a detector found in one text.

    ``filter`` is the detector's name; ``category`` the API's name for what was found (crisis:
    ``selfHarm``, ``suicidalIdeation``, ``violence``; toxicity: ``toxicity``; pii: the entity,
    such as ``email``; advice: the domain, ``medical``, ``legal`` or ``financial``; bias: the
    kind of bias the bias filter documents). ``score`` is in [0, 1]: a calibrated probability
    where the detector has one, else 1.0 for a rule's certain match. ``spans`` are ``(start,
    end)`` character offsets into the scanned text, needed only where the action edits the
    text (PII redaction); other detectors may leave them empty."""

    filter: FilterName
    category: str
    score: float
    spans: tuple[tuple[int, int], ...] = ()


class Detector(Protocol):
    """A filter's detector, built from its API spec. ``name`` is its :data:`FilterName`."""

    name: FilterName

    def scan(self, text: str, direction: Direction) -> list[Finding]:
        """What this detector finds in ``text`` (already a ``str``; the engine decodes bytes),
        travelling ``direction``. Only findings at or above the spec's threshold and of the
        categories the spec selects are returned; an empty list means nothing found."""
        ...
