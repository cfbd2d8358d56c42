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
from .lexicon import WordList, Words, is_question, terms, unseen, word_list, words
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


LISTS = (*(f"bias_{category}" for category in CATEGORIES), "bias_demeaning", "bias_exclusion", "bias_mitigators")


@cache
def _rules() -> dict[str, WordList]:
    """The word lists by name (read once per process); nationality also holds every country's
    demonyms (``data/bias_demonyms.txt``)."""
    lists = {name: word_list(name) for name in LISTS}
    lists["bias_nationality"] = WordList((*terms("bias_nationality"), *terms("bias_demonyms")))
    return lists


_MERGED: dict[int, tuple[dict[str, WordList], WordList, dict[str, str]]] = {}


def _groups(rules: dict[str, WordList]) -> tuple[WordList, dict[str, str]]:
    """All group terms of ``rules`` as one list, and each term's category (the first list that
    holds it), built once per set of lists."""
    key = id(rules)
    if key not in _MERGED or _MERGED[key][0] is not rules:
        category_of: dict[str, str] = {}
        for category in CATEGORIES:
            for term in rules[f"bias_{category}"].terms:
                category_of.setdefault(term, category)
        if len(_MERGED) > 16:
            _MERGED.clear()
        _MERGED[key] = (rules, WordList(category_of), category_of)
    return _MERGED[key][1], _MERGED[key][2]


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


def features(
    sentence: Words, model_score: float, rules: dict[str, WordList] | None = None
) -> tuple[list[float], list[str]]:
    """The calibration's inputs for one sentence (see :data:`FEATURES`) and the categories it is
    about (``rules``: the word lists, by default all of them): the groups that open a generic
    claim, else the first group named ("gay men coaching boys" is about gay men, not about
    boys), else none."""
    rules = rules or _rules()
    groups, category_of = _groups(rules)
    # One list of every group's terms, leftmost-longest: a term inside a longer one of another
    # group ("americans" in "native americans") is not a mention of its own.
    spans = [(start, end, category_of[term]) for start, end, term in groups.spans(sentence)]
    claimed = list(
        dict.fromkeys(category for _, end, category in spans if _GENERIC.match(sentence.text, sentence.ends[end - 1]))
    )
    named = claimed or [category for _, _, category in spans[:1]]
    group = 1.0 if named else 0.0
    generic = 1.0 if claimed else 0.0
    # Without a group a demeaning word is an insult (the toxicity filter's), not bias.
    demeaning = group if named and rules["bias_demeaning"].search(sentence) else 0.0
    exclusion = group if named and rules["bias_exclusion"].search(sentence) else 0.0
    mitigator = 1.0 if rules["bias_mitigators"].search(sentence) else 0.0
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
        held_sentences = [words(normalise(e.text)) for e in held]
        rules = unseen(_rules(), [words(normalise(e.text)) for e in rest], held_sentences)
        for example, sentence in zip(held, held_sentences, strict=True):
            score = 1.0 - classifier.probabilities(sentence.text).get(learned.NEGATIVE, 0.0)
            rows.append(features(sentence, score, rules)[0])
            targets.append(1.0 if example.labels else 0.0)
    return Model(learned.train(examples, PARAMS, normalise), fit_logistic(rows, targets))


@cache
def _model() -> Model:
    """The bias model of this process, built once from the hand-written lines of the training
    split (composed lines carry one sentence's label to another); about a second."""
    return build([e for e in learned.read_corpus("bias", "train") if not e.note.startswith("composed")])


def _with_logit(row: list[float], logit: float) -> list[float]:
    group = row[3]
    return [row[0], logit * group, logit * (1.0 - group), *row[3:]]


def sentence_scores(raw: str, model: Model, floor: float = 0.0) -> dict[str, float]:
    """Each category's bias probability for one sentence (see the module's docstring);
    categories not scored are absent, and so is every category when the probability cannot
    reach ``floor``."""
    raw = raw.replace("\u2019", "'")
    text = normalise(raw)
    if len(text.split()) < MIN_WORDS or is_question(raw, text):
        return {}
    row, named = features(words(text), 0.5)
    # The probability is monotonic in the model's (clipped) logit: when even its best case stays
    # under ``floor`` the model need not run (most sentences name no group at all).
    best_case = max(model.probability(_with_logit(row, limit)) for limit in (-LOGIT_LIMIT, LOGIT_LIMIT))
    if best_case < floor:
        return {}
    probabilities = model.classifier.probabilities(text)
    value = model.probability(_with_logit(row, _logit(1.0 - probabilities.get(learned.NEGATIVE, 0.0))))
    if not named:
        named = [max(CATEGORIES, key=lambda category: probabilities.get(category, 0.0))]
    return dict.fromkeys(named, value)


def score(text: str, model: Model | None = None, floor: float = 0.0) -> dict[str, float]:
    """Each category's bias probability for ``text``: the highest over its sentences; categories
    never scored (or only under ``floor``) are absent."""
    current = model or _model()
    best: dict[str, float] = {}
    for part in sentences(text):
        for category, value in sentence_scores(part, current, floor).items():
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
        scores = score(text, self.model, self.threshold)
        return [
            Finding(filter="bias", category=category, score=round(scores[category], 4))
            for category in CATEGORIES
            if category in self.categories and category in scores and scores[category] >= self.threshold
        ]


def detector(spec: BiasFilter) -> BiasDetector:
    """The bias detector for ``spec`` (its ``categories`` and ``threshold``). Training the model
    and compiling the word lists happen once per process; later policy generations reuse them."""
    _rules()
    return BiasDetector(categories=frozenset(spec.categories), threshold=spec.threshold, model=_model())
