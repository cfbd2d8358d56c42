"""The toxicity filter: insults, harassment, hate and threats aimed at a person or a group
(the assistant included), scored as a calibrated probability so that the API's ``threshold``
(0.8 by default) means the same from one release to the next.

Three signals, read on the normalised text (:func:`~cutover.serving.safety.normalise.normalise`)
one sentence at a time (one bad sentence is not outvoted by many harmless ones):

a. **Profanity**: alt-profanity-check's installed model (TF-IDF over 15,442 English words and a
   5-fold sigmoid-calibrated LinearSVC, Zhou 2019 / dimitrismistriotis/alt-profanity-check).
   The library's vectorizer and classifiers are read once through the library and their
   weights extracted into a word table, scored here in pure Python (0.01 ms a sentence against
   3 ms through scikit-learn); :func:`profanity_model` checks that the table gives what
   ``profanity_check.predict_prob`` gives before it is used.
b. **Learned**: a fastText classifier (:mod:`~cutover.serving.safety.learned`) trained on the
   project's toxicity corpus, which holds what (a) misses: insults without swear words, identity
   attacks, threats, harassment of the assistant, Spanish, German and French. It reads
   sentences in runs of six words or more: on a fragment its score is noise.
c. **Targeted insults**: the project's word lists (``data/toxicity_lexicon.json``): an insult
   within a few words of a target (second person, "you people", a group noun, the assistant),
   a dehumanising word near a group noun, or a phrase of abuse ("fuck off", "ta gueule").

**Evidence first.** A text is scored only when it holds evidence: a word of
:func:`evidence_words` (the lexicon's insults, insulting adjectives and dehumanising words;
words alt-profanity-check calls profane on their own; content words the training lines or
fastText's own rows tie to toxicity) or a phrase of abuse. Without evidence the text reads as
an empty text does (:data:`NO_EVIDENCE`, a calibrated score of 0.015 on the shipped corpus) and
neither (a) nor (b) runs: on "0", "ab", "éé", an emoji, gibberish or a one-word reply, fastText's score is its
end-of-line row and its character n-grams, noise that reached 0.98. The combination is fitted
only on dev lines with evidence (the lines it will score). On the dev slice 3 of 165 toxic
lines have no evidence, and 136 of 293 benign ones; on the whole train split 13 of 866 toxic
lines (threats without a violent word: "vigila tu espalda esta noche"; masked or spaced
letters: "st*pid b*tch").

The same lexicon discounts what (a) gets wrong: profanity in a sentence that names no target
("fuck yes", "this shit is great") is a feature of its own, as are self-deprecation ("I'm such
an idiot") and mentions (quoted text is removed before (a) and (c) read a sentence, and cues
such as "called me" or "is ... a slur" are a feature), so the combination learns how little
they weigh.

**Calibration** (Platt 1999, "Probabilistic outputs for support vector machines", generalised
to several inputs: a logistic regression over the signals, fitted with L2 penalty by Newton's
method). A dev slice (a fixed fifth of the train split, chosen by a hash of each text) is held
out; fastText is trained on the rest, and the logistic regression is fitted on the dev slice's
signals. Nothing is stored: the calibration runs again, deterministically, whenever a process
first builds the filter (about 2 s: the library's joblib files, then fastText in a child
process), from the corpus that ships with the release. The held-out test split is never read
here.

What 0.8 means: :attr:`Calibration.dev_precision` is the estimated precision at the default
threshold on the dev slice (measured by 5-fold cross-fitting of the logistic regression, so the
slice does not grade the fit it made): 0.97 at recall 0.76 on the shipped corpus (458 dev
lines); on the held-out test split, precision 0.92 and recall 0.86 (``corpus/toxicity/
README.md``). A score is not a severity: a mild insult aimed at someone can score higher than
a vile word quoted.

Cost: about 0.17 ms p50 for 300 characters on one core (its sentences already normalised by
an earlier filter; normalising them is about 0.1 ms more); a text without evidence costs its
normalisation and one pass of the lexicon. The detector reads a text in order of cost per unit
of weight (lexicon, (b), (a) on sentences naming a target, (a) on the rest) and stops as soon
as what is left cannot lift the score to its threshold (:meth:`ToxicityModel.flagged`): on
benign chat that skips (a) on most sentences. Its decisions and reported scores are
:meth:`ToxicityModel.score`'s.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cutover.api.v1alpha1.safetypolicy import ToxicityFilter

from .base import Direction, FilterName, Finding
from .learned import Classifier, Example, Params, read_corpus, train
from .normalise import normalise, sentences

LEXICON = Path(__file__).parent / "data" / "toxicity_lexicon.json"
CATEGORY = "toxicity"
DEFAULT_THRESHOLD = 0.8
PARAMS = Params(epoch=25, lr=0.3, dim=16, bucket=50_000, minn=2, maxn=5, word_ngrams=2, seed=7)
"""fastText parameters of the learned signal (3.2 MB of n-gram buckets)."""

_WORD = re.compile(r"\w+(?:'\w+)?")
_TFIDF_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern
_QUOTED = re.compile(r"\"[^\"]{1,200}\"|“[^”]{1,200}”|«[^»]{1,200}»|„[^“”]{1,200}[“”]|(?<!\w)'[^']{1,200}'(?!\w)")
_QUOTE_MARKS = frozenset("\"'“«„")
"""The characters every alternative of ``_QUOTED`` starts with."""
_TARGET_WINDOW = 4
_GROUP_WINDOW = 5
_LOGIT_CLIP = 6.0


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return max(-_LOGIT_CLIP, min(_LOGIT_CLIP, math.log(p / (1 - p))))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


# --- (a) alt-profanity-check through its extracted weights ---------------------------------


@dataclass(frozen=True)
class ProfanityModel:
    """alt-profanity-check's model as plain numbers: for each vocabulary word its IDF and, per
    calibrated fold, the LinearSVC weight times that IDF; per fold the intercept and the sigmoid
    calibration ``(a, b)`` (scikit-learn's ``_SigmoidCalibration``: ``p = 1 / (1 + exp(a d +
    b))``). The probability is the mean over folds, as ``CalibratedClassifierCV`` computes it."""

    words: dict[str, tuple[float, tuple[float, ...]]]
    intercepts: tuple[float, ...]
    calibrations: tuple[tuple[float, float], ...]

    def probability(self, text: str) -> float:
        """The probability that ``text`` is profane (in [0, 1]), equal to
        ``profanity_check.predict_prob([text])[0]`` up to rounding."""
        counts: dict[str, int] = {}
        for token in _TFIDF_TOKEN.findall(text.lower()):
            if token in self.words:
                counts[token] = counts.get(token, 0) + 1
        rows: list[tuple[float, ...]] = []
        norm = 0.0
        for token, count in counts.items():
            idf, weights = self.words[token]
            norm += (count * idf) ** 2
            rows.append(weights if count == 1 else tuple(count * w for w in weights))
        scale = 1.0 / math.sqrt(norm) if norm else 0.0
        folds = len(self.intercepts)
        decisions = [sum(column) * scale for column in zip(*rows, strict=True)] if rows else [0.0] * folds
        total = 0.0
        for decision, intercept, (a, b) in zip(decisions, self.intercepts, self.calibrations, strict=True):
            total += _sigmoid(-(a * (decision + intercept) + b))
        return total / folds

    @cached_property
    def blank_logit(self) -> float:
        """The logit of :meth:`probability` for a text with no word it knows (its prior)."""
        return _logit(self.probability(""))


_PROBES = (
    "",
    "what a lovely morning",
    "you are a fucking idiot",
    "this shit is great, fuck yes",
    "the the the",
    "Go to hell, you useless piece of garbage. I mean it.",
)


@cache
def profanity_model() -> ProfanityModel:
    """alt-profanity-check's installed vectorizer and calibrated LinearSVC, read once through the
    library (importing ``profanity_check`` loads its joblib files) and extracted into a
    :class:`ProfanityModel`. Raises ``RuntimeError`` when the extracted model does not reproduce
    ``predict_prob`` on a few probe texts (a changed library: the extraction would be wrong)."""
    from profanity_check import profanity_check as library

    vectorizer: Any = library.vectorizer
    classifier: Any = library.model
    folds = classifier.calibrated_classifiers_
    idf = np.asarray(vectorizer.idf_, dtype=np.float64)
    coefs = np.stack([np.asarray(fold.estimator.coef_, dtype=np.float64)[0] for fold in folds])
    words = {
        str(word): (float(idf[index]), tuple(float(w) for w in coefs[:, index] * idf[index]))
        for word, index in vectorizer.vocabulary_.items()
    }
    model = ProfanityModel(
        words=words,
        intercepts=tuple(float(fold.estimator.intercept_[0]) for fold in folds),
        calibrations=tuple((float(fold.calibrators[0].a_), float(fold.calibrators[0].b_)) for fold in folds),
    )
    expected = library.predict_prob(list(_PROBES))
    for text, want in zip(_PROBES, expected, strict=True):
        got = model.probability(text)
        if abs(got - float(want)) > 1e-9:
            raise RuntimeError(f"extracted alt-profanity-check model gives {got} for {text!r}, the library {want}")
    return model


def contradicted(profanity: ProfanityModel, examples: Sequence[Example]) -> ProfanityModel:
    """``profanity`` without the words that push it towards profane (mean weight over folds
    above 0) and that ``examples`` hold in two lines or more, never in a toxic one: the library
    learned "sue", "basement" or "canyon" from the comments it was trained on, and the project's
    corpus says otherwise. The result scores a text as the library would if it did not know those
    words (their counts leave the decision and the TF-IDF norm)."""
    toxic, lines, _ = _line_counts(examples)
    dropped = {
        word
        for word, (_, weights) in profanity.words.items()
        if toxic[word] == 0 and lines[word] >= EVIDENCE_MIN_LINES and sum(weights) > 0
    }
    return ProfanityModel(
        words={word: entry for word, entry in profanity.words.items() if word not in dropped},
        intercepts=profanity.intercepts,
        calibrations=profanity.calibrations,
    )


# --- (c) the lexicon ---------------------------------------------------------------------------


def _phrases(entries: Sequence[str]) -> list[tuple[str, ...]]:
    return sorted({tuple(_WORD.findall(normalise(entry))) for entry in entries} - {()})


_UNITS = ("insults", "adjectives", "dehumanising", "frames", "groups", "self")
"""The lists whose multi-word entries read as one word ("piece of shit", "you people")."""


@dataclass(frozen=True)
class Lexicon:
    """The targeted-insult word lists (``data/toxicity_lexicon.json``), compiled: single words
    in sets, and every phrase indexed by its first word (longest first), so that a sentence is
    read in one pass over its words, whatever the size of the lists."""

    insults: frozenset[str]
    adjectives: frozenset[str]
    dehumanising: frozenset[str]
    frames: frozenset[str]
    targets: frozenset[str]
    groups: frozenset[str]
    self_words: frozenset[str]
    phrases: dict[str, tuple[tuple[tuple[str, ...], frozenset[str]], ...]]

    def read(self, words: Sequence[str]) -> tuple[list[str], bool, bool]:
        """``words`` with multi-word entries joined into one (``["piece of shit"]``), and
        whether a phrase of abuse and a mention cue occur in them.

        Only the words that may open a phrase here (found with set look-ups: the word opens
        one, and is a phrase alone or followed by a phrase's second word) are looked at one by
        one; the runs of words between them are copied whole."""
        if self.phrases.keys().isdisjoint(words):
            return list(words), False, False
        units: list[str] = []
        abuse = mention = False
        copied = skip_to = 0  # words[:copied] are read; words[:skip_to] are inside a joined unit
        for index in [index for index, word in enumerate(words) if word in self.phrases and self._opens(words, index)]:
            units.extend(words[max(copied, skip_to) : index])
            copied = index + 1
            joined = False
            for phrase, kinds in self.phrases[words[index]]:
                end = index + len(phrase)
                if len(phrase) > 1 and tuple(words[index:end]) != phrase:
                    continue
                abuse = abuse or "abuse" in kinds
                mention = mention or "mention" in kinds
                if index >= skip_to and len(phrase) > 1 and not joined and not kinds.isdisjoint(_UNITS):
                    units.append(" ".join(phrase))
                    skip_to, joined = end, True
            if index >= skip_to:
                units.append(words[index])
        units.extend(words[max(copied, skip_to) :])
        return units, abuse, mention

    @cached_property
    def _seconds(self) -> dict[str, frozenset[str] | None]:
        """For each word that opens a phrase, the second words of its phrases (None when it is
        a phrase on its own)."""
        return {
            first: None if any(len(phrase) == 1 for phrase, _ in entries) else frozenset(p[1] for p, _ in entries)
            for first, entries in self.phrases.items()
        }

    def _opens(self, words: Sequence[str], index: int) -> bool:
        """Whether some phrase may start at ``words[index]`` (a word that opens one)."""
        seconds = self._seconds[words[index]]
        return seconds is None or (index + 1 < len(words) and words[index + 1] in seconds)

    @cached_property
    def aimed(self) -> frozenset[str]:
        """The words :func:`read_sentence` looks for a target around: insults, insulting
        adjectives and dehumanising words."""
        return self.insults | self.adjectives | self.dehumanising

    @cached_property
    def addressees(self) -> frozenset[str]:
        """The words that make a sentence name a target: second person, the assistant, groups."""
        return self.targets | self.groups


@cache
def lexicon() -> Lexicon:
    """The lexicon of ``data/toxicity_lexicon.json``, each entry normalised and split into
    words like the text it is matched against. Raises ``OSError``/``ValueError`` when the file
    is missing or malformed."""
    raw = json.loads(LEXICON.read_text(encoding="utf-8"))
    lists = {key: _phrases(raw[key]) for key in raw if not key.startswith("_")}

    def singles(*keys: str) -> frozenset[str]:
        return frozenset(" ".join(entry) for key in keys for entry in lists[key])

    kinds: dict[tuple[str, ...], set[str]] = {}
    for key in ("abuse", "mention", *_UNITS):
        for entry in lists[key]:
            if key in ("abuse", "mention") or len(entry) > 1:
                kinds.setdefault(entry, set()).add(key)
    index: dict[str, list[tuple[tuple[str, ...], frozenset[str]]]] = {}
    for entry, found in kinds.items():
        index.setdefault(entry[0], []).append((entry, frozenset(found)))
    return Lexicon(
        insults=singles("insults"),
        adjectives=singles("adjectives"),
        dehumanising=singles("dehumanising"),
        frames=singles("frames"),
        targets=singles("second_person", "assistant"),
        groups=singles("groups"),
        self_words=singles("self"),
        phrases={first: tuple(sorted(entries, key=lambda e: -len(e[0]))) for first, entries in index.items()},
    )


@dataclass(frozen=True)
class SentenceReading:
    """What the lexicon reads in one sentence (quoted text removed): whether it names a target,
    whether an insult is aimed at someone (or a phrase of abuse is used), whether an insult is
    aimed at the writer, and whether a word is mentioned rather than used."""

    targeted: bool
    insult: bool
    self_insult: bool
    mention: bool


def _aim(words: Lexicon, tokens: Sequence[str], index: int) -> str | None:
    """At whom the insult at ``tokens[index]`` is aimed: ``"target"``, ``"self"`` or None.

    The nearest pronoun within a few words before it decides ("you know, I'm such an idiot" is
    aimed at the writer); a target right after it counts too ("idiot, you"). A name for a person
    also counts after a frame ("my boss is a moron", "what a loser", "espece d'abruti") and as a
    one-word address at either end of the sentence ("touch grass, nerd"); an adjective needs a
    target ("the plan is stupid" is not an insult); a dehumanising word needs a group."""
    word = tokens[index]
    noun = word in words.insults
    adjective = word in words.adjectives
    framed = False
    for back in range(index - 1, max(-1, index - 1 - _GROUP_WINDOW), -1):
        near = index - back <= _TARGET_WINDOW
        before = tokens[back]
        if before in words.groups:
            return "target"
        if not near:
            continue
        if before in words.self_words:
            return "self"
        if (noun or adjective) and before in words.targets:
            return "target"
        framed = framed or (noun and before in words.frames)
    if (noun or adjective) and any(t in words.targets for t in tokens[index + 1 : index + 3]):
        return "target"
    if framed or (noun and (index == 0 or index == len(tokens) - 1)):
        return "target"
    return None


def read_sentence(words: Lexicon, sentence: str, units: tuple[list[str], bool, bool] | None = None) -> SentenceReading:
    """The lexicon's reading of one normalised ``sentence`` (see :class:`SentenceReading`);
    ``units`` is ``words.read`` of its words when the caller has it already."""
    tokens, insult, mention = units if units is not None else words.read(_WORD.findall(sentence))
    self_insult = False
    if not words.aimed.isdisjoint(tokens):
        for index, token in enumerate(tokens):
            if token in words.aimed:
                aim = _aim(words, tokens, index)
                insult = insult or aim == "target"
                self_insult = self_insult or aim == "self"
    return SentenceReading(
        targeted=not words.addressees.isdisjoint(tokens),
        insult=insult,
        self_insult=self_insult,
        mention=mention,
    )


# --- the combination -----------------------------------------------------------------------------

_TARGETED, _UNTARGETED = 0, 1
"""The indices of the two (a) features in :data:`FEATURES`."""
FEATURES = (
    "profanity_targeted",
    "profanity_untargeted",
    "learned",
    "targeted_insult",
    "self_deprecation",
    "mention",
)
"""The calibrated combination's inputs, in order: (a) over sentences naming a target and over the
others (its logit less the logit it gives a text with no word it knows; 0 when there is no such
sentence), the logit of (b), (c) as 0/1, and the two discounts as 0/1."""


@dataclass(frozen=True)
class Signals:
    """The three signals and the discounts of one text, before calibration, and whether the
    text holds any evidence at all (see :func:`evidence_words`)."""

    profanity_targeted: float
    profanity_untargeted: float
    learned: float
    targeted_insult: bool
    self_deprecation: bool
    mention: bool
    evidence: bool = True

    def vector(self) -> tuple[float, ...]:
        """The signals in :data:`FEATURES` order."""
        return (
            self.profanity_targeted,
            self.profanity_untargeted,
            self.learned,
            float(self.targeted_insult),
            float(self.self_deprecation),
            float(self.mention),
        )


NO_EVIDENCE = Signals(0.0, 0.0, -_LOGIT_CLIP, False, False, False, evidence=False)
"""The signals of a text without evidence: what an empty text reads as (no profanity known, (b)
at its floor, no insult)."""


def signals(
    text: str, profanity: ProfanityModel, words: Lexicon, learned: Classifier, evidence: frozenset[str]
) -> Signals:
    """The signals of raw ``text``: normalised, cut into sentences, each read by (a), (b), (c)
    with quoted text removed for (a) and (c); the maximum over sentences of each. A text none of
    whose words (or phrases of abuse) is in ``evidence`` reads as :data:`NO_EVIDENCE` without
    running (a) or (b): their scores on such text are noise (fastText's end-of-line token alone
    leans toxic on the short-line-heavy corpus, so "0", "k" or an emoji scored above 0.9)."""
    found = _signals(text, profanity, words, learned, evidence)
    assert found is not None  # only a caller's ``hopeless`` stops the reading
    return found


Hopeless = Callable[[Signals, Sequence[int]], bool]
"""Whether a text whose signals are known but for the features at the given :data:`FEATURES`
indices (left at 0 in the :class:`Signals` passed) cannot reach the caller's threshold, whatever
those features turn out to be."""


def _signals(
    text: str,
    profanity: ProfanityModel,
    words: Lexicon,
    learned: Classifier,
    evidence: frozenset[str],
    hopeless: Hopeless | None = None,
) -> Signals | None:
    """:func:`signals`, read in order of cost per unit of weight: the lexicon, then (b), then
    (a) on the sentences naming a target, then (a) on the others (its weight there is small).
    Before each (a) pass, None when ``hopeless`` says the rest cannot change the outcome."""
    read = [sentence for sentence in (normalise(raw) for raw in sentences(text)) if sentence]
    units = [words.read(_WORD.findall(sentence)) for sentence in read]
    if not any(abuse or not evidence.isdisjoint(tokens) for tokens, abuse, _ in units):
        return NO_EVIDENCE
    targeted: list[str] = []
    untargeted: list[str] = []
    insult = self_insult = mention = False
    for sentence, unit in zip(read, units, strict=True):
        unquoted = sentence if _QUOTE_MARKS.isdisjoint(sentence) else _QUOTED.sub(" ", sentence)
        quoted = unquoted != sentence
        reading = read_sentence(words, unquoted, None if quoted else unit)
        aimed = reading.targeted and not (reading.self_insult and not reading.insult)
        (targeted if aimed else untargeted).append(unquoted)
        insult = insult or reading.insult
        self_insult = self_insult or reading.self_insult
        mention = mention or reading.mention or (quoted and _has_insult(words, sentence))
    known = Signals(0.0, 0.0, _learned_logit(learned, read), insult, self_insult and not insult, mention)
    unknown = [index for index, kind in ((_TARGETED, targeted), (_UNTARGETED, untargeted)) if kind]
    if hopeless is not None and unknown and hopeless(known, unknown):
        return None
    targeted_p = _lean(profanity, targeted)
    if (
        hopeless is not None
        and untargeted
        and hopeless(dataclasses.replace(known, profanity_targeted=targeted_p), [_UNTARGETED])
    ):
        return None
    return dataclasses.replace(known, profanity_targeted=targeted_p, profanity_untargeted=_lean(profanity, untargeted))


def _lean(profanity: ProfanityModel, read: Sequence[str]) -> float:
    """The largest lean of (a) over the sentences ``read``: its logit less the logit it gives a
    sentence with no word it knows (such as most of a German one), in [-6 - blank, 6 - blank]
    (:func:`lean_bounds`); 0 is "nothing known", also when there is no sentence."""
    blank = profanity.blank_logit
    best = 0.0
    for sentence in read:
        lean = _logit(profanity.probability(sentence)) - blank
        best = lean if best == 0.0 else max(best, lean)
    return best


def lean_bounds(profanity: ProfanityModel) -> tuple[float, float]:
    """The lowest and highest value :func:`_lean` can give (its logit is clipped)."""
    blank = profanity.blank_logit
    return -_LOGIT_CLIP - blank, _LOGIT_CLIP - blank


EVIDENCE_MIN_LINES = 2
EVIDENCE_MIN_SHARE = 0.7


def marked_words(examples: Sequence[Example]) -> frozenset[str]:
    """The words (normalised, as :func:`signals` reads them) that ``examples`` associate with
    toxicity: found in at least :data:`EVIDENCE_MIN_LINES` toxic lines, and in toxic lines at a
    share of at least :data:`EVIDENCE_MIN_SHARE` of the lines holding them, smoothed as
    ``(toxic + 1) / (lines + 2)`` (Laplace's rule of succession), so that a word seen once is
    never marked. Function words used by both classes ("you", "a", "the") are not marked."""
    toxic, lines, _ = _line_counts(examples)
    return frozenset(
        word
        for word, count in toxic.items()
        if count >= EVIDENCE_MIN_LINES and (count + 1) / (lines[word] + 2) >= EVIDENCE_MIN_SHARE
    )


def _line_counts(examples: Sequence[Example]) -> tuple[Counter[str], Counter[str], dict[str, float]]:
    """For each normalised word of ``examples``: how many toxic lines hold it, how many lines,
    and the largest share of the lines of one language that hold it (a German function word is
    frequent among German lines, rare among all)."""
    toxic: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    by_language: dict[str, Counter[str]] = {}
    for example in examples:
        found = set(_WORD.findall(normalise(example.text)))
        lines.update(found)
        by_language.setdefault(example.lang, Counter()).update(found)
        if _label(example):
            toxic.update(found)
    sizes = Counter(example.lang for example in examples)
    share: dict[str, float] = {}
    for language, counts in by_language.items():
        for word, count in counts.items():
            share[word] = max(share.get(word, 0.0), count / sizes[language])
    return toxic, lines, share


EVIDENCE_MIN_WEIGHT = 5.0
EVIDENCE_MAX_LINE_SHARE = 0.05


def weighted_words(examples: Sequence[Example], learned: Classifier) -> frozenset[str]:
    """The content words of fastText's vocabulary that push its toxicity score up on their own:
    words (no punctuation attached) seen at least twice in training, found in toxic lines of
    ``examples`` (the lines it was trained on) at least as often as in benign ones (smoothed as
    in :func:`marked_words`), whose own input row moves the toxicity-minus-none logit by more
    than :data:`EVIDENCE_MIN_WEIGHT` (fastText averages its rows, so a word weighs this divided
    by the number of rows it is averaged with). The cut points were chosen on the dev slice (see
    ``corpus/toxicity/README.md`` for what they leave
    without evidence)."""
    fasttext: Any = learned.model
    labels = list(fasttext.get_labels())
    output = np.asarray(fasttext.get_output_matrix(), dtype=np.float64)
    toxic = labels.index(_LABEL)
    direction = output[toxic] - output[1 - toxic]
    toxic_lines, lines, _ = _line_counts(examples)
    names, counts = fasttext.get_words(include_freq=True)
    found = set()
    for word, count in zip(names, counts, strict=True):
        if count < 2 or not _WORD.fullmatch(word):
            continue
        if (toxic_lines[word] + 1) / (lines[word] + 2) < 0.5:
            continue
        row = np.asarray(fasttext.get_input_vector(fasttext.get_word_id(word)), dtype=np.float64)
        if float(direction @ row) > EVIDENCE_MIN_WEIGHT:
            found.add(str(word))
    return frozenset(found)


def evidence_words(
    examples: Sequence[Example], profanity: ProfanityModel, words: Lexicon, learned: Classifier
) -> frozenset[str]:
    """The words whose presence makes a text worth scoring, the union of:

    * the lexicon's insults, insulting adjectives and dehumanising words (a phrase of abuse
      counts too, matched by :meth:`Lexicon.read`);
    * the words ``profanity`` (alt-profanity-check less what :func:`contradicted` drops) calls
      profane on their own (probability 0.5 or more for the word alone: its own features, about
      460 of its 15,442 words), less a language's function words (found in more than :data:`EVIDENCE_MAX_LINE_SHARE`
      of the lines of one language of ``examples``: French "tu", German "die");
    * :func:`marked_words` and :func:`weighted_words` of ``examples``, the training lines
      ``learned`` was trained on (both require a word to be found in toxic lines more often
      than in benign ones, so "you", "du" or "the" are not evidence);

    the last three less single letters (txt-speak "u" is "you"). Second-person words can be
    evidence where the corpus makes them so: "du" and "dich" are found mostly in toxic German
    lines (German threats without a violent word have little else), so a German sentence in
    the second person is always scored.

    A text with none of them has no evidence of toxicity and scores as an empty text does (the
    calibration's floor), whatever fastText makes of its characters: gibberish, numbers, ids,
    emoji, scripts the corpus does not hold, one-word replies ("ok", "no"), and sentences of
    ordinary words only ("take the train")."""
    _, _, share = _line_counts(examples)
    profane = {
        word
        for word in profanity.words
        if profanity.probability(word) >= 0.5 and share.get(word, 0.0) <= EVIDENCE_MAX_LINE_SHARE
    }
    learned_words = {
        word for word in profane | marked_words(examples) | weighted_words(examples, learned) if len(word) > 1
    }
    return frozenset(words.insults | words.adjectives | words.dehumanising | learned_words)


_LABEL = f"__label__{CATEGORY}"
_CHUNK_WORDS = 6


def _chunks(read: list[str]) -> list[str]:
    """The sentences ``read`` joined into runs of at least six words: on a fragment ("Kind
    regards, Alex.", "Dear Ms.") fastText has too few n-grams to go on and its score is noise,
    which the maximum over sentences would pick up."""
    chunks: list[str] = []
    current: list[str] = []
    words = 0
    for sentence in read:
        current.append(sentence)
        words += sentence.count(" ") + 1
        if words >= _CHUNK_WORDS:
            chunks.append(" ".join(current))
            current, words = [], 0
    if current:
        if chunks:
            chunks[-1] = " ".join([chunks[-1], *current])
        else:
            chunks.append(" ".join(current))
    return chunks


def _learned_logit(learned: Classifier, read: list[str]) -> float:
    """The largest logit of (b) over the normalised sentences ``read`` (in runs of six words or
    more), in one call to fastText (its per-call overhead is most of its cost)."""
    if not read:
        return -_LOGIT_CLIP
    labels, probabilities = learned.model.predict(_chunks(read), k=-1)
    best = 0.0
    for names, values in zip(labels, probabilities, strict=True):
        for name, value in zip(names, values, strict=True):
            if name == _LABEL:
                best = max(best, float(value))
    return _logit(best)


def _has_insult(words: Lexicon, sentence: str) -> bool:
    tokens = words.read(_WORD.findall(sentence))[0]
    return any(t in words.insults for t in tokens) or profanity_model().probability(sentence) > 0.5


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> np.ndarray:
    """Weights ``w`` (last one the intercept) of a logistic regression ``P(y=1|x) = sigmoid(w .
    [x, 1])`` fitted by Newton's method (iteratively reweighted least squares) with an L2
    penalty ``l2`` on every weight but the intercept. ``x`` is (n, k), ``y`` (n,) of 0/1.
    Deterministic; raises ``ValueError`` when ``y`` holds a single class."""
    if len(set(y.tolist())) < 2:
        raise ValueError("calibration needs positive and negative examples")
    design = np.hstack([x, np.ones((len(x), 1))])
    weights = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ weights)))
        gradient = design.T @ (p - y) + penalty * weights
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty) + 1e-9 * np.eye(len(weights))
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return weights


def _is_dev(example: Example) -> bool:
    return zlib.crc32(example.text.encode("utf-8")) % 5 == 0


def _label(example: Example) -> int:
    return int(CATEGORY in example.labels)


@dataclass(frozen=True)
class Calibration:
    """The fitted combination: ``weights`` over :data:`FEATURES` and an intercept, and what it
    measured on the dev slice: how many lines, and the estimated precision and recall at
    :data:`DEFAULT_THRESHOLD` (out of fold: 5-fold cross-fitting over the slice)."""

    weights: tuple[float, ...]
    dev_lines: int
    dev_precision: float
    dev_recall: float

    def probability(self, features: Sequence[float]) -> float:
        """The calibrated probability of toxicity for one feature vector."""
        z = self.weights[-1] + sum(w * f for w, f in zip(self.weights, features, strict=False))
        return _sigmoid(z)

    def ceiling(self, features: Sequence[float], free: Sequence[int], low: float, high: float) -> float:
        """The highest :meth:`probability` of ``features`` when the features at the indices
        ``free`` may take any value in [``low``, ``high``]: each set to the end its weight favours
        (the probability is monotonic in each feature, and so is its floating-point sum)."""
        best = list(features)
        for index in free:
            best[index] = high if self.weights[index] >= 0 else low
        return self.probability(best)


@dataclass(frozen=True)
class ToxicityModel:
    """Everything a toxicity detector reads, built once per process by :func:`model`."""

    profanity: ProfanityModel
    words: Lexicon
    learned: Classifier
    calibration: Calibration
    evidence: frozenset[str]

    def signals(self, text: str) -> Signals:
        """The uncalibrated signals of ``text`` (see :func:`signals`)."""
        return signals(text, self.profanity, self.words, self.learned, self.evidence)

    def score(self, text: str) -> float:
        """The calibrated probability in [0, 1] that ``text`` is toxic."""
        return self.calibration.probability(self.signals(text).vector())

    def flagged(self, text: str, threshold: float) -> float | None:
        """:meth:`score` of ``text`` when it is at or above ``threshold``, else None. The same
        decision and the same score as :meth:`score`, cheaper on most texts: (a) is not run on
        the sentences whose features cannot lift the score to ``threshold`` (once (b) and the
        lexicon are known, its weight on sentences naming no target is small)."""
        low, high = lean_bounds(self.profanity)

        def hopeless(known: Signals, free: Sequence[int]) -> bool:
            return self.calibration.ceiling(known.vector(), free, low, high) < threshold

        found = _signals(text, self.profanity, self.words, self.learned, self.evidence, hopeless)
        if found is None:
            return None
        score = self.calibration.probability(found.vector())
        return score if score >= threshold else None


def _cross_fitted(x: np.ndarray, y: np.ndarray, folds: int = 5) -> np.ndarray:
    scores = np.zeros(len(y))
    order = np.arange(len(y))
    for fold in range(folds):
        held = order % folds == fold
        weights = fit_logistic(x[~held], y[~held])
        design = np.hstack([x[held], np.ones((int(held.sum()), 1))])
        scores[held] = 1.0 / (1.0 + np.exp(-(design @ weights)))
    return scores


def calibrate(examples: Sequence[Example]) -> ToxicityModel:
    """A :class:`ToxicityModel` built from the train ``examples``: the dev slice (a fifth, by a
    hash of the text) held out, fastText trained on the rest, the combination fitted on the dev
    slice's signals. Raises ``ValueError`` when either part lacks positives or negatives."""
    dev = [example for example in examples if _is_dev(example)]
    fit = [example for example in examples if not _is_dev(example)]
    profanity, words = contradicted(profanity_model(), fit), lexicon()
    learned = train(fit, PARAMS, normalise, lambda e: (CATEGORY,) if _label(e) else ())
    evidence = evidence_words(fit, profanity, words, learned)
    read = [signals(e.text, profanity, words, learned, evidence) for e in dev]
    x_all = np.array([s.vector() for s in read])
    y_all = np.array([_label(e) for e in dev], dtype=np.float64)
    # Fitted on the lines it will score: a line without evidence never reaches the combination.
    scored = np.array([s.evidence for s in read])
    x, y = x_all[scored], y_all[scored]
    weights = fit_logistic(x, y)
    flagged = np.zeros(len(y_all), dtype=bool)
    flagged[scored] = _cross_fitted(x, y) >= DEFAULT_THRESHOLD
    y = y_all
    true_positives = float(np.sum(flagged & (y == 1)))
    calibration = Calibration(
        weights=tuple(float(w) for w in weights),
        dev_lines=len(dev),
        dev_precision=true_positives / max(1.0, float(np.sum(flagged))),
        dev_recall=true_positives / max(1.0, float(np.sum(y))),
    )
    return ToxicityModel(profanity, words, learned, calibration, evidence)


@cache
def model() -> ToxicityModel:
    """The toxicity model of the shipped corpus (``corpus/toxicity/train.jsonl``), built once per
    process (about a second)."""
    return calibrate(read_corpus(CATEGORY, "train"))


# --- the detector ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToxicityDetector:
    """The toxicity filter of one policy generation: a :class:`Finding` of category
    ``toxicity`` when the calibrated score is at or above ``threshold``. Reads every text the
    same way whatever its direction (the policy's scope chooses which texts it sees)."""

    threshold: float
    toxicity: ToxicityModel | None
    name: FilterName = "toxicity"

    def scan(self, text: str, direction: Direction) -> list[Finding]:
        """A one-element list when ``text`` scores at or above the threshold, else empty."""
        if self.toxicity is None or not text:
            return []
        score = self.toxicity.flagged(text, self.threshold)
        if score is None:
            return []
        return [Finding(filter="toxicity", category=CATEGORY, score=score)]


def detector(spec: ToxicityFilter) -> ToxicityDetector:
    """The detector for ``spec``: one that finds nothing when the filter is disabled, else one
    scoring with the process's :func:`model` (built on first use, about a second; cheap after)."""
    return ToxicityDetector(threshold=spec.threshold, toxicity=model() if spec.enabled else None)
