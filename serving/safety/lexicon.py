"""Word lists of the advice and bias filters, read from ``serving/safety/data/*.txt`` and compiled
into one regular expression each, and the sentence cue both filters share (is it a question?).

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
_QUESTION_START = re.compile(
    r"^(?:how|what|whats|why|when|where|which|who|is|are|am|can|could|should i|should we|do|does|did|"
    r"will|would|may|might|que|como|cuanto|puedo|debo|wie|was|warum|kann|soll ich|darf|est-ce|"
    r"comment|pourquoi|combien|puis-je|dois-je)\b"
)


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


def is_question(raw: str, text: str) -> bool:
    """Whether a sentence asks rather than tells: it ends with ``?`` (or opens with ``¿``), or it
    opens with a question word (en, es, de, fr) and does not end with ``.`` or ``!``. ``text`` is
    the normalised sentence."""
    raw = raw.strip()
    if raw.endswith("?") or raw.startswith("¿"):
        return True
    # "When choosing between two candidates, ..." opens with a question word and tells; a
    # question typed without its "?" ends without a full stop too.
    return not raw.endswith((".", "!")) and bool(_QUESTION_START.match(text))
