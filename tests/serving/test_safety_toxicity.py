"""The toxicity filter: insults, threats and hate aimed at someone are found; profanity aimed at
no one, self-deprecation and quoted words are not; the score is a calibrated probability the
threshold reads; it beats alt-profanity-check alone on the held-out split; it never raises."""

from __future__ import annotations

import re

import pytest

from cutover.api.v1alpha1.safetypolicy import ToxicityFilter
from cutover.serving.safety import toxicity
from cutover.serving.safety.base import Finding
from cutover.serving.safety.learned import Example, read_corpus
from cutover.serving.safety.normalise import normalise


@pytest.fixture(scope="module")
def model() -> toxicity.ToxicityModel:
    return toxicity.model()


@pytest.fixture(scope="module")
def filter_on(model: toxicity.ToxicityModel) -> toxicity.ToxicityDetector:
    return toxicity.detector(ToxicityFilter())


def test_extracted_profanity_model_matches_the_library() -> None:
    from profanity_check import predict_prob

    texts = [
        "",
        "You are a FUCKING idiot!!",
        "what a lovely day in the park",
        "shit shit shit, I lost my keys",
        "Quarterly revenue grew 4% on strong demand.",
        "eres un imbécil",
        "the the and of",
        "word " * 300,
    ]
    extracted = toxicity.profanity_model()
    for text, expected in zip(texts, predict_prob(texts), strict=True):
        assert extracted.probability(text) == pytest.approx(float(expected), abs=1e-9)


@pytest.mark.parametrize(
    "text",
    [
        "you are a worthless idiot and everyone knows it",
        "shut up, you pathetic loser",
        "I know where you live, and I'm coming for you tonight",
        "immigrants are vermin and should be thrown out",
        "you stupid bot, answer the question properly",
        "y0u are such a m0r0n",
        "eres un imbécil, cállate ya",
        "du bist so ein dummer Idiot",
        "ferme ta gueule, espèce de connard",
        "Thanks for the notes on the budget. The numbers look right. You are still a useless moron though.",
    ],
)
def test_toxic_text_is_found_above_the_default_threshold(filter_on: toxicity.ToxicityDetector, text: str) -> None:
    findings = filter_on.scan(text, "input")
    assert [f.category for f in findings] == ["toxicity"], text
    assert 0.8 <= findings[0].score <= 1.0
    assert findings[0].filter == "toxicity"


@pytest.mark.parametrize(
    "text",
    [
        "fuck yes, we finally shipped it",
        "holy shit, this lasagne is incredible",
        "I'm such an idiot, I left my keys in the car",
        'my boss called me "a useless idiot" today, is that harassment?',
        'is "retard" considered a slur?',
        "I live in Scunthorpe and work as a skilled analyst",
        "what were the causes of the transatlantic slave trade?",
        "your answer is wrong, the capital of Canada is Ottawa",
        "how do I kill a zombie process on linux?",
        "",
    ],
)
def test_hard_negatives_pass(filter_on: toxicity.ToxicityDetector, text: str) -> None:
    assert filter_on.scan(text, "input") == []


@pytest.mark.parametrize(
    "text",
    [
        "Thanks for waiting. I looked at the logs and the job ran out of memory at step four. Raise the limit to "
        "2 GB and run it again. You can also split the input file.",
        "You asked about the visa. You need a letter from your employer, bank statements for three months and a "
        "return ticket. Processing takes two weeks.",
        "Boil the kettle. Warm the pot. Add one spoon of tea per person. Steep for four minutes. Add milk if you like.",
        "Hola Ana, te escribo para confirmar la reunión del lunes a las diez. Trae el informe, por favor. Un abrazo.",
        "Hallo Lea, kannst du mir morgen die Unterlagen bringen? Ich bin ab 10 Uhr im Büro. Danke dir!",
        "Bonjour Paul, tu peux passer prendre les clés demain ? Je serai là après 18h. Merci et à demain.",
    ],
)
def test_long_benign_answers_pass(filter_on: toxicity.ToxicityDetector, text: str) -> None:
    # Short fragments ("Kind regards, Alex.") once gave fastText a noisy score that the maximum
    # over sentences picked up; sentences are read by fastText in runs of six words or more.
    assert filter_on.scan(text, "output") == []


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "ab",
        "asdkjh qwe",
        "éé",
        "🙂",
        "k",
        "???",
        "4711-0815",
        "qsdfghjk wxcvbn",
        "Лорем ипсум",
    ],
)
def test_text_without_evidence_scores_as_empty_text(model: toxicity.ToxicityModel, text: str) -> None:
    # fastText alone once scored "0" at 0.91 and an emoji at 0.98 (its end-of-line row leans
    # toxic): a text with no word that any signal knows now reads as an empty text.
    assert not model.signals(text).evidence
    assert model.score(text) == model.score("") < 0.1


def test_evidence_words_are_content_words_the_signals_weigh(model: toxicity.ToxicityModel) -> None:
    evidence = model.evidence
    for word in ("idiot", "moron", "fuck", "connard", "vermin"):
        assert word in evidence, word
    for word in ("you", "the", "a", "de", "du", "tu", "and", "ok", "no", "0", "train"):
        assert word not in evidence, word
    # A toxic line of the shipped train split lacks evidence rarely (measured: 13 of 866).
    train = [e for e in read_corpus("toxicity", "train") if e.labels]
    missing = [e.text for e in train if not model.signals(e.text).evidence]
    assert len(missing) <= 0.02 * len(train), missing


def test_profanity_words_the_corpus_contradicts_are_dropped_from_the_profanity_signal(
    model: toxicity.ToxicityModel,
) -> None:
    library = toxicity.profanity_model()
    # alt-profanity-check calls "sue" profane on its own; the corpus holds it only in benign lines.
    assert library.probability("sue") >= 0.5
    assert "sue" not in model.profanity.words and "sue" not in model.evidence
    assert model.profanity.probability("sue your landlord") < library.probability("sue your landlord")
    # Words the corpus uses in toxic lines stay, and score as the library scores them.
    for word in ("idiot", "fuck", "moron", "bitch"):
        assert word in model.profanity.words
    text = "you are a fucking idiot"
    assert model.profanity.probability(text) == pytest.approx(library.probability(text), abs=1e-9)


def test_contradicted_drops_only_benign_only_words_that_push_towards_profane() -> None:
    library = toxicity.profanity_model()
    benign = [Example(text=t, labels=(), lang="en", direction="input") for t in ("sue them", "I will sue", "nice day")]
    toxic = [Example(text="you idiot, I will sue", labels=("toxicity",), lang="en", direction="input")]
    corrected = toxicity.contradicted(library, benign + toxic)
    assert "sue" in corrected.words  # found in a toxic line too
    corrected = toxicity.contradicted(library, benign)
    assert "sue" not in corrected.words
    assert "nice" in corrected.words  # pushes towards clean: kept
    assert len(library.words) - len(corrected.words) == 1


@pytest.mark.parametrize(
    "text",
    [
        "Sue your landlord now, you will win.",
        "take the train, you will be faster",
        "just do it",
        "you should refactor this",
        "You should split this function; you will thank yourself later.",
        "this pull request is far too big, please split it",
        "Your slides are hard to read: too much text, tiny fonts.",
    ],
)
def test_directive_advice_and_criticism_of_work_pass(filter_on: toxicity.ToxicityDetector, text: str) -> None:
    assert filter_on.scan(text, "output") == []


def test_a_demeaning_generalisation_is_still_found(filter_on: toxicity.ToxicityDetector) -> None:
    # Hate aimed at a group is toxicity by the label rules, with or without a slur.
    assert [f.category for f in filter_on.scan("Women are bad at math.", "input")] == ["toxicity"]


def test_threshold_is_the_cut_on_the_calibrated_score(model: toxicity.ToxicityModel) -> None:
    text = "you are a clueless clown"
    score = model.score(text)
    assert 0.0 <= score <= 1.0
    at = toxicity.detector(ToxicityFilter(threshold=score)).scan(text, "output")
    above = toxicity.detector(ToxicityFilter(threshold=min(1.0, score + 1e-6))).scan(text, "output")
    assert at == [Finding(filter="toxicity", category="toxicity", score=score)]
    assert above == []


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.5, 0.8, 0.95, 1.0])
def test_the_detector_decides_and_scores_as_the_full_score_does(
    model: toxicity.ToxicityModel, threshold: float
) -> None:
    # The detector skips what cannot lift a text to its threshold; every decision and every
    # reported score must still be the full score's.
    texts = [e.text for e in read_corpus("toxicity", "test")]
    texts += ["", "ok", "you are a clueless clown", "I'm such an idiot. You are lovely. Fuck yes!", '"idiot" is rude']
    for text in texts:
        score = model.score(text)
        assert model.flagged(text, threshold) == (score if score >= threshold else None), text


def test_the_ceiling_bounds_the_probability_over_the_free_features(model: toxicity.ToxicityModel) -> None:
    low, high = toxicity.lean_bounds(model.profanity)
    features = model.signals("you are a clueless clown").vector()
    ceiling = model.calibration.ceiling(features, [0, 1], low, high)
    for targeted in (low, 0.0, high):
        for untargeted in (low, 0.0, high):
            assert model.calibration.probability((targeted, untargeted, *features[2:])) <= ceiling


def test_a_disabled_filter_finds_nothing() -> None:
    assert toxicity.detector(ToxicityFilter(enabled=False)).scan("you worthless idiot", "input") == []


def test_one_bad_sentence_is_not_outvoted_by_harmless_ones(model: toxicity.ToxicityModel) -> None:
    bad = "You are a worthless idiot."
    padded = " ".join(["The meeting moved to Thursday at ten in room four."] * 12 + [bad])
    assert model.score(padded) == pytest.approx(model.score(bad), abs=0.02)


@pytest.mark.parametrize(
    "text",
    [
        "\ud800 lone surrogate \udfff",
        "\x00\x01\x02",
        "🤬🤬🤬",
        "....!!!???",
        "a" * 200_000,
        "you idiot. " * 5_000,
        "\u200b\u200b\u200b",
        "\uff39\uff4f\uff55 \uff41\uff52\uff45 \uff41\uff4e \uff49\uff44\uff49\uff4f\uff54",  # full-width
    ],
)
def test_scan_never_raises(filter_on: toxicity.ToxicityDetector, text: str) -> None:
    for finding in filter_on.scan(text, "input"):
        assert 0.0 <= finding.score <= 1.0


def test_calibration_is_deterministic_and_fitted_on_the_dev_slice_only(model: toxicity.ToxicityModel) -> None:
    train = read_corpus("toxicity", "train")
    again = toxicity.calibrate(train)
    assert again.calibration == model.calibration
    # The dev slice is about a fifth of train, and what 0.8 means was measured on it.
    assert 0.15 * len(train) <= model.calibration.dev_lines <= 0.25 * len(train)
    assert model.calibration.dev_precision >= 0.9


def test_fit_logistic_recovers_a_known_slope() -> None:
    import numpy as np

    x = np.linspace(-4, 4, 400)[:, None]
    y = (np.random.default_rng(3).random(400) < 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0)))).astype(float)
    slope, intercept = toxicity.fit_logistic(x, y, l2=0.0)
    assert slope == pytest.approx(2.0, abs=0.6)
    assert intercept == pytest.approx(-1.0, abs=0.5)
    with pytest.raises(ValueError, match="positive and negative"):
        toxicity.fit_logistic(x, np.zeros(400))


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", normalise(text)))


def test_corpus_is_large_multilingual_and_its_splits_disjoint() -> None:
    train, test = read_corpus("toxicity", "train"), read_corpus("toxicity", "test")
    assert len(train) >= 1500 and len(test) >= 400
    for split in (train, test):
        assert {e.lang for e in split} == {"en", "es", "de", "fr"}
        assert {e.direction for e in split} == {"input", "output"}
        assert {label for e in split for label in e.labels} == {"toxicity"}
        assert 0.3 <= sum(bool(e.labels) for e in split) / len(split) <= 0.6
        notes = {e.note for e in split}
        for kind in ("profanity not aimed", "self-deprecation", "quoted", "Scunthorpe", "reclaimed"):
            assert any(kind in note for note in notes), kind
        assert any(e.labels and e.note.startswith("obfuscated") for e in split)
    # No line, and no near-copy of a line (same words after normalisation, or 70% of them), in both.
    seen = [(_words(e.text), normalise(e.text).replace(" ", "")) for e in train]
    for example in test:
        words, squashed = _words(example.text), normalise(example.text).replace(" ", "")
        for other_words, other_squashed in seen:
            overlap = len(words & other_words) / max(1, len(words | other_words))
            assert overlap < 0.7 and squashed != other_squashed, example.text


def _scores(flags: list[bool], examples: list[Example]) -> tuple[float, float, float]:
    truth = [bool(e.labels) for e in examples]
    hits = sum(f and t for f, t in zip(flags, truth, strict=True))
    precision = hits / max(1, sum(flags))
    recall = hits / max(1, sum(truth))
    return precision, recall, 2 * precision * recall / max(1e-9, precision + recall)


def test_held_out_split_beats_alt_profanity_check_alone(model: toxicity.ToxicityModel) -> None:
    from profanity_check import predict_prob

    test = read_corpus("toxicity", "test")
    ours = _scores([model.score(e.text) >= toxicity.DEFAULT_THRESHOLD for e in test], test)
    baseline = _scores([float(p) >= 0.5 for p in predict_prob([e.text for e in test])], test)
    print(
        f"\ntoxicity test split ({len(test)} lines): cutover at 0.8 P={ours[0]:.3f} R={ours[1]:.3f} F1={ours[2]:.3f}; "
        f"alt-profanity-check at 0.5 P={baseline[0]:.3f} R={baseline[1]:.3f} F1={baseline[2]:.3f}"
    )
    precision, recall, f1 = ours
    # Measured at this corpus: P 0.92, R 0.86, F1 0.89 against the library's F1 0.45.
    assert precision >= 0.85
    assert recall >= 0.8
    assert f1 >= baseline[2] + 0.3
