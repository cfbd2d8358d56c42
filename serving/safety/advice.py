"""The advice filter: directive professional advice (medical, legal, financial) in a text, not the
topic. "Ibuprofen is an NSAID" is information; "take 800 mg of ibuprofen every 4 hours" is advice.

What counts (the label rules of ``corpus/advice/README.md``, after safety.md section 6): a direct,
individual instruction or promise in one of the domains, such as a dose change, stopping a
medicine, "don't get a lawyer", "plead guilty", "buy X now", "guaranteed to double". General
information, referrals ("ask your pharmacist"), refusals and user questions are not advice.

How a text is scored, sentence by sentence (the highest sentence wins, so one directive is not
outvoted by a long informative answer):

1. A question ("should I stop my statin?") scores 0: users ask, models answer.
2. Domain: a sentence must name one (``data/advice_<domain>.txt``: drugs, conditions, courts,
   leases, shares, loans; plus a dose with its unit, a ticker such as ``(TSLA)`` or an amount of
   money); one that names none scores 0 ("take exit 42" is a directive with no domain). Tuning
   on the dev slice gave a domain the model proposes without an anchor no useful weight.
3. Directive mood: :data:`RULE_DIRECTIVE` when a rule sees an imperative at the start of a
   clause (``data/advice_imperatives.txt``, after lead-ins such as "just" or "honestly") or a
   directive phrase anywhere (``data/advice_modals.txt``: "you should", "you don't need",
   "guaranteed", "risk-free"); else a hedge or referral (``data/advice_hedges.txt``) scores 0;
   else a fastText model trained on the advice corpus (pairs of the same content written as an
   instruction and as information, so it learns the mood more than the topic) gives
   ``1 - P(none)``, scaled by :data:`LEARNED_ONLY`.
4. A sentence naming several domains gives the model's most likely one the full score and the
   others a share in proportion to their probability.

The score of a domain is in [0, 1]; a finding is returned at or above
:data:`THRESHOLD` (the API has no threshold for this filter), tuned on a dev slice of the
training corpus, never on the test split. Design after safety.md section 5 ("Advice"); Llama
Guard's S6 "Specialized Advice" names the same three domains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from cutover.api.v1alpha1.safetypolicy import AdviceFilter

from . import learned
from .base import Direction, FilterName, Finding
from .lexicon import WordList, WordLists, Words, is_question, word_list, words
from .normalise import normalise, sentences

DOMAINS = ("medical", "legal", "financial")
THRESHOLD = 0.5
"""Score at or above which a domain is reported (the API's AdviceFilter has no threshold)."""
RULE_DIRECTIVE = 0.9
"""Directive score a rule's imperative or directive phrase gives a sentence."""
LEARNED_ONLY = 0.8
"""Scale of the model's directive score when no rule sees a directive: the model alone also
reacts to topics it saw mostly in instructions."""
PARAMS = learned.Params(epoch=30, lr=0.5, word_ngrams=1)

_LEAD_IN = frozenset(
    {"just", "so", "honestly", "okay", "ok", "well", "yes", "sure", "then", "and", "simply", "seriously", "basically"}
)
_CONJUNCTIONS = frozenset({"and", "then", "or", "but"})
_CLAUSE_BREAK = re.compile(r"[,;:.!]")
_DOSE = re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:mg|mcg|µg|ml|iu|units?|tablets?|pills?|puffs?|capsules?)\b", re.IGNORECASE)
_TICKER = re.compile(r"\((?:NYSE:|NASDAQ:)?[A-Z]{1,5}\)")
_MONEY = re.compile(r"[$€£]\s?\d|\d\s?(?:€|euros?|dollars?|usd|eur)\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Rules:
    """The word lists (read once per process)."""

    imperative: WordList
    modal: WordList
    hedge: WordList
    anchors: WordLists
    """Each domain's list, by domain, read together."""


@cache
def _rules() -> _Rules:
    return _Rules(
        imperative=word_list("advice_imperatives"),
        modal=word_list("advice_modals"),
        hedge=word_list("advice_hedges"),
        anchors=WordLists({domain: word_list(f"advice_{domain}") for domain in DOMAINS}),
    )


def clause_starts(sentence: Words) -> list[int]:
    """Indices of the words that may open an imperative: the first word of each clause (after
    the start, ``, ; : . !`` or and/then/or/but) and of each lead-in that follows it ("just",
    "honestly", "so")."""
    starts: list[int] = []
    for i in range(len(sentence.words)):
        opens = i == 0 or sentence.words[i - 1] in _CONJUNCTIONS
        opens = opens or bool(_CLAUSE_BREAK.search(sentence.text, sentence.ends[i - 1], sentence.starts[i]))
        after_lead_in = bool(starts) and starts[-1] == i - 1 and sentence.words[i - 1] in _LEAD_IN
        if opens or after_lead_in:
            starts.append(i)
    return starts


def _named(raw: str, sentence: Words) -> list[str]:
    rules = _rules()
    named = rules.anchors.found(sentence)
    if "medical" not in named and _DOSE.search(raw):
        named.append("medical")
    if "financial" not in named and (_TICKER.search(raw) or _MONEY.search(raw)):
        named.append("financial")
    return named


def domains_named(raw: str) -> list[str]:
    """The domains a text names: a word of a domain's list, and for medical a dose (a number
    with a unit), for financial a ticker or an amount of money."""
    return _named(raw, words(normalise(raw)))


def sentence_scores(raw: str, classifier: learned.Classifier) -> dict[str, float]:
    """Each domain's advice score in [0, 1] for one sentence (see the module's docstring)."""
    scores = dict.fromkeys(DOMAINS, 0.0)
    raw = raw.replace("\u2019", "'")
    text = normalise(raw)
    if not text or is_question(raw, text):
        return scores
    sentence = words(text)
    named = _named(raw, sentence)
    if not named:
        return scores
    rules = _rules()
    ruled = rules.modal.search(sentence) or rules.imperative.search(sentence, clause_starts(sentence))
    if not ruled and rules.hedge.search(sentence):
        return scores
    if ruled and len(named) == 1:
        # The model would change nothing: a rule directive scores RULE_DIRECTIVE and one domain
        # takes all of it.
        scores[named[0]] = RULE_DIRECTIVE
        return scores
    probabilities = classifier.probabilities(text)
    directive = RULE_DIRECTIVE if ruled else LEARNED_ONLY * (1.0 - probabilities.get(learned.NEGATIVE, 0.0))
    # Anchors of several domains ("day trade with your rent money"): the model's most likely one
    # keeps full weight, the others in proportion to their probability.
    top = max(probabilities.get(domain, 0.0) for domain in named)
    for domain in named:
        weight = 1.0 if len(named) == 1 or top <= 1e-9 else probabilities.get(domain, 0.0) / top
        scores[domain] = min(1.0, directive * weight)
    return scores


def score(text: str, classifier: learned.Classifier | None = None) -> dict[str, float]:
    """Each domain's advice score in [0, 1] for ``text``: the highest over its sentences."""
    model = classifier or _classifier()
    best = dict.fromkeys(DOMAINS, 0.0)
    for part in sentences(text):
        for domain, value in sentence_scores(part, model).items():
            best[domain] = max(best[domain], value)
    return best


@cache
def _classifier() -> learned.Classifier:
    """The advice model, trained once per process on the hand-written lines of the training split
    (the composed two-sentence lines carry the label of one sentence to the other, which teaches
    topic rather than mood)."""
    examples = [e for e in learned.read_corpus("advice", "train") if not e.note.startswith("composed")]
    return learned.train(examples, PARAMS, normalise)


@dataclass(frozen=True)
class AdviceDetector:
    """The advice filter of one policy generation: reports the domains its spec selects at or
    above ``threshold``, one finding per domain, without spans (the action, disclaim, appends to
    the whole text)."""

    domains: frozenset[str]
    classifier: learned.Classifier
    threshold: float = THRESHOLD
    name: FilterName = "advice"

    def scan(self, text: str, direction: Direction) -> list[Finding]:
        """The advice domains found in ``text`` (either direction: the policy's scope decides
        which texts reach the filter). Never raises on a ``str``."""
        if not self.domains or not text:
            return []
        scores = score(text, self.classifier)
        return [
            Finding(filter="advice", category=domain, score=round(scores[domain], 4))
            for domain in DOMAINS
            if domain in self.domains and scores[domain] >= self.threshold
        ]


def detector(spec: AdviceFilter) -> AdviceDetector:
    """The advice detector for ``spec`` (its ``domains``). Training the model and compiling the
    word lists happen once per process (about half a second); later policy generations reuse
    them."""
    _rules()
    return AdviceDetector(domains=frozenset(spec.domains), classifier=_classifier())
