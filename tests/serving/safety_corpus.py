"""Checks every filter's corpus should pass: sizes, labels and languages, and train and test
splits with no line, and no near-copy of a hand-written line, on both sides."""

from __future__ import annotations

import re
from collections.abc import Iterable

from cutover.serving.safety import learned

NEAR_COPY = 0.6
"""Word overlap (Jaccard) above which two hand-written lines count as one written twice."""


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def check_corpus(
    filter_name: str, labels: Iterable[str], train_lines: int = 800, test_lines: int = 250
) -> tuple[list[learned.Example], list[learned.Example]]:
    """The corpus's train and test splits, after asserting their sizes, that every label is one
    of ``labels``, every line's language and direction valid, every language in both splits, and
    that no test line copies or nearly copies a hand-written training line."""
    train, test = learned.read_corpus(filter_name, "train"), learned.read_corpus(filter_name, "test")
    assert len(train) >= train_lines and len(test) >= test_lines
    allowed = set(labels)
    for example in train + test:
        assert set(example.labels) <= allowed, example
        assert example.lang in {"en", "es", "de", "fr"} and example.direction in {"input", "output"}
    for split in (train, test):
        assert {e.lang for e in split} == {"en", "es", "de", "fr"}
    assert not {e.text for e in train} & {e.text for e in test}
    originals = [words(e.text) for e in train if not e.note.startswith("composed")]
    for example in test:
        if example.note.startswith("composed"):
            continue
        seen = words(example.text)
        assert all(len(seen & other) / len(seen | other) <= NEAR_COPY for other in originals), example.text
    return train, test
