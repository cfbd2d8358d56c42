"""The bias filter: demeaning or discriminatory statements about protected groups, mostly in model
outputs ("women are bad at math", "people from X are lazy", hiring advice that excludes a group),
not the mention of a group, statistics with their source, discussion of discrimination, a
stereotype named and rejected, or a counter-stereotype.

Categories are the protected-group kinds of the API's ``BiasFilter``: ``raceEthnicity``,
``religion``, ``gender``, ``sexualOrientation`` (gender identity included), ``disability``,
``age``, ``nationality`` (immigration status included).

How a text is scored, sentence by sentence (the highest sentence wins):

1. A question scores 0 ("is it true that men are better at chess?" asks; it does not assert).
2. Cues from word lists in ``data/``: the group terms of each category (``bias_<category>.txt``),
   whether a group term opens a generic claim about the whole group ("immigrants are", "women
   can't", "Jews control"), a demeaning predicate (``bias_demeaning.txt``: "lazy", "criminals",
   "can't be trusted"), an exclusion (``bias_exclusion.txt``: "don't hire", "screen out",
   "shouldn't be allowed"), a mitigator (``bias_mitigators.txt``: "stereotype", "myth",
   "according to", "studies", "discrimination against", "I won't") that marks a report, a study
   or a rejection of the claim, and their conjunction (group and demeaning or exclusion, no
   mitigator).
3. A fastText model trained on the bias corpus: ``1 - P(none)``.
4. A logistic regression over the model's logit and the cues gives the probability that the
   sentence is biased. It is fitted when the filter is first built, on cross-fitted inputs: each
   training line is scored by a model, and read with word lists, that did not see it (a term is
   dropped while its only lines are held out), so the weights reflect how the cues carry over to
   new text, not how well they fit the lines they were written from.

The findings' categories are the groups the sentence names, or the model's most likely group
when no term names one. The API's ``threshold`` (default 0.8) applies to the probability, so it
keeps its meaning when the corpus or the lists grow. The design mirrors the advice filter
(safety.md section 5); Llama Guard's S10 "Hate" and Perspective's IDENTITY_ATTACK are the
anchors' nearest categories; the calibration is Platt's (1999) with the cues as extra inputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from cutover.api.v1alpha1.safetypolicy import BiasFilter

from . import learned
from .base import Direction, FilterName, Finding
from .lexicon import alternation, is_question, terms
from .normalise import normalise, sentences

CATEGORIES = ("raceEthnicity", "religion", "gender", "sexualOrientation", "disability", "age", "nationality")
PARAMS = learned.Params(epoch=60, lr=1.0, word_ngrams=2)
FOLDS = 4
"""Cross-fitting folds for the calibration: each training line's model score comes from a model
that did not see it."""
FEATURES = ("bias", "model", "modelWithoutGroup", "group", "generic", "demeaning", "exclusion", "mitigator", "rule")
MIN_WORDS = 3
"""Sentences shorter than this ("Sure.", "Got it.") are not scored: they assert nothing about
anyone, and the model's score on them is its prior."""


_GENERIC = re.compile(
    r"(?:\W+\w+){0,2}?\W+(?:are|is|aren't|isn't|can't|cannot|don't|do not|never|always|only|just|all|will|"
    r"won't|should|shouldn't|belong|have no|has no|breed|control|deserve|son|sont|sind|no son|ne sont)(?!\w)"
)
"""What follows a group term in a generic statement ("immigrants are", "women can't", "Jews
control"): the grammar of a claim about a whole group (a generic), which every stereotype shares
and most mentions of a group do not."""


@dataclass(frozen=True)
class _Rules:
    """The compiled word lists (built once per process)."""

    groups: dict[str, re.Pattern[str]]
    demeaning: re.Pattern[str]
    exclusion: re.Pattern[str]
    mitigator: re.Pattern[str]


LISTS = (*(f"bias_{category}" for category in CATEGORIES), "bias_demeaning", "bias_exclusion", "bias_mitigators")


def _compile(lists: dict[str, list[str]]) -> _Rules:
    def pattern(name: str) -> re.Pattern[str]:
        return re.compile(rf"(?<!\w)(?:{alternation(lists[name])})(?!\w)")

    return _Rules(
        groups={category: pattern(f"bias_{category}") for category in CATEGORIES},
        demeaning=pattern("bias_demeaning"),
        exclusion=pattern("bias_exclusion"),
        mitigator=pattern("bias_mitigators"),
    )


@cache
def _rules() -> _Rules:
    return _compile({name: terms(name) for name in LISTS})


def _unseen_rules(seen: Sequence[str], unseen: Sequence[str]) -> _Rules:
    """The word lists as if written without the ``unseen`` lines (normalised texts): a term that
    occurs in them and in none of the ``seen`` lines is dropped. The calibration then learns how
    far the lists reach beyond the lines they were written from, not how well they fit them."""
    lists = {}
    for name in LISTS:
        kept = []
        for term in terms(name):
            found = re.compile(rf"(?<!\w)(?:{alternation([term])})(?!\w)")
            if any(found.search(text) for text in unseen) and not any(found.search(text) for text in seen):
                continue
            kept.append(term)
        lists[name] = kept
    return _compile(lists)


@dataclass(frozen=True)
class Model:
    """The bias model of one process: the fastText classifier and the logistic calibration that
    turns its score and the word-list cues into a probability (weights in :data:`FEATURES`
    order)."""

    classifier: learned.Classifier
    weights: tuple[float, ...]

    def probability(self, features: Sequence[float]) -> float:
        """The calibrated probability that a sentence with ``features`` is biased."""
        z = sum(w * x for w, x in zip(self.weights, features, strict=True))
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


LOGIT_LIMIT = 3.0
"""The model's logit is clipped to +-3 (probabilities 0.05 to 0.95): fastText trained on a few
hundred lines is sometimes sure of a sentence it has barely seen ("my neighbours are a Muslim
family" at 0.9998), and no single cue should outweigh the rest of the evidence."""


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return max(-LOGIT_LIMIT, min(LOGIT_LIMIT, math.log(p / (1 - p))))


def features(text: str, model_score: float, rules: _Rules | None = None) -> tuple[list[float], list[str]]:
    """The calibration's inputs for one normalised sentence (see :data:`FEATURES`) and the
    categories it is about (``rules``: the word lists, by default all of them): the groups that
    open a generic claim, else the first group named ("gay men coaching boys" is about gay men,
    not about boys), else none."""
    rules = rules or _rules()
    spans = [
        (found.start(), found.end(), category)
        for category in CATEGORIES
        for found in rules.groups[category].finditer(text)
    ]
    # A term inside a longer one of another group ("americans" in "native americans") is not a
    # mention of its own.
    spans = [
        (start, end, category)
        for start, end, category in spans
        if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in spans)
    ]
    spans.sort()
    claimed = list(dict.fromkeys(category for _, end, category in spans if _GENERIC.match(text, end)))
    named = claimed or [category for _, _, category in spans[:1]]
    group = 1.0 if named else 0.0
    generic = 1.0 if claimed else 0.0
    # Without a group a demeaning word is an insult (the toxicity filter's), not bias.
    demeaning = group if rules.demeaning.search(text) else 0.0
    exclusion = group if rules.exclusion.search(text) else 0.0
    mitigator = 1.0 if rules.mitigator.search(text) else 0.0
    rule = group * max(demeaning, exclusion) * (1.0 - mitigator)
    logit = _logit(model_score)
    row = [1.0, logit * group, logit * (1.0 - group), group, generic, demeaning, exclusion, mitigator, rule]
    return row, named


def fit_logistic(rows: Sequence[Sequence[float]], targets: Sequence[float], l2: float = 1.0) -> tuple[float, ...]:
    """Weights of an L2-regularised logistic regression (the first column is the intercept and is
    not penalised), fitted by Newton's method; deterministic."""
    x = np.asarray(rows, dtype=float)
    y = np.asarray(targets, dtype=float)
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        gradient = x.T @ (p - y) + penalty * w
        hessian = (x.T * (p * (1 - p))) @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return tuple(float(v) for v in w)


def build(examples: Sequence[learned.Example]) -> Model:
    """A bias model from labelled lines: the classifier on all of them, the calibration on
    cross-fitted model scores and word-list cues (:data:`FOLDS` folds by position; each held-out
    fold is scored by a model and word lists that did not see it)."""
    rows: list[list[float]] = []
    targets: list[float] = []
    for fold in range(FOLDS):
        held = [e for i, e in enumerate(examples) if i % FOLDS == fold]
        rest = [e for i, e in enumerate(examples) if i % FOLDS != fold]
        classifier = learned.train(rest, PARAMS, normalise)
        held_texts = [normalise(e.text) for e in held]
        rules = _unseen_rules([normalise(e.text) for e in rest], held_texts)
        for example, text in zip(held, held_texts, strict=True):
            score = 1.0 - classifier.probabilities(text).get(learned.NEGATIVE, 0.0)
            rows.append(features(text, score, rules)[0])
            targets.append(1.0 if example.labels else 0.0)
    return Model(learned.train(examples, PARAMS, normalise), fit_logistic(rows, targets))


@cache
def _model() -> Model:
    """The bias model of this process, built once from the hand-written lines of the training
    split (composed lines carry one sentence's label to another); about a second."""
    return build([e for e in learned.read_corpus("bias", "train") if not e.note.startswith("composed")])


def sentence_scores(raw: str, model: Model) -> dict[str, float]:
    """Each category's bias probability for one sentence (see the module's docstring);
    categories not scored are absent."""
    raw = raw.replace("\u2019", "'")
    text = normalise(raw)
    if len(text.split()) < MIN_WORDS or is_question(raw, text):
        return {}
    probabilities = model.classifier.probabilities(text)
    row, named = features(text, 1.0 - probabilities.get(learned.NEGATIVE, 0.0))
    value = model.probability(row)
    if not named:
        named = [max(CATEGORIES, key=lambda category: probabilities.get(category, 0.0))]
    return dict.fromkeys(named, value)


def score(text: str, model: Model | None = None) -> dict[str, float]:
    """Each category's bias probability for ``text``: the highest over its sentences; categories
    never scored are absent."""
    current = model or _model()
    best: dict[str, float] = {}
    for part in sentences(text):
        for category, value in sentence_scores(part, current).items():
            best[category] = max(best.get(category, 0.0), value)
    return best


@dataclass(frozen=True)
class BiasDetector:
    """The bias filter of one policy generation: reports the categories its spec selects at or
    above its ``threshold``, one finding per category, without spans."""

    categories: frozenset[str]
    threshold: float
    model: Model
    name: FilterName = "bias"

    def scan(self, text: str, direction: Direction) -> list[Finding]:
        """The protected-group kinds ``text`` demeans or excludes (either direction: the policy's
        scope decides which texts reach the filter). Never raises on a ``str``."""
        if not self.categories or not text:
            return []
        scores = score(text, self.model)
        return [
            Finding(filter="bias", category=category, score=round(scores[category], 4))
            for category in CATEGORIES
            if category in self.categories and scores.get(category, 0.0) >= self.threshold
        ]


def detector(spec: BiasFilter) -> BiasDetector:
    """The bias detector for ``spec`` (its ``categories`` and ``threshold``). Training the model
    and compiling the word lists happen once per process; later policy generations reuse them."""
    _rules()
    return BiasDetector(categories=frozenset(spec.categories), threshold=spec.threshold, model=_model())
