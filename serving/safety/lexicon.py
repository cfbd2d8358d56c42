"""Word lists of the advice and bias filters, read from ``serving/safety/data/*.txt`` and compiled
into one regular expression each.

A list file holds one term per line; ``#`` starts a comment line. Each term is passed through the
shared normaliser (so it is written as users write it, accents and all, and matched against
normalised text) and matched at word boundaries; a trailing ``*`` matches any ending
(``antibiotic*`` matches ``antibiotics``). Longer terms are tried first, so ``payday loan`` wins
over ``loan``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from .normalise import normalise

DATA = Path(__file__).parent / "data"


def terms(name: str) -> list[str]:
    """The normalised terms of ``data/<name>.txt`` in file order, without comments or blank
    lines. Raises ``FileNotFoundError`` when there is no such list."""
    out = []
    for line in (DATA / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        wildcard = line.endswith("*")
        term = normalise(line.rstrip("*"))
        out.append(term + ("*" if wildcard else ""))
    return out


def alternation(words: list[str]) -> str:
    """A regular-expression alternation of ``words`` (each as :func:`terms` gives it), longest
    first, without boundaries: callers add the context they need."""
    parts = []
    for word in sorted(set(words), key=len, reverse=True):
        stem = word.rstrip("*")
        parts.append(re.escape(stem) + (r"\w*" if word.endswith("*") else ""))
    return "|".join(parts)


@cache
def matcher(name: str) -> re.Pattern[str]:
    """A pattern that finds any term of ``data/<name>.txt`` as a whole word (or word sequence) in
    normalised text; compiled once per process."""
    return re.compile(rf"(?<!\w)(?:{alternation(terms(name))})(?!\w)")
