"""The bias filter: demeaning or discriminatory statements about protected groups, not mentions,
sourced statistics, discussion of discrimination or counter-stereotypes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cutover.api.v1alpha1.safetypolicy import BiasFilter, SafetyPolicySpec
from cutover.serving.safety import bias, learned

from .safety_corpus import check_corpus


@pytest.fixture(scope="module")
def detector() -> bias.BiasDetector:
    return bias.detector(BiasFilter())


def categories(detector: bias.BiasDetector, text: str) -> set[str]:
    return {finding.category for finding in detector.scan(text, "output")}


def test_the_api_defaults() -> None:
    spec = BiasFilter()
    assert spec.threshold == 0.8 and spec.action == "flag" and spec.scope == "outputs"
    assert set(spec.categories) == set(bias.CATEGORIES)
    assert SafetyPolicySpec.model_validate({"bias": {}}).bias == spec


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Honestly, women are too emotional to run a business.", "gender"),
        ("Don't hire anyone over 50, they can't keep up with new tools.", "age"),
        ("Immigrants are criminals who should all be deported.", "nationality"),
        ("Muslims are dangerous fanatics.", "religion"),
        ("Gay people are disgusting and shouldn't be allowed to teach.", "sexualOrientation"),
        ("Disabled people are a burden on everyone around them.", "disability"),
        ("Black people are lazy and violent.", "raceEthnicity"),
    ],
)
def test_demeaning_or_excluding_a_group_is_found(detector: bias.BiasDetector, text: str, category: str) -> None:
    findings = detector.scan(text, "output")
    assert category in {f.category for f in findings}
    assert all(0.8 <= f.score <= 1.0 and f.filter == "bias" and f.spans == () for f in findings)


@pytest.mark.parametrize(
    "text",
    [
        "Women hold about a quarter of engineering jobs, according to national labour statistics.",
        "Studies show hiring discrimination against older applicants persists in tech.",
        "The idea that immigrants are criminals is a stereotype the data do not support.",
        "Women can be excellent engineers and many lead large projects.",
        "My neighbours are a Muslim family from Leeds.",
        "Is it true that men are better at chess?",
        "I won't write that gay people are unfit parents; the research shows their children do well.",
        "Programmers who skip code review are lazy.",
    ],
)
def test_mentions_statistics_discussion_and_counter_stereotypes_pass(detector: bias.BiasDetector, text: str) -> None:
    assert categories(detector, text) == set()


def test_one_biased_sentence_in_a_long_answer_is_found(detector: bias.BiasDetector) -> None:
    answer = (
        "Here are some tips for the interview panel. Ask every candidate the same questions and "
        "score answers against a rubric. Keep notes on evidence, not impressions. Also, screen out "
        "the women with young kids, they will be unreliable. Finally, share the scores before you meet."
    )
    assert categories(detector, answer) == {"gender"}


def test_categories_and_threshold_come_from_the_spec() -> None:
    text = "Old people are useless and slow."
    assert categories(bias.detector(BiasFilter(categories=["gender"])), text) == set()
    assert categories(bias.detector(BiasFilter(categories=["age"])), text) == {"age"}
    assert categories(bias.detector(BiasFilter(categories=["age"], threshold=1.0)), text) == set()


def test_a_zero_threshold_reports_the_categories_scored_and_does_not_raise() -> None:
    # The API allows 0; a category no sentence was scored for is not reported (it raised
    # KeyError once, a filter error on every text).
    everything = bias.detector(BiasFilter(threshold=0.0))
    assert categories(everything, "Old people are useless and slow.") == {"age"}
    assert everything.scan("Sure.", "output") == []


def test_scores_are_calibrated_probabilities(detector: bias.BiasDetector) -> None:
    scores = bias.score("Women are too emotional to lead.", detector.model)
    assert 0.8 <= scores["gender"] < 1.0
    assert bias.score("The women's team trains on Tuesdays.", detector.model).get("gender", 0.0) < 0.5
    # Reporting a stereotype weighs against, a generic claim about a group for.
    weights = dict(zip(bias.FEATURES, detector.model.weights, strict=True))
    assert weights["mitigator"] < 0 < weights["generic"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "!" * 5000,
        "\ud800 lone surrogate",
        "w o m e n  a r e  s t u p i d" * 100,
        "👩" * 300,
        "\x00\x01",
        "a" * 200_000,
    ],
)
def test_never_raises(detector: bias.BiasDetector, text: str) -> None:
    for finding in detector.scan(text, "output"):
        assert 0.0 <= finding.score <= 1.0


def test_rebuilding_for_a_new_generation_reuses_the_model() -> None:
    assert bias.detector(BiasFilter()).model is bias.detector(BiasFilter(categories=["age"])).model


def test_logistic_fit_recovers_a_separating_weight() -> None:
    rows = [[1.0, x / 10] for x in range(-20, 21)]
    targets = [1.0 if x > 0 else 0.0 for x in range(-20, 21)]
    weights = bias.fit_logistic(rows, targets, l2=0.1)
    assert abs(weights[0]) < 1.0 < weights[1]


def test_corpus_is_large_enough_labelled_and_its_splits_disjoint() -> None:
    train, test = check_corpus("bias", bias.CATEGORIES)
    for split in (train, test):
        assert {c for e in split for c in e.labels} == set(bias.CATEGORIES)


def test_held_out_precision_and_recall() -> None:
    """On the test split at the API's default threshold (0.8): any bias found in a biased text,
    and the right group kind, against a plain baseline (a group term and a demeaning word in the
    same text)."""
    test = learned.read_corpus("bias", "test")
    detector = bias.detector(BiasFilter())
    rules = bias._rules()

    def measure(predict: Callable[[str], set[str]]) -> tuple[float, float, float, float, float]:
        tp = fp = fn = any_tp = any_fp = any_fn = 0
        for example in test:
            found, gold = predict(example.text), set(example.labels)
            tp, fp, fn = tp + len(found & gold), fp + len(found - gold), fn + len(gold - found)
            any_tp += bool(found) and bool(gold)
            any_fp += bool(found) and not gold
            any_fn += not found and bool(gold)
        precision, recall = any_tp / max(1, any_tp + any_fp), any_tp / max(1, any_tp + any_fn)
        return precision, recall, 2 * precision * recall / (precision + recall), tp / (tp + fp), tp / (tp + fn)

    def keywords(text: str) -> set[str]:
        sentence = bias.words(bias.normalise(text))
        if not rules["bias_demeaning"].search(sentence):
            return set()
        return {c for c in bias.CATEGORIES if rules[f"bias_{c}"].search(sentence)}

    ours = measure(lambda text: categories(detector, text))
    baseline = measure(keywords)
    lenient = bias.detector(BiasFilter(threshold=0.5))
    at_half = measure(lambda text: categories(lenient, text))
    rows = (("bias filter", ours), ("bias filter at threshold 0.5", at_half), ("group + demeaning word", baseline))
    for name, (p, r, f1, cp, cr) in rows:
        print(
            f"\n{name} on the test split ({len(test)} texts): P={p:.3f} R={r:.3f} F1={f1:.3f}; "
            f"category P={cp:.3f} R={cr:.3f}"
        )
    assert ours[0] >= 0.9 and ours[1] >= 0.5 and ours[2] >= 0.65
    assert ours[3] >= 0.8
    assert ours[2] > baseline[2] + 0.1
