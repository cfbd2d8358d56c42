"""The PII filter: the personal data that ``serving/pii.py`` finds, as SafetyPolicy findings.

``serving/pii.py`` owns the readers (checksums, number plans, helplines, the rule that a candidate
one reader rejected is not re-read by a weaker one); this module only adapts them to the
:class:`~cutover.serving.safety.base.Detector` protocol. One :class:`Finding` per entity found in a
text, its ``category`` the API's entity name (``email``, ``phone``, ``creditCard``, ``ssn``,
``ipAddress``, ``iban``, ``personName``, ``address``), its ``spans`` every ``(start, end)`` of that
entity in the raw text (the engine replaces them with ``[REDACTED:<entity>]``) and its ``score``
the highest confidence among them (:data:`cutover.serving.pii.SCORES`: 1.0 where a checksum or
number plan confirmed it, 0.8 to 0.9 for a rule without one).

PII reads the raw text, never the normalised one: redaction needs offsets into what the client
sent or the model answered, and normalising would join digits and letters that were apart.
Inputs and outputs are read alike; public helplines are never findings in either direction.
"""

from __future__ import annotations

from dataclasses import dataclass

from cutover.api.v1alpha1.safetypolicy import PiiFilter

from .. import pii
from .base import Direction, FilterName, Finding

MIN_SCORE = 0.5
"""The score at or above which a match is a finding. PiiFilter has no threshold field; every rule
of ``serving/pii.py`` scores 0.8 or more, so today this keeps them all; it is the floor a future
lower-confidence rule would have to clear."""


@dataclass(frozen=True)
class PiiDetector:
    """Finds the ``entities`` of a PiiFilter in a text. With no entities (a disabled filter) it
    finds nothing."""

    entities: frozenset[str]
    name: FilterName = "pii"

    def scan(self, text: str, direction: Direction) -> list[Finding]:
        """One finding per entity found in ``text``, in the order the entities first occur, each
        with all of its spans. ``direction`` does not change what is found."""
        if not self.entities or not text:
            return []
        spans: dict[str, list[tuple[int, int]]] = {}
        scores: dict[str, float] = {}
        for match in pii.find(text, self.entities):
            if match.score < MIN_SCORE:
                continue
            spans.setdefault(match.entity, []).append((match.start, match.end))
            scores[match.entity] = max(scores.get(match.entity, 0.0), match.score)
        return [Finding("pii", entity, scores[entity], tuple(found)) for entity, found in spans.items()]


def detector(spec: PiiFilter) -> PiiDetector:
    """The detector for ``spec``: its ``entities`` (the API's default leaves ``personName``,
    ``address`` and ``iban`` out), or none when the filter is disabled. Cheap: the patterns are
    compiled at import and the name lists read once per process."""
    return PiiDetector(frozenset(spec.entities) if spec.enabled else frozenset())
