"""The learned half of the text filters: a fastText classifier trained, when a filter is first
built, on the project's own labelled corpus (``serving/safety/corpus/<filter>/train.jsonl``).

No weights are downloaded or stored: a model is trained in memory in well under a second on one
thread with a fixed seed, so the same corpus always gives the same model, in the tests, the
benchmarks and every serving process. fastText's character n-grams (2-5) absorb typos, leetspeak
left over after normalisation and inflections that keyword lists miss; word bigrams keep "kill
it" apart from "kill myself".

Source: Joulin et al., "Bag of Tricks for Efficient Text Classification" (EACL 2017); the library
is ``fasttext-numpy2-wheel``, a NumPy 2 build of facebookresearch/fastText 0.9.2.

Corpus lines are JSON objects::

    {"text": "...", "labels": ["suicidalIdeation"], "lang": "en", "direction": "input", "note": "..."}

``labels`` empty means a negative (nothing to find); ``lang`` is en, es, de or fr; ``direction``
input or output; ``note`` optional (for example ``hard negative: idiom``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).parent / "corpus"
NEGATIVE = "none"
"""The label a negative example trains as."""
_TRAIN = (
    "import fasttext, json, sys; "
    "fasttext.train_supervised(sys.argv[1], **json.loads(sys.argv[3])).save_model(sys.argv[2])"
)


@dataclass(frozen=True)
class Example:
    """One labelled line of a corpus: ``labels`` empty for a negative."""

    text: str
    labels: tuple[str, ...] = ()
    lang: str = "en"
    direction: str = "input"
    note: str = ""


def read_corpus(filter_name: str, split: str) -> list[Example]:
    """The examples of ``corpus/<filter_name>/<split>.jsonl`` (split: train or test). Raises
    ``FileNotFoundError`` when there is none and ``ValueError`` naming the line that is not a
    valid example."""
    path = CORPUS / filter_name / f"{split}.jsonl"
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            examples.append(
                Example(
                    text=raw["text"],
                    labels=tuple(raw.get("labels", ())),
                    lang=raw.get("lang", "en"),
                    direction=raw.get("direction", "input"),
                    note=raw.get("note", ""),
                )
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a corpus example: {error}") from None
    return examples


@dataclass(frozen=True)
class Params:
    """fastText training parameters. ``bucket`` and ``dim`` bound the model's memory (bucket x dim
    x 4 bytes: 3.2 MB by default; fastText's own default would take 800 MB per model)."""

    epoch: int = 30
    lr: float = 0.5
    dim: int = 16
    bucket: int = 50_000
    minn: int = 2
    maxn: int = 5
    word_ngrams: int = 2
    seed: int = 7


@dataclass
class Classifier:
    """A trained fastText model: ``probabilities(text)`` maps every label to its probability
    (softmax over the labels; they sum to 1). Thread-safe for prediction."""

    model: Any
    labels: tuple[str, ...] = field(default=())

    def probabilities(self, text: str) -> dict[str, float]:
        """Each label's probability for ``text`` (newlines are read as spaces; fastText reads one
        line). Labels are the corpus's, plus :data:`NEGATIVE`."""
        line = " ".join(text.split())
        names, values = self.model.predict(line, k=-1)
        return {name.removeprefix("__label__"): float(value) for name, value in zip(names, values, strict=True)}


def train(
    examples: Iterable[Example],
    params: Params = Params(),
    prepare: Callable[[str], str] = lambda text: text,
    label: Callable[[Example], Sequence[str]] = lambda example: example.labels,
) -> Classifier:
    """A classifier trained on ``examples``, each text passed through ``prepare`` (the filter's
    normaliser) and labelled by ``label`` (by default its own labels; :data:`NEGATIVE` when
    there are none). One label per line is trained: an example with several labels is written
    once per label. Deterministic: one thread, a fixed seed, a fresh interpreter (see below).
    Raises ``subprocess.CalledProcessError`` when fastText fails (its stderr attached)."""
    import fasttext

    lines = []
    for example in examples:
        text = " ".join(prepare(example.text).split())
        for name in label(example) or (NEGATIVE,):
            lines.append(f"__label__{name} {text}")
    if not lines:
        raise ValueError("a classifier needs at least one example")
    options = {
        "epoch": params.epoch,
        "lr": params.lr,
        "dim": params.dim,
        "bucket": params.bucket,
        "minn": params.minn,
        "maxn": params.maxn,
        "wordNgrams": params.word_ngrams,
        "seed": params.seed,
        "thread": 1,
        "verbose": 0,
    }
    with tempfile.TemporaryDirectory(prefix="cutover-fasttext-") as folder:
        data, weights = os.path.join(folder, "train.txt"), os.path.join(folder, "model.bin")
        with open(data, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        # Trained in a fresh interpreter: with one thread fastText leaves most of its input
        # matrix as allocated, so in a process whose heap holds freed memory (a model trained
        # and dropped before, any large freed buffer) the same corpus gives a different model,
        # sometimes a degenerate one or "Encountered NaN". A new process's memory is zeroed,
        # so the model depends on the corpus and the parameters alone.
        subprocess.run(
            [sys.executable, "-c", _TRAIN, data, weights, json.dumps(options)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        model = fasttext.load_model(weights)
    return Classifier(model, tuple(label.removeprefix("__label__") for label in model.get_labels()))
