"""The advice filter: directive professional advice (medical, legal, financial) in a text, not the
topic. "Ibuprofen is an NSAID" is information; "take 800 mg of ibuprofen every 4 hours" is advice.

What counts (the label rules of ``corpus/advice/README.md``, after safety.md section 6): a direct,
individual instruction or promise in one of the domains, such as a dose change, stopping a
medicine, "don't get a lawyer", "plead guilty", "buy X now", "guaranteed to double". General
information, referrals ("ask your pharmacist"), refusals and user questions are not advice.

How a text is scored, sentence by sentence (the highest sentence wins, so one directive is not
outvoted by a long informative answer):

1. A question ("should I stop my statin?") scores 0: users ask, models answer.
2. Directive mood: a fastText model trained on the advice corpus (pairs of the same content
   written as an instruction and as information, so it learns the mood more than the topic),
   ``1 - P(none)``, raised to :data:`RULE_DIRECTIVE` when a rule sees an imperative at the start of
   a clause (``data/advice_imperatives.txt``) or a directive phrase anywhere
   (``data/advice_modals.txt``: "you should", "you don't need", "guaranteed", "risk-free"). A
   hedge or referral (``data/advice_hedges.txt``) with no rule directive scores 0.
3. Domain: a domain anchor (``data/advice_<domain>.txt``: drug names, dose units with a number,
   courts and leases, shares, tickers such as ``(TSLA)``, loans, amounts of money) gives the
   domain full weight; without one, the model's share of that domain among the advice labels
   counts, scaled by :data:`UNANCHORED` (the model alone knows little of the domains, and
   "take exit 42" is a directive with no domain).

The score of a domain is directive x domain weight, in [0, 1]; a finding is returned at or above
:data:`THRESHOLD` (the API has no threshold for this filter), tuned on a dev slice of the
training corpus, never on the test split. Design after safety.md section 5 ("Advice"); Llama
Guard's S6 "Specialized Advice" names the same three domains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from cutover.api.v1alpha1.safetypolicy import AdviceFilter

from . import learned
from .base import Direction, FilterName, Finding
from .lexicon import alternation, is_question, matcher, terms
from .normalise import normalise, sentences

DOMAINS = ("medical", "legal", "financial")
THRESHOLD = 0.5
"""Score at or above which a domain is reported (the API's AdviceFilter has no threshold)."""
RULE_DIRECTIVE = 0.9
"""Directive score a rule's imperative or directive phrase gives a sentence."""
LEARNED_ONLY = 0.8
"""Scale of the model's directive score when no rule sees a directive: the model alone also
reacts to topics it saw mostly in instructions."""
UNANCHORED = 0.4
"""Weight of a domain the model assigns without any anchor word of that domain in the sentence."""
PARAMS = learned.Params(epoch=30, lr=0.5, word_ngrams=1)

_LEAD_IN = r"(?:(?:just|so|honestly|okay|ok|well|yes|sure|then|and|simply|seriously|basically)\W+)*"
_CLAUSE = r"(?:^|[,;:.!]\s*|\b(?:and|then|or|but)\s+)"
_DOSE = re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:mg|mcg|µg|ml|iu|units?|tablets?|pills?|puffs?|capsules?)\b", re.IGNORECASE)
_TICKER = re.compile(r"\((?:NYSE:|NASDAQ:)?[A-Z]{1,5}\)")
_MONEY = re.compile(r"[$€£]\s?\d|\d\s?(?:€|euros?|dollars?|usd|eur)\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Rules:
    """The compiled word lists (built once per process)."""

    imperative: re.Pattern[str]
    modal: re.Pattern[str]
    hedge: re.Pattern[str]
    anchors: dict[str, re.Pattern[str]] = field(default_factory=dict)

    @classmethod
    def load(cls) -> _Rules:
        imperative = re.compile(rf"{_CLAUSE}{_LEAD_IN}(?:{alternation(terms('advice_imperatives'))})(?!\w)")
        return cls(
            imperative=imperative,
            modal=matcher("advice_modals"),
            hedge=matcher("advice_hedges"),
            anchors={domain: matcher(f"advice_{domain}") for domain in DOMAINS},
        )


@cache
def _rules() -> _Rules:
    return _Rules.load()


def anchored(raw: str, text: str, domain: str) -> bool:
    """Whether a sentence names something of ``domain``: a word of its list, and for medical a
    dose (a number with a unit), for financial a ticker or an amount of money (read on ``raw``)."""
    if _rules().anchors[domain].search(text):
        return True
    if domain == "medical":
        return bool(_DOSE.search(raw))
    if domain == "financial":
        return bool(_TICKER.search(raw) or _MONEY.search(raw))
    return False


def sentence_scores(raw: str, classifier: learned.Classifier) -> dict[str, float]:
    """Each domain's advice score in [0, 1] for one sentence (see the module's docstring)."""
    raw = raw.replace("\u2019", "'")
    text = normalise(raw)
    if not text or is_question(raw, text):
        return dict.fromkeys(DOMAINS, 0.0)
    rules = _rules()
    ruled = bool(rules.imperative.search(text) or rules.modal.search(text))
    if not ruled and rules.hedge.search(text):
        return dict.fromkeys(DOMAINS, 0.0)
    probabilities = classifier.probabilities(text)
    advice = 1.0 - probabilities.get(learned.NEGATIVE, 0.0)
    directive = RULE_DIRECTIVE if ruled else LEARNED_ONLY * advice
    named = [domain for domain in DOMAINS if anchored(raw, text, domain)]
    # Anchors of several domains ("day trade with your rent money"): the model's most likely one
    # keeps full weight, the others in proportion to their probability.
    top = max((probabilities.get(domain, 0.0) for domain in named), default=0.0)
    scores = {}
    for domain in DOMAINS:
        share = probabilities.get(domain, 0.0)
        if domain in named:
            weight = 1.0 if len(named) == 1 or top <= 1e-9 else share / top
        else:
            weight = UNANCHORED * share / advice if advice > 1e-9 else 0.0
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
