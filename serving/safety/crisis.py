"""The crisis detector: self-harm, suicidal ideation and violence in chat messages and model
answers, in English, Spanish, German and French.

A text is a crisis when either of two readers says so (tuned for recall: a missed crisis costs
more than an escalation too many):

1. **Rules**: curated phrase families in ``data/crisis_<lang>.txt``, each mapped to an API
   category: explicit ideation, passive ideation ("not wake up", "better off without me"),
   plans, means and timing, farewells, self-injury, command voices, algospeak ("unalive",
   "sewer slide", "kms"), third-person concern ("my friend said she wants to die") and violence
   intent ("bring a gun to school"). Model answers have their own family, ``encourage``: text
   that urges or instructs self-harm.
2. **Learned**: a fastText classifier (``learned.py``) trained when the detector is first built
   on the project's corpus (``corpus/crisis/train.jsonl``) plus copies made here with typos,
   joined words, leetspeak and a phrase of another language mixed in (code-switching), so that it
   reads the spellings the rules were not written for. Its score is the probability that the text
   belongs to one of the selected categories. A marker word tells it which way the text travels,
   so what a user writes and what a model answers are learned apart; the corpus holds as many
   ordinary model answers (summaries, recipes, code, medication facts) as crisis ones, so the
   marker alone reads as "none". Inputs are read whole; model answers whole and sentence by
   sentence (the highest score counts), so one crisis sentence in a long answer is not
   outvoted. (Inputs are short, and a lone "i'm done." read out of its message scored high.)

**Evidence.** A classifier gives a confident probability for any string, also for "0", "ok" or
"asdkjh qwe", which hold nothing it learned, and for short everyday lines that share a word or
two with crisis lines ("good point", "j'ai mal au ventre depuis hier soir"): what it says there
is noise (before this gate, about a third of random strings scored as crises). So the learned
score decides only where the text carries evidence of the topic: at least :data:`MIN_WORDS`
real words (runs of two or more letters), one of them a **cue word** of
``data/crisis_cues.txt`` (:class:`Cues`): death and dying, suicide, self-injury, means and
places, weapons, despair, farewells, pain. Cue words name the topic, not the risk, so the
learned score still tells "how do i cut a mango" from "i cut again"; a cue may be misspelt by
one letter. Cues are looked for before idioms are masked ("i'd be dead and nobody would care"
keeps its cue), words are counted after. Without a cue, only the rules can find a crisis. Each
sentence of a model answer is gated on its own. (Cue words read off the corpus by their
crisis share were tried first: with "point", "give", "soir" or "geschrieben" among them, 14 of
211 everyday lines still escalated.)

Both read the text after ``normalise.normalise`` and after two kinds of phrase are masked out:

- ``[exclude]``: idioms, hyperbole and technical uses ("this commute is killing me", "killed
  it", ``kill -9``, "mom will kill me", "me muero de risa", "mort de rire", "das bringt mich
  um"). Masking keeps the rest of the text: "this commute is killing me, i want to die" still
  matches "i want to die".
- ``[denial]``: clean denials ("i'm not suicidal", "i would never hurt myself"). A denial
  cancels only itself: plans, means and passive ideation are never denial phrases, so "i don't
  want to die but i saved my pills" still matches the plan.

Model answers (direction ``output``) are matched by the ``encourage`` and ``violence`` families
only (an answer that says "if you are thinking of killing yourself" is not the model's ideation),
and a supportive answer (``[support]``: a crisis line, "you are not alone") with no
``encourage`` match passes whatever the learned score.

Data file format (one file per language, UTF-8)::

    # a comment
    @NAME = regex                      a macro; later lines write {NAME}
    [family category]                  the lines below are phrases of this family
    regex                              one phrase: a Python regex over normalised text

``category`` is ``selfHarm``, ``suicidalIdeation`` or ``violence``; the special sections
``[exclude]``, ``[denial]`` and ``[support]`` take no category. Each phrase matches only as
whole words. A malformed file raises ``ValueError`` naming the file and line when the detector is
built.

Sources: the categories and the split of self-harm into intent and instructions follow the
OpenAI moderation categories; the risk signals (passive ideation, plans, means, command voices,
retraction not cancelling risk) follow the clinical rubric discussed in SpringCare/VERA-MH#141;
see ``/work/shared/reference/safety.md`` section 5. The phrases, corpus and code are the
project's own.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cutover.api.v1alpha1.safetypolicy import CrisisFilter

from .base import Detector, Direction, FilterName, Finding
from .learned import Classifier, Example, Params, read_corpus, train
from .normalise import normalise, sentences

with warnings.catch_warnings():
    # The regex parser is read only to group phrases by their first characters (PhraseSet).
    warnings.simplefilter("ignore", DeprecationWarning)
    import sre_constants
    import sre_parse

DATA = Path(__file__).parent / "data"
LANGUAGES = ("en", "es", "de", "fr")
CATEGORIES = ("selfHarm", "suicidalIdeation", "violence")
FAMILIES = (
    "explicit",
    "passive",
    "plan",
    "farewell",
    "selfInjury",
    "command",
    "algospeak",
    "thirdPerson",
    "violence",
    "encourage",
)
SPECIAL = ("exclude", "denial", "support")
OUTPUT_FAMILIES = frozenset({"encourage", "violence"})
"""The families that read model answers; every family but ``encourage`` reads inputs."""

THRESHOLD = 0.3
"""The learned score at or above which a text with evidence is a crisis (the API's CrisisFilter
has no threshold). Chosen on a dev slice cut from the training corpus (``test_safety_crisis.py``'s
``test_dev_slice``), for recall first: with the evidence gate, 0.3 gave recall 0.954 at
precision 0.861 there, 0.4 recall 0.937, 0.5 recall 0.926 (precision 0.871)."""

PARAMS = Params(epoch=60, lr=0.05, dim=16, bucket=40_000, minn=2, maxn=5, word_ngrams=2, seed=7)
"""fastText parameters, chosen with the threshold on the dev slice: a low rate over many epochs
gave fewer confident false positives than fastText's usual 0.5 (about 3 s to train, once per
process; the model takes about 3 MB)."""
MIN_WORDS = 3
"""Real words (two or more letters, after normalisation and masking) a text needs before the
learned score may decide: no escalation on fewer than three real words unless a rule matched.
With two, one of them the cue, the score is mostly the cue's: "go live" scored 0.96, "we live"
0.75 and "on live" (a random '0N&L1VE' read as leet) 0.37 for suicidal ideation, all escalated.
The held-out splits have no two-word crisis that a rule misses (recall and precision unchanged,
``benchmarks/safety.py``); two-word crises are the rules' ("kill myself", "want to die")."""

_MASK = " ~ "
_INPUT_MARK = "dirinput"
_OUTPUT_MARK = "diroutput"


_KEY = 2
"""How many leading characters of a word pick the phrases tried there."""

_Starts = frozenset[tuple[str, bool]]


def _concat(left: _Starts, right: _Starts) -> _Starts:
    out = set()
    for text, whole in left:
        if not whole or len(text) >= _KEY:
            out.add((text, False))
            continue
        for more, more_whole in right:
            joined = text + more
            out.add((joined[:_KEY], more_whole and len(joined) < _KEY))
    return frozenset(out)


def _starts(items: Any) -> _Starts | None:
    """How a parsed regex can begin: its possible first ``_KEY`` characters, as ``(prefix,
    whole)`` pairs where ``whole`` means the prefix is an entire match, shorter than ``_KEY``
    (``None``: it can begin with almost anything). Lookarounds and anchors count as empty, so
    the answer is a superset, which is safe."""
    result: _Starts = frozenset({("", True)})
    for op, value in items:
        item = _item_starts(op, value)
        if item is None:
            return None
        result = _concat(result, item)
        if all(not whole for _, whole in result):
            break
    return result


def _item_starts(op: Any, value: Any) -> _Starts | None:
    if op is sre_constants.LITERAL:
        return frozenset({(chr(value), True)})
    if op is sre_constants.IN:
        chars = set()
        for kind, item in value:
            if kind is sre_constants.LITERAL:
                chars.add(chr(item))
            elif kind is sre_constants.RANGE and item[1] - item[0] < 64:
                chars.update(chr(code) for code in range(item[0], item[1] + 1))
            else:
                return None
        return frozenset((char, True) for char in chars)
    if op is sre_constants.BRANCH:
        union: set[tuple[str, bool]] = set()
        for branch in value[1]:
            starts = _starts(branch)
            if starts is None:
                return None
            union |= starts
        return frozenset(union)
    if op is sre_constants.SUBPATTERN:
        return _starts(value[-1])
    if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
        low, high, body = value
        once = _starts(body)
        if once is None:
            return None
        result: set[tuple[str, bool]] = {("", True)} if low == 0 else set()
        current: _Starts = frozenset({("", True)})
        for count in range(1, min(high, max(low, _KEY)) + 1):
            current = _concat(current, once)
            if count >= low:
                result |= current
        return frozenset(result)
    if op in (sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return frozenset({("", True)})
    return None


def _needles(items: Any) -> frozenset[str] | None:
    """Strings one of which occurs in every match of a parsed regex (``None``: none known): its
    longest run of literal characters, or the union of what each branch of one of its groups
    needs, whichever has the longest shortest string. Case-insensitive parts need nothing."""
    best: frozenset[str] | None = None

    def keep(candidate: frozenset[str] | None) -> None:
        nonlocal best
        if candidate and (best is None or min(map(len, candidate)) > min(map(len, best))):
            best = candidate

    run = ""
    for op, value in items:
        if op is sre_constants.LITERAL:
            run += chr(value)
            continue
        keep(frozenset({run}) if run else None)
        run = ""
        if op is sre_constants.SUBPATTERN and not value[1] & sre_constants.SRE_FLAG_IGNORECASE:
            keep(_needles(value[-1]))
        elif op is sre_constants.BRANCH:
            keep(_union([_needles(branch) for branch in value[1]]))
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) and value[0] >= 1:
            keep(_needles(value[2]))
    keep(frozenset({run}) if run else None)
    return best


def _union(parts: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    """The strings of all ``parts`` (``None`` where one of them is)."""
    union: set[str] = set()
    for part in parts:
        if part is None:
            return None
        union |= part
    return frozenset(union)


_WORD_CHAR = re.compile(r"\w")


class PhraseSet:
    """Tagged phrases matched as whole words, fast. A phrase can only start where a word starts,
    so the phrases are grouped by the two characters they can start with (read from the parsed
    regex) and, at each word start, only the group of that word's first two characters is tried.
    (One regex of all phrases searched over the text tries every phrase at every word and took
    four times as long.)

    The word starts worth trying are found in one ``finditer`` pass of :attr:`finder`: the same
    groups behind a dispatch on the first two characters, written as one regex (no capturing
    groups), so the engine walks the words and skips the groups in C and Python sees only the
    few words where some phrase matches. There the group's own pattern is matched to learn the
    match's end and tag (with a Python loop calling ``match`` at every word, a 300-character
    text took two to three times as long).

    ``matches(text)`` gives the leftmost non-overlapping matches, like ``re.finditer``, each
    with its phrase's tag (where phrases of two tags match at one word, the first tag given
    wins); ``tags(text)`` the tags found at any word; ``mask(text, mark)`` replaces every
    match."""

    def __init__(self, phrases: Iterable[tuple[str, str]]) -> None:
        keyed: dict[str, dict[str, list[str]]] = {}
        short: dict[str, dict[str, list[str]]] = {}
        anywhere: dict[str, list[str]] = {}
        for tag, phrase in phrases:
            starts = _starts(sre_parse.parse(phrase))
            if starts is None or any(not prefix for prefix, _ in starts):
                anywhere.setdefault(tag, []).append(phrase)
                continue
            for prefix, whole in starts:
                group = short.setdefault(prefix[0], {}) if whole else keyed.setdefault(prefix, {})
                group.setdefault(tag, []).append(phrase)
        self.by_key = {key: self._compile(group, short.get(key[0], {}), anywhere) for key, group in keyed.items()}
        self.by_char = {char: self._compile(group, anywhere) for char, group in short.items()}
        self.anywhere = self._compile(anywhere) if anywhere else None
        self.finder = self._finder(keyed, short, anywhere)
        # A phrase that may start at any word is tried at every word; in a text holding none of
        # the strings such phrases need, the finder without them finds the same word starts.
        needed = [_needles(sre_parse.parse(phrase)) for group in anywhere.values() for phrase in group]
        self.anywhere_needles = _union(needed) if needed else None
        self.keyed_finder = self.finder if self.anywhere_needles is None else self._finder(keyed, short, {})

    @staticmethod
    def _finder(
        keyed: Mapping[str, Mapping[str, list[str]]],
        short: Mapping[str, Mapping[str, list[str]]],
        anywhere: Mapping[str, list[str]],
    ) -> re.Pattern[str]:
        """One regex that matches (one or two characters long) at exactly the word starts where
        the group tried there has a match: a word start check, the first character, then the
        second character picking the group of that key, whose phrases are tried from the word
        start through a lookbehind of the characters read. It asks only whether some phrase
        matches, so the order of phrases and tags does not matter here."""

        def phrases(*groups: Mapping[str, list[str]]) -> str:
            found = dict.fromkeys(phrase for group in groups for phrases in group.values() for phrase in phrases)
            return "|".join(f"(?:{phrase})" for phrase in found)

        def tried(group: str, read: int) -> str:
            # After ``read`` characters: does one of ``group`` match from the word start?
            return f"(?<=(?=(?:{group})(?!\\w))[\\s\\S]{{{read}}})"

        firsts: dict[str, list[str]] = {}
        for key, group in keyed.items():
            firsts.setdefault(key[0], []).append(re.escape(key[1]) + tried(phrases(group), 2))
        for char, group in short.items():
            firsts.setdefault(char, []).append(tried(phrases(group), 1))
        # A word starts with a word character (text[start] matches \w); a key that does not is
        # never tried.
        branches = [
            f"{re.escape(char)}(?:{'|'.join(seconds)})"
            for char, seconds in firsts.items()
            if _WORD_CHAR.fullmatch(char)
        ]
        if anywhere:
            branches.append(f"\\w{tried(phrases(anywhere), 1)}")
        return re.compile(f"(?<!\\w)(?:{'|'.join(branches) or '(?!)'})")

    @staticmethod
    def _compile(*groups: Mapping[str, list[str]]) -> re.Pattern[str]:
        tags: dict[str, dict[str, None]] = {}  # ordered sets: a phrase may sit in two groups
        for group in groups:
            for tag, phrases in group.items():
                tags.setdefault(tag, {}).update(dict.fromkeys(phrases))
        alternatives = "|".join(
            f"(?P<{tag}>" + "|".join(f"(?:{phrase})" for phrase in phrases) + ")" for tag, phrases in tags.items()
        )
        return re.compile(f"(?:{alternatives})(?!\\w)")

    def matches(self, text: str, overlapping: bool = False) -> list[tuple[int, int, str]]:
        """The leftmost non-overlapping matches in ``text`` as ``(start, end, tag)``; with
        ``overlapping``, one match at every word where one starts."""
        found = []
        position = 0
        by_key, by_char, anywhere = self.by_key, self.by_char, self.anywhere
        finder = self.finder
        if self.anywhere_needles is not None and not any(needle in text for needle in self.anywhere_needles):
            finder = self.keyed_finder
        for word in finder.finditer(text):  # only the word starts where a phrase matches
            start = word.start()
            if start < position:  # inside the last match
                continue
            pattern = by_key.get(text[start : start + _KEY])
            if pattern is None:
                pattern = by_char.get(text[start], anywhere)
            match = pattern.match(text, start) if pattern is not None else None
            if match is not None and match.end() > start and match.lastgroup is not None:
                found.append((start, match.end(), match.lastgroup))
                if not overlapping:
                    position = match.end()
        return found

    def tags(self, text: str) -> set[str]:
        """The tags of the phrases found in ``text`` (matches may overlap: "my sister is cutting
        herself" is third-person concern and self-injury)."""
        return {tag for _, _, tag in self.matches(text, overlapping=True)}

    def mask(self, text: str, mark: str) -> str:
        """``text`` with every match replaced by ``mark``."""
        parts = []
        last = 0
        for start, end, _ in self.matches(text):
            parts.append(text[last:start])
            parts.append(mark)
            last = end
        parts.append(text[last:])
        return "".join(parts)


@dataclass(frozen=True)
class PhraseBook:
    """The compiled phrase families of every language, tagged with their category: ``inputs``
    the families that read client input (all but ``encourage``), ``outputs`` those that read
    model answers (``encourage`` and ``violence``); ``masked`` the idioms and clean denials
    (tag ``mask``), ``support`` a supportive answer's phrases (tag ``support``)."""

    inputs: PhraseSet
    outputs: PhraseSet
    masked: PhraseSet
    support: PhraseSet


def parse_phrases(path: Path) -> Iterator[tuple[str, str, str]]:
    """The phrases of one data file as ``(family, category, regex)``, macros expanded; the
    special sections give ``category`` ``""``. Raises ``ValueError`` naming ``path`` and the
    line for a bad section, an unknown macro or a regex that does not compile."""
    macros: dict[str, str] = {}
    section: tuple[str, str] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        where = f"{path.name}:{number}"
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            name, _, value = line[1:].partition("=")
            if not name.strip().isidentifier() or not value.strip():
                raise ValueError(f"{where}: a macro is '@NAME = regex'")
            macros[name.strip()] = value.strip()
            continue
        if line.startswith("["):
            words = line.strip("[]").split()
            if len(words) == 1 and words[0] in SPECIAL:
                section = (words[0], "")
            elif len(words) == 2 and words[0] in FAMILIES and words[1] in CATEGORIES:
                section = (words[0], words[1])
            else:
                raise ValueError(
                    f"{where}: unknown section {line!r}: a family of {FAMILIES} and a category "
                    f"of {CATEGORIES}, or one of {SPECIAL}"
                )
            continue
        if section is None:
            raise ValueError(f"{where}: a phrase before any [section]")
        try:
            phrase = re.sub(r"\{(\w+)\}", lambda macro: macros[macro.group(1)], line)
            re.compile(phrase)
        except KeyError as missing:
            raise ValueError(f"{where}: unknown macro {missing}") from None
        except re.error as error:
            raise ValueError(f"{where}: not a regex: {error}") from None
        yield section[0], section[1], phrase


@cache
def phrasebook(directory: Path = DATA) -> PhraseBook:
    """The phrase families of ``crisis_<lang>.txt`` for every language in ``directory``,
    compiled once per process. Raises ``ValueError`` for a malformed file."""
    inputs: list[tuple[str, str]] = []
    outputs: list[tuple[str, str]] = []
    masks: list[tuple[str, str]] = []
    support: list[tuple[str, str]] = []
    for language in LANGUAGES:
        for family, category, phrase in parse_phrases(directory / f"crisis_{language}.txt"):
            if family in ("exclude", "denial"):
                masks.append(("mask", phrase))
            elif family == "support":
                support.append(("support", phrase))
            else:
                if family in OUTPUT_FAMILIES:
                    outputs.append((category, phrase))
                if family != "encourage":
                    inputs.append((category, phrase))
    return PhraseBook(PhraseSet(inputs), PhraseSet(outputs), PhraseSet(masks), PhraseSet(support))


def masked(normalised: str, book: PhraseBook) -> str:
    """``normalised`` with its idioms and clean denials replaced by a mark that matches no
    phrase (both readers see this text). Idioms and denials are one set of phrases, matched
    leftmost first."""
    return book.masked.mask(normalised, _MASK)


def rule_categories(text: str, direction: Direction, book: PhraseBook) -> set[str]:
    """The categories whose phrase families match ``text`` (normalised and masked) travelling
    ``direction``."""
    return (book.outputs if direction == "output" else book.inputs).tags(text)


_REAL_WORD = re.compile(r"[^\W\d_]{2,}(?:'[^\W\d_]+)?")
"""A real word: two or more letters (an apostrophe inside allowed), no digits."""
_ASCII_REAL_WORD = re.compile(r"[A-Za-z]{2,}(?:'[A-Za-z]+)?")
r""":data:`_REAL_WORD` for ASCII text, where a letter (``[^\W\d_]``) is ``[A-Za-z]``: the same
words, found in about two thirds of the time."""


def _real_words(text: str) -> list[str]:
    return (_ASCII_REAL_WORD if text.isascii() else _REAL_WORD).findall(text)


_DOUBLED = re.compile(r"(.)\1")
_FUZZY_LENGTH = 6
"""Words of at least this many letters match a whole cue word one typo away."""
_SEEN_LIMIT = 50_000


def _deletions(word: str) -> Iterator[str]:
    return (word[:index] + word[index + 1 :] for index in range(len(word)))


def _one_typo(word: str, cue: str) -> bool:
    """Whether ``word`` is ``cue`` with at most one letter dropped, added, changed, or two
    neighbours swapped (optimal string alignment distance <= 1)."""
    if word == cue:
        return True
    if abs(len(word) - len(cue)) > 1:
        return False
    start = 0
    while start < min(len(word), len(cue)) and word[start] == cue[start]:
        start += 1
    if len(word) == len(cue):
        swapped = word[start + 1 : start + 2] + word[start : start + 1]
        return word[start + 1 :] == cue[start + 1 :] or (
            swapped == cue[start : start + 2] and word[start + 2 :] == cue[start + 2 :]
        )
    if len(word) > len(cue):
        return word[start + 1 :] == cue[start:]
    return word[start:] == cue[start + 1 :]


@dataclass(frozen=True)
class Cues:
    """Cue words: ``words`` matched whole, ``stems`` (written ``stem*``) as the start of a word.
    A word of :data:`_FUZZY_LENGTH` letters or more also matches a whole cue word one typo away
    (a letter dropped, added, changed, or two swapped: "mysefl", "goodbey"), the way users
    misspell past filters; typo matching compares one-letter deletions of both words (the
    symmetric-delete method of Wolf Garbe's SymSpell), a few set look-ups per word."""

    words: frozenset[str]
    stems: frozenset[str]
    near: Mapping[str, tuple[str, ...]]
    """Each one-letter deletion of a long cue word (and the word itself): the words it comes from."""
    stem_lengths: tuple[int, ...] = ()
    hits: set[str] = field(default_factory=set, compare=False, repr=False)
    """Words already found to be cues; ``misses`` those found not to be. A text's words are
    looked up in them as one set, so everyday words cost a set operation per text (both are
    cleared at :data:`_SEEN_LIMIT` words: random input cannot grow them without bound)."""
    misses: set[str] = field(default_factory=set, compare=False, repr=False)

    @classmethod
    def of(cls, terms: Iterable[str]) -> Cues:
        """The cues of ``terms`` (normalised words, ``stem*`` for a stem)."""
        terms = list(terms)
        words = frozenset(term for term in terms if not term.endswith("*"))
        stems = frozenset(term[:-1] for term in terms if term.endswith("*"))
        near: dict[str, set[str]] = {}
        for word in words:
            if len(word) >= _FUZZY_LENGTH:
                for key in (word, *_deletions(word)):
                    near.setdefault(key, set()).add(word)
        lengths = tuple(sorted({len(stem) for stem in stems}))
        return cls(words, stems, {key: tuple(sorted(found)) for key, found in near.items()}, lengths)

    def __contains__(self, word: object) -> bool:
        """Whether ``word`` is a cue: whole, by its stem, as spelt with a letter doubled
        ("diee": the normaliser keeps two of a repeat) or one typo away from a whole cue word
        ("mysefl"; stems are not matched with typos: "suicdal" is left to the rules)."""
        return isinstance(word, str) and self.any_of((word,))

    def any_of(self, words: Iterable[str]) -> bool:
        """Whether one of ``words`` is a cue (``any(word in cues for word in words)``), the
        words answered before read off :attr:`hits` and :attr:`misses` in one set operation."""
        words = set(words)
        if not words.isdisjoint(self.hits):
            return True
        unknown = words - self.misses
        if not unknown:
            return False
        if len(self.hits) + len(self.misses) + len(unknown) > _SEEN_LIMIT:
            self.hits.clear()
            self.misses.clear()
        for word in unknown:
            (self.hits if self._match(word) else self.misses).add(word)
        return not unknown.isdisjoint(self.hits)

    def _match(self, word: str) -> bool:
        for form in {word, _DOUBLED.sub(r"\1", word)}:
            if form in self.words or any(form[:length] in self.stems for length in self.stem_lengths):
                return True
        if len(word) < _FUZZY_LENGTH - 1:
            return False
        candidates = {cue for key in (word, *_deletions(word)) for cue in self.near.get(key, ())}
        return any(_one_typo(word, cue) for cue in candidates)


@cache
def cues(directory: Path = DATA) -> Cues:
    """The cue words of ``crisis_cues.txt`` (normalised), read once per process. Raises
    ``ValueError`` for a term that normalises to something other than one word."""
    path = directory / "crisis_cues.txt"
    terms = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            continue
        for term in line.split():
            word = normalise(term.removesuffix("*"))
            if not _REAL_WORD.fullmatch(word):
                raise ValueError(f"{path.name}:{number}: {term!r} is not one word")
            terms.append(word + ("*" if term.endswith("*") else ""))
    return Cues.of(terms)


def has_evidence(text: str, plain: str, evidence: Cues) -> bool:
    """Whether ``text`` (normalised and masked) holds enough for the learned score to decide:
    :data:`MIN_WORDS` real words, and one word of ``plain`` (the same text before masking: an
    idiom masked out may sit beside the risk, "i'd be dead and nobody would care") in
    ``evidence``."""
    count, cue = _evidence(text, plain, evidence)
    return count >= MIN_WORDS and cue


def _evidence(text: str, plain: str, evidence: Cues) -> tuple[int, bool]:
    """The real words of ``text`` and whether ``plain`` holds a cue (the words are read once
    where nothing was masked)."""
    words = _real_words(plain)
    count = len(words) if text == plain else len(_real_words(text))
    return count, evidence.any_of(words)


def _marked(text: str, direction: str) -> str:
    return f"{_OUTPUT_MARK if direction == 'output' else _INPUT_MARK} {text}"


# --- training-time augmentation: copies of each corpus line in spellings users type -------------

_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})
_SWITCH = {
    "en": ("la neta", "ehrlich gesagt", "franchement", "en serio", "genre", "weisst du"),
    "es": ("honestly", "like", "bro", "ngl", "literally", "idk"),
    "de": ("honestly", "like", "ngl", "digga", "alter", "lol"),
    "fr": ("honestly", "like", "ngl", "wesh", "frérot", "tbh"),
}


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1 :]
    if kind == 1:
        return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def augmented(example: Example, rng: random.Random) -> list[Example]:
    """Copies of ``example`` spelt as users spell to get past filters: two words with typos,
    spaces dropped between two words, leetspeak in the longest word, and a filler of another
    language at either end. Labels, language and direction are kept."""
    words = example.text.split()
    if len(words) < 2:
        return []
    copies = []
    typos = list(words)
    for index in rng.sample(range(len(words)), min(2, len(words))):
        typos[index] = _typo(typos[index], rng)
    copies.append(" ".join(typos))
    join = rng.randrange(len(words) - 1)
    copies.append(" ".join([*words[:join], words[join] + words[join + 1], *words[join + 2 :]]))
    longest = max(range(len(words)), key=lambda index: len(words[index]))
    copies.append(" ".join([*words[:longest], words[longest].translate(_LEET), *words[longest + 1 :]]))
    filler = rng.choice(_SWITCH.get(example.lang, _SWITCH["en"]))
    copies.append(f"{filler} {example.text}" if rng.random() < 0.5 else f"{example.text} {filler}")
    return [Example(text, example.labels, example.lang, example.direction, "augmented") for text in copies]


def training_set(examples: Iterable[Example], seed: int = 7) -> list[Example]:
    """``examples`` with their augmented copies (deterministic for a seed), each text already
    prepared as the classifier reads it (normalised, masked, direction-marked), duplicates
    dropped."""
    rng = random.Random(seed)
    book = phrasebook()
    seen: set[tuple[str, tuple[str, ...]]] = set()
    prepared = []
    for example in examples:
        for variant in (example, *augmented(example, rng)):
            text = _marked(masked(normalise(variant.text), book), variant.direction)
            if (text, variant.labels) in seen:
                continue
            seen.add((text, variant.labels))
            prepared.append(Example(text, variant.labels, variant.lang, variant.direction, variant.note))
    return prepared


def train_classifier(examples: Iterable[Example], params: Params = PARAMS) -> Classifier:
    """A crisis classifier trained on ``examples`` and their augmented copies (labels
    ``selfHarm``, ``suicidalIdeation``, ``violence`` and ``none``)."""
    return train(training_set(examples), params)


@cache
def corpus_classifier() -> Classifier:
    """The classifier of ``corpus/crisis/train.jsonl``, trained once per process (about two
    seconds)."""
    return train_classifier(read_corpus("crisis", "train"))


@dataclass(frozen=True)
class Reading:
    """What the detector read in one text: the categories its rules matched, the learned
    probability of each category (the highest over the whole text and those of its sentences
    that hold evidence; all 0 where none does), and whether a supportive answer's phrases were
    seen."""

    rules: frozenset[str]
    learned: Mapping[str, float]
    supportive: bool


def read(
    text: str, direction: Direction, classifier: Classifier, book: PhraseBook, evidence: Cues | None = None
) -> Reading:
    """Both readers over ``text`` travelling ``direction`` (see the module docstring); the
    learned one only over the parts with evidence (cue words ``evidence``, by default
    :func:`cues`)."""
    evidence = cues() if evidence is None else evidence
    prepared = _Prepared.of(text, direction, book)
    return Reading(
        frozenset(rule_categories(prepared.whole, direction, book)),
        prepared.learned(direction, classifier, evidence),
        prepared.supportive(direction, book),
    )


@dataclass(frozen=True)
class _Prepared:
    """A text as the readers see it: ``plain`` its normalised sentences (model answers) or the
    whole normalised text (inputs), ``parts`` the same masked, ``whole`` the masked parts
    joined. The detector reads its parts one at a time and stops when the answer is known."""

    plain: list[str]
    parts: list[str]
    whole: str

    @classmethod
    def of(cls, text: str, direction: Direction, book: PhraseBook) -> _Prepared:
        plain = [normalise(part) for part in sentences(text)] if direction == "output" else [normalise(text)]
        # One masking pass over all sentences: the normaliser leaves no line break, so a break
        # keeps the sentences apart (a phrase never spans one) and splits them again after.
        parts = masked("\n".join(plain), book).split("\n")
        if len(parts) != len(plain):
            parts = [masked(part, book) for part in plain]
        return cls(plain, parts, " ".join(parts))

    def learned(self, direction: Direction, classifier: Classifier, evidence: Cues) -> dict[str, float]:
        """The learned probability of each category (see :class:`Reading`)."""
        learned = dict.fromkeys(CATEGORIES, 0.0)
        # Each sentence's words are read once; the whole text's evidence is theirs together.
        found = [_evidence(part, unmasked, evidence) for part, unmasked in zip(self.parts, self.plain, strict=True)]
        read_parts = [(self.whole, sum(count for count, _ in found), any(cue for _, cue in found))]
        if len(self.parts) > 1:
            read_parts += [(part, count, cue) for part, (count, cue) in zip(self.parts, found, strict=True)]
        for part, count, cue in read_parts:
            if count < MIN_WORDS or not cue:
                continue
            probabilities = classifier.probabilities(_marked(part, direction))
            for category in CATEGORIES:
                learned[category] = max(learned[category], probabilities.get(category, 0.0))
        return learned

    def supportive(self, direction: Direction, book: PhraseBook) -> bool:
        """Whether this is a model answer with a supportive answer's phrases."""
        return direction == "output" and bool(book.support.matches(self.whole))


class CrisisDetector:
    """A crisis detector for one CrisisFilter spec: finds the spec's categories in a text.

    A rule match scores 1.0; otherwise, where the text holds evidence (module docstring), the
    learned score is the summed probability of the selected categories, a finding at or above
    ``threshold`` (one finding, of the likeliest selected category). A supportive model answer
    with no ``encourage`` match finds nothing."""

    name: FilterName = "crisis"

    def __init__(
        self,
        categories: Iterable[str],
        classifier: Classifier,
        book: PhraseBook,
        threshold: float = THRESHOLD,
        evidence: Cues | None = None,
    ) -> None:
        self.categories = tuple(category for category in CATEGORIES if category in set(categories))
        self.classifier = classifier
        self.evidence = cues() if evidence is None else evidence
        self.book = book
        self.threshold = threshold

    def scan(self, text: str, direction: Direction) -> list[Finding]:
        """The crisis findings in ``text``: at most one per category, ``spans`` empty."""
        if not text or text.isspace():
            return []
        # What :func:`read` reads, in the order that lets the later readers be skipped: a rule
        # match decides without the learned score, and a supportive answer only matters where
        # the learned score would find something.
        prepared = _Prepared.of(text, direction, self.book)
        rules = rule_categories(prepared.whole, direction, self.book)
        ruled = [category for category in self.categories if category in rules]
        if ruled:
            return [Finding("crisis", category, 1.0) for category in ruled]
        learned = prepared.learned(direction, self.classifier, self.evidence)
        score = min(1.0, sum(learned[category] for category in self.categories))
        if score < self.threshold or prepared.supportive(direction, self.book):
            return []
        likeliest = max(self.categories, key=lambda category: learned[category])
        return [Finding("crisis", likeliest, round(score, 4))]


def detector(spec: CrisisFilter) -> Detector:
    """The crisis detector for ``spec`` (its ``categories``; ``action`` and ``scope`` are the
    engine's). The phrase book and the classifier are built once per process, so a new policy
    generation builds a detector at once. Raises ``ValueError`` for a malformed data file."""
    return CrisisDetector(spec.categories, corpus_classifier(), phrasebook())
