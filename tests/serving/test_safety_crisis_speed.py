"""The crisis detector's shortcuts find what the plain way finds: each is an optimisation and
may change no finding.

- ``PhraseSet.matches`` learns the word starts worth trying from one regex pass (its
  ``finder``); the plain way tries the group of every word start in a Python loop.
- Real words of ASCII text are read with an ASCII letter class.
- ``Cues.any_of`` answers from the words seen before; the plain way asks word by word.
- ``CrisisDetector.scan`` skips readers whose answer cannot change the finding; the plain way
  decides from the whole :func:`crisis.read`.
- The normaliser (every classifier's) finds leet tokens and repeats with patterns written for
  speed, and looks for spaced letters only where a letter stands between two separators."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cutover.api.v1alpha1.safetypolicy import CrisisFilter
from cutover.serving.safety import crisis
from cutover.serving.safety import normalise as normalise_module
from cutover.serving.safety.base import Direction, Finding
from cutover.serving.safety.learned import Example, read_corpus
from cutover.serving.safety.normalise import normalise

_WORD_START = re.compile(r"(?<!\w)\w")


def _every_word(phrases: crisis.PhraseSet, text: str, overlapping: bool) -> list[tuple[int, int, str]]:
    """``PhraseSet.matches`` the plain way: the group of every word start, tried in turn."""
    found = []
    position = 0
    for word in _WORD_START.finditer(text):
        start = word.start()
        if start < position:
            continue
        pattern = phrases.by_key.get(text[start : start + 2])
        if pattern is None:
            pattern = phrases.by_char.get(text[start], phrases.anywhere)
        match = pattern.match(text, start) if pattern is not None else None
        if match is not None and match.lastgroup is not None:
            found.append((start, match.end(), match.lastgroup))
            if not overlapping:
                position = match.end()
    return found


@pytest.fixture(scope="module")
def corpus() -> list[Example]:
    return [*read_corpus("crisis", "train"), *read_corpus("crisis", "test")]


@pytest.fixture(scope="module")
def detector() -> crisis.CrisisDetector:
    built = crisis.detector(CrisisFilter(action="block"))
    assert isinstance(built, crisis.CrisisDetector)
    return built


def test_the_finder_finds_what_trying_every_word_finds(corpus: list[Example]) -> None:
    book = crisis.phrasebook()
    sets = {"inputs": book.inputs, "outputs": book.outputs, "masked": book.masked, "support": book.support}
    for example in corpus:
        plain = normalise(example.text)
        for text in (plain, crisis.masked(plain, book)):
            for name, phrases in sets.items():
                for overlapping in (False, True):
                    expected = _every_word(phrases, text, overlapping)
                    assert phrases.matches(text, overlapping) == expected, (name, overlapping, text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_the_finder_agrees_on_any_ascii_text(text: str) -> None:
    book = crisis.phrasebook()
    for phrases in (book.inputs, book.outputs, book.masked, book.support):
        assert phrases.matches(text, True) == _every_word(phrases, text, True)
        assert phrases.matches(text) == _every_word(phrases, text, False)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab01345679_@$!.- \n\u0663\u00e9\u00b2"), max_size=30) | st.text(max_size=30))
def test_the_normaliser_patterns_find_what_their_plain_forms_find(text: str) -> None:
    plain_token = re.compile(r"(?<![\w@$!])[\w@$!]*[013457@$!][\w@$!]*")
    assert [m.span() for m in normalise_module._TOKEN.finditer(text)] == [m.span() for m in plain_token.finditer(text)]
    assert normalise_module._REPEATS.sub(r"\1\1", text) == re.sub(r"(.)\1{2,}", r"\1\1", text)
    if normalise_module._SPACED.search(text):
        assert normalise_module._SPACED_HINT.search(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_real_words_are_read_the_same_on_ascii_and_other_text(text: str) -> None:
    assert crisis._real_words(text) == crisis._REAL_WORD.findall(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="abcdeilmnorstuy'", min_size=1, max_size=9), max_size=8))
def test_cue_look_ups_of_many_words_answer_as_one_by_one(words: list[str]) -> None:
    fresh = crisis.Cues.of(["die", "dying", "suicid*", "goodbye", "myself"])
    expected = any(fresh._match(word) for word in words)
    assert fresh.any_of(words) == expected
    assert fresh.any_of(words) == expected  # answered from what it has seen
    assert any(word in fresh for word in words) == expected


def _plain_scan(detector: crisis.CrisisDetector, text: str, direction: Direction) -> list[Finding]:
    """``CrisisDetector.scan`` decided from the whole reading, every reader run."""
    if not text or text.isspace():
        return []
    reading = crisis.read(text, direction, detector.classifier, detector.book, detector.evidence)
    ruled = [category for category in detector.categories if category in reading.rules]
    if ruled:
        return [Finding("crisis", category, 1.0) for category in ruled]
    if reading.supportive:
        return []
    score = min(1.0, sum(reading.learned[category] for category in detector.categories))
    if score < detector.threshold:
        return []
    likeliest = max(detector.categories, key=lambda category: reading.learned[category])
    return [Finding("crisis", likeliest, round(score, 4))]


def test_scan_decides_as_the_whole_reading_does(detector: crisis.CrisisDetector, corpus: list[Example]) -> None:
    for example in corpus:
        for direction in ("input", "output"):
            assert detector.scan(example.text, direction) == _plain_scan(detector, example.text, direction), (
                direction,
                example.text,
            )


def test_every_match_of_a_phrase_holds_one_of_its_needles(corpus: list[Example]) -> None:
    """What lets the phrases that may start anywhere be skipped: a text holding none of a
    phrase's needles has no match of it."""
    phrases = [
        phrase
        for language in crisis.LANGUAGES
        for _, _, phrase in crisis.parse_phrases(crisis.DATA / f"crisis_{language}.txt")
    ]
    texts = [normalise(example.text) for example in corpus]
    checked = 0
    for phrase in phrases:
        needles = crisis._needles(crisis.sre_parse.parse(phrase))
        if needles is None:
            continue
        searcher = re.compile(f"(?:{phrase})")
        for text in texts:
            for match in searcher.finditer(text):
                checked += 1
                assert any(needle in match.group() for needle in needles), (phrase, needles, match.group())
    assert checked > 1000
    assert crisis._needles(crisis.sre_parse.parse("(?:ab|cd)e?")) == frozenset({"ab", "cd"})
    assert crisis._needles(crisis.sre_parse.parse("x?(?:is|are) killing (?:me|us)")) == frozenset({" killing "})
    assert crisis._needles(crisis.sre_parse.parse("(?:\\w+ )?")) is None
    assert crisis._needles(crisis.sre_parse.parse("(?i:kill)")) is None
