"""Small fake detectors for the policy engine's tests: one builder for every filter (``detector``,
the signature of ``serving/safety/<filter>.py``), reading plain marker phrases, so a test knows
exactly what each filter finds. The text ``BOOM`` makes any of them raise.

Use with ``fake_builders`` (a ``BUILDERS`` mapping that points every filter here)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cutover.api.v1alpha1.safetypolicy import AdviceFilter, BiasFilter, CrisisFilter, PiiFilter, ToxicityFilter
from cutover.serving.safety.base import Direction, FilterName, Finding

MARKERS: dict[FilterName, dict[str, tuple[str, float]]] = {
    "crisis": {
        "want to die": ("suicidalIdeation", 0.97),
        "hurt myself": ("selfHarm", 0.9),
        "shoot them": ("violence", 0.85),
    },
    "toxicity": {"idiot": ("toxicity", 0.95), "silly": ("toxicity", 0.5)},
    "advice": {"take 800 mg": ("medical", 0.92), "sue them": ("legal", 0.88), "buy this stock": ("financial", 0.9)},
    "bias": {"are all lazy": ("nationality", 0.9)},
}
EMAIL = re.compile(r"[\w.]+@[\w.]+\.\w+")
CARD = re.compile(r"\b4\d{15}\b")
NAMES: dict[type, FilterName] = {
    CrisisFilter: "crisis",
    ToxicityFilter: "toxicity",
    PiiFilter: "pii",
    AdviceFilter: "advice",
    BiasFilter: "bias",
}
BUILT: list[FilterName] = []
"""Every detector built, in order (tests read it to see caching and lazy building)."""


@dataclass
class Fake:
    """Finds the :data:`MARKERS` of its filter (PII: emails and 16-digit cards starting 4, with
    spans), limited to ``categories`` and at or above ``threshold``."""

    name: FilterName
    categories: tuple[str, ...]
    threshold: float

    def scan(self, text: str, direction: Direction) -> list[Finding]:
        if "BOOM" in text:
            raise RuntimeError(f"{self.name} detector exploded")
        found: list[Finding] = []
        if self.name == "pii":
            for entity, pattern in (("email", EMAIL), ("creditCard", CARD)):
                if entity in self.categories:
                    found += [Finding("pii", entity, 1.0, (m.span(),)) for m in pattern.finditer(text)]
            return found
        lowered = text.lower()
        for marker, (category, score) in MARKERS[self.name].items():
            if marker in lowered and category in self.categories and score >= self.threshold:
                found.append(Finding(self.name, category, score))
        return found


def detector(spec: Any) -> Fake:
    name = NAMES[type(spec)]
    BUILT.append(name)
    categories = getattr(
        spec, {"crisis": "categories", "pii": "entities", "advice": "domains"}.get(name, "categories"), None
    )
    threshold = getattr(spec, "threshold", 0.8)
    return Fake(name, tuple(categories) if categories is not None else ("toxicity",), threshold)


fake_builders: dict[FilterName, str] = {name: __name__ for name in ("crisis", "toxicity", "pii", "advice", "bias")}
