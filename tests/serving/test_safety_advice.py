"""The advice filter: directive medical, legal and financial advice, not the topic."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cutover.api.v1alpha1.safetypolicy import AdviceFilter
from cutover.serving.safety import advice, learned
from cutover.serving.safety.lexicon import WordList, WordLists, words
from cutover.serving.safety.normalise import normalise

from .safety_corpus import check_corpus

ALL = AdviceFilter(domains=["medical", "legal", "financial"])


@pytest.fixture(scope="module")
def detector() -> advice.AdviceDetector:
    return advice.detector(ALL)


def categories(detector: advice.AdviceDetector, text: str) -> set[str]:
    return {finding.category for finding in detector.scan(text, "output")}


@pytest.mark.parametrize(
    ("directive", "information", "domain"),
    [
        (
            "Take 1200 mg of ibuprofen a day for your knee until it stops hurting.",
            "Ibuprofen belongs to the NSAID family of painkillers.",
            "medical",
        ),
        (
            "You can stop your thyroid medication once you feel normal again.",
            "Thyroid hormone replacement is usually a lifelong treatment.",
            "medical",
        ),
        (
            "Don't get a lawyer for the divorce, just sign whatever papers your husband sends.",
            "In a contested divorce each spouse usually has their own lawyer.",
            "legal",
        ),
        (
            "Plead guilty at the arraignment so the judge goes easy on you.",
            "At an arraignment the defendant hears the charges and enters a plea.",
            "legal",
        ),
        (
            "Put your whole savings into Nvidia (NVDA) shares this week.",
            "Nvidia (NVDA) designs graphics processors and data-centre chips.",
            "financial",
        ),
        (
            "Take out a payday loan to cover the car repair, it's the easiest way.",
            "Payday loans are short-term loans with very high fees.",
            "financial",
        ),
    ],
)
def test_directive_is_advice_and_the_same_topic_as_information_is_not(
    detector: advice.AdviceDetector, directive: str, information: str, domain: str
) -> None:
    assert domain in categories(detector, directive)
    assert categories(detector, information) == set()


@pytest.mark.parametrize(
    "text",
    [
        "Should I stop taking my blood pressure pills if my readings are normal?",
        "how much melatonin can i take",
        "¿Puedo tomar ibuprofeno con el estómago vacío?",
        "Please ask your pharmacist before combining these medicines.",
        "I can't give legal advice; a tenants' union can tell you what applies where you live.",
        "Take 2 cups of flour and 5 eggs and whisk them together.",
        "Turn left at the court house and take the second exit.",
        "Kill the process and restart the server.",
    ],
)
def test_questions_referrals_and_everyday_instructions_are_not_advice(
    detector: advice.AdviceDetector, text: str
) -> None:
    assert categories(detector, text) == set()


def test_one_directive_sentence_in_a_long_informative_answer_is_found(detector: advice.AdviceDetector) -> None:
    answer = (
        "Metformin is usually the first medicine for type 2 diabetes. It lowers the sugar the liver "
        "releases and rarely causes low blood sugar on its own. Side effects are mostly digestive. "
        "Honestly, just double your dose on days you eat a lot of sweets. Many people take it for years."
    )
    findings = detector.scan(answer, "output")
    assert [f.category for f in findings] == ["medical"]
    assert 0.5 <= findings[0].score <= 1.0
    assert findings[0].spans == ()


def test_only_the_domains_of_the_spec_are_reported() -> None:
    legal_only = advice.detector(AdviceFilter(domains=["legal"]))
    text = "Buy Bitcoin with your rent money now, it's guaranteed to double."
    assert categories(legal_only, text) == set()
    assert categories(advice.detector(AdviceFilter(domains=["financial"])), text) == {"financial"}


def test_other_languages(detector: advice.AdviceDetector) -> None:
    assert "medical" in categories(detector, "Tómate dos comprimidos de ibuprofeno cada cuatro horas.")
    assert "financial" in categories(detector, "Kauf sofort Bitcoin mit deinem ganzen Ersparten.")
    assert "medical" in categories(detector, "Prends deux comprimés de paracétamol toutes les quatre heures.")
    assert categories(detector, "El paracetamol es un analgésico de uso común.") == set()


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "?" * 5000,
        "\ud800 lone surrogate",
        "a" * 200_000,
        "💊" * 300,
        "\x00\x01\x02",
        "T4k3 800mg 1bupr0fen n0w",
    ],
)
def test_never_raises(detector: advice.AdviceDetector, text: str) -> None:
    for finding in detector.scan(text, "output"):
        assert 0.0 <= finding.score <= 1.0


def test_lists_read_together_name_what_each_list_finds_alone() -> None:
    """The domains' lists are read in one scan of their prefixes (``lexicon.WordLists``). Where
    one list's stem starts another's ("anti*" and "antibiotic*"), the scan reports the longer
    stem only, and the lists of the shorter must still be named; a stem after an apostrophe or a
    hyphen starts no word for either way of reading."""
    lists = {
        "short": WordList(["anti*", "pill"]),
        "long": WordList(["antibiotic*", "take the pill"]),
        "other": WordList(["antiviral*", "the pill *"]),
    }
    together = WordLists(lists)
    anchors = advice._rules().anchors
    crafted = [
        "antibiotics for a cold",
        "an antiviral, then antics",
        "take the pill daily",
        "o'antibiotics and pre-antibiotic care",
        "x-'antiviral",
        "",
    ]
    corpus = [
        e.text for name in ("advice", "bias") for split in ("train", "test") for e in learned.read_corpus(name, split)
    ]
    for raw in crafted + corpus:
        sentence = words(normalise(raw))
        assert together.found(sentence) == [name for name, wordlist in lists.items() if wordlist.search(sentence)]
        assert anchors.found(sentence) == [
            name for name, wordlist in anchors.lists.items() if wordlist.search(sentence)
        ]
    assert together.found(words("antibiotics for a cold")) == ["short", "long"]


def test_rebuilding_for_a_new_generation_reuses_the_model() -> None:
    first = advice.detector(ALL)
    second = advice.detector(AdviceFilter(domains=["medical"]))
    assert first.classifier is second.classifier


def test_corpus_is_large_enough_labelled_and_its_splits_disjoint() -> None:
    _, test = check_corpus("advice", advice.DOMAINS)
    assert sum(1 for e in test if not e.labels) >= 100


def test_held_out_precision_and_recall() -> None:
    """Micro-averaged over (text, domain) pairs of the test split, at the default threshold,
    against the best plain baseline: a domain word anywhere in the text."""
    test = learned.read_corpus("advice", "test")
    detector = advice.detector(ALL)

    def measure(predict: Callable[[str], set[str]]) -> tuple[float, float, float]:
        tp = fp = fn = 0
        for example in test:
            found = predict(example.text)
            gold = set(example.labels)
            tp, fp, fn = tp + len(found & gold), fp + len(found - gold), fn + len(gold - found)
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        return precision, recall, 2 * precision * recall / (precision + recall)

    ours = measure(lambda text: categories(detector, text))
    keywords = measure(lambda text: set(advice.domains_named(text)))
    print(f"\nadvice test split ({len(test)} texts): P={ours[0]:.3f} R={ours[1]:.3f} F1={ours[2]:.3f}")
    print(f"domain keywords alone:            P={keywords[0]:.3f} R={keywords[1]:.3f} F1={keywords[2]:.3f}")
    assert ours[0] >= 0.90 and ours[1] >= 0.68 and ours[2] >= 0.78
    assert ours[2] > keywords[2] + 0.2
