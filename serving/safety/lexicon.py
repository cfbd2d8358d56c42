"""Word lists of the advice and bias filters, read from ``serving/safety/data/*.txt``, and the
sentence cues both filters share (its words; is it a question?).

A list file holds one term per line; ``#`` starts a comment line. Each term is passed through the
shared normaliser (so it is written as users write it, accents and all, and matched against
normalised text) and matched as whole words: ``loan`` does not match ``loaned``; a trailing ``*``
matches any ending of the last word (``antibiotic*`` matches ``antibiotics``, ``people from *``
any word after "people from").

Matching works on the words of a sentence (:func:`words`) with set look-ups, not one large
regular expression per list: a sentence's words are split once and every list reads them, which
keeps all lists of both filters at tens of microseconds per sentence.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from .normalise import CACHED_CHARACTERS, normalise

DATA = Path(__file__).parent / "data"
_WORD = re.compile(r"\w+(?:['-]\w+)*")
_QUESTION_START = re.compile(
    r"^(?:how|what|whats|why|when|where|which|who|is|are|am|can|could|should i|should we|do|does|did|"
    r"will|would|may|might|que|como|cuanto|puedo|debo|wie|was|warum|kann|soll ich|darf|est-ce|"
    r"comment|pourquoi|combien|puis-je|dois-je)\b"
)


@dataclass(frozen=True)
class Words:
    """A normalised sentence split into words: ``words[i]`` spans ``text[starts[i]:ends[i]]``."""

    text: str
    words: tuple[str, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]


def words(text: str) -> Words:
    """The words of normalised ``text`` (letters and digits, with inner apostrophes and hyphens:
    ``don't``, ``gold-diggers``). The advice and bias filters read the same sentences one after
    the other, so the last few short texts' words are kept, as :func:`~.normalise.normalise`
    keeps their normal form (a :class:`Words` is immutable)."""
    if len(text) <= CACHED_CHARACTERS:
        return _recent_words(text)
    return _words(text)


def _words(text: str) -> Words:
    found = [(match.group(), match.start(), match.end()) for match in _WORD.finditer(text)]
    if not found:
        return Words(text, (), (), ())
    texts, starts, ends = zip(*found, strict=True)
    return Words(text, texts, starts, ends)


_recent_words = lru_cache(maxsize=64)(_words)


def terms(name: str) -> list[str]:
    """The normalised terms of ``data/<name>.txt`` in file order, without comments or blank
    lines. Raises ``FileNotFoundError`` when there is no such list."""
    out = []
    for line in (DATA / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        wildcard = line.endswith("*")
        term = normalise(line.rstrip("*").rstrip())
        if term:
            out.append(term + (" *" if wildcard and line.rstrip("*").endswith(" ") else "*" if wildcard else ""))
    return out


class WordList:
    """Terms matched as whole words in a :class:`Words`. A term is a sequence of words; its last
    word may be a prefix (``stem*``) or any word (``... *``)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.terms = tuple(dict.fromkeys(entries))
        # By first word: (the other words, whether the last one is a prefix, the term).
        self._index: dict[str, list[tuple[tuple[str, ...], bool, str]]] = {}
        # Single-word prefixes, checked with one str.startswith per word.
        self._prefixes: dict[str, str] = {}
        for term in self.terms:
            wildcard = term.endswith("*")
            parts = tuple(_WORD.findall(term.rstrip("*")))
            if term.endswith(" *"):
                parts = (*parts, "")
            if not parts:
                continue
            if wildcard and len(parts) == 1:
                self._prefixes[parts[0]] = term
            else:
                self._index.setdefault(parts[0], []).append((parts[1:], wildcard, term))
        self._prefix_tuple = tuple(self._prefixes)
        # By first word, what the next word must be for any of its terms to match: a one-word
        # term needs nothing; a longer one needs its second word exactly, or a word starting with
        # it when that is its (wildcard) last word. A cheap test before the terms are tried
        # ("the" opens twenty group terms, and "the castle" none of them).
        self._follows: dict[str, tuple[bool, frozenset[str], tuple[str, ...]]] = {}
        for first, opened in self._index.items():
            single = any(not rest for rest, _, _ in opened)
            exact = frozenset(rest[0] for rest, loose, _ in opened if rest and not (loose and len(rest) == 1))
            second_stems = tuple(rest[0] for rest, loose, _ in opened if loose and len(rest) == 1)
            self._follows[first] = (single, exact, second_stems)
        # Words with a listed prefix, found by one scan of the text in C rather than a
        # str.startswith per word in Python.
        self._prefix_pattern = _prefix_pattern(self._prefixes)

    def _at(self, sentence: Words, i: int) -> tuple[int, str] | None:
        """The longest term starting at word ``i``: (index after its last word, the term)."""
        word = sentence.words[i]
        best: tuple[int, str] | None = None
        if self._prefix_tuple and word.startswith(self._prefix_tuple):
            stem = max((p for p in self._prefix_tuple if word.startswith(p)), key=len)
            best = (i + 1, self._prefixes[stem])
        follows = self._follows.get(word)
        if follows is None:
            return best
        single, exact, stems = follows
        if not single and (
            i + 1 == len(sentence.words)
            or (sentence.words[i + 1] not in exact and not sentence.words[i + 1].startswith(stems))
        ):
            return best
        for rest, wildcard, term in self._index[word]:
            end = i + 1 + len(rest)
            if end > len(sentence.words):
                continue
            following = sentence.words[i + 1 : end]
            if wildcard:
                matched = following[:-1] == rest[:-1] and following[-1].startswith(rest[-1])
            else:
                matched = following == rest
            if matched and (best is None or end > best[0]):
                best = (end, term)
        return best

    def _candidates(
        self, sentence: Words, at: Iterable[int] | None, prefixed: Iterable[int] | None = None
    ) -> list[int]:
        """Word indices where a term may start: the word opens some term or starts with a listed
        prefix (set look-ups and one regular-expression scan, before any term is tried;
        ``prefixed``, when given, are the words with a listed prefix, found by the caller)."""
        found = sentence.words
        index = self._index
        candidates = (
            {i for i, word in enumerate(found) if word in index} if not index.keys().isdisjoint(found) else set()
        )
        if prefixed is not None:
            candidates.update(prefixed)
        elif self._prefix_pattern is not None:
            candidates.update(i for i, _ in _prefixed(self._prefix_pattern, sentence))
        if at is not None:
            candidates &= set(at)
        return sorted(candidates)

    def spans(self, sentence: Words, at: Iterable[int] | None = None) -> list[tuple[int, int, str]]:
        """Non-overlapping matches, leftmost and then longest first, as (first word, index after
        the last word, term); ``at`` limits where a match may start (word indices)."""
        out = []
        taken = 0
        for i in self._candidates(sentence, at):
            if i < taken:
                continue
            found = self._at(sentence, i)
            if found:
                out.append((i, found[0], found[1]))
                taken = found[0]
        return out

    def search(self, sentence: Words, at: Iterable[int] | None = None) -> bool:
        """Whether any term occurs (starting at one of ``at``, when given)."""
        return any(self._at(sentence, i) for i in self._candidates(sentence, at))


def _prefix_pattern(stems: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression finding where any of ``stems`` starts a word, the longest stem
    there; None when there are none. The stems are grouped by their first character, so a word
    is tried against the stems it can start with, not against every stem in turn."""
    groups: dict[str, list[str]] = {}
    for stem in sorted(stems, key=len, reverse=True):
        groups.setdefault(stem[0], []).append(re.escape(stem[1:]))
    alternatives = "|".join(f"{re.escape(first)}(?:{'|'.join(rests)})" for first, rests in groups.items())
    return re.compile(rf"(?<![\w'-])(?:{alternatives})") if alternatives else None


def _prefixed(pattern: re.Pattern[str], sentence: Words) -> Iterator[tuple[int, str]]:
    """Each word of ``sentence`` where ``pattern`` (a :func:`_prefix_pattern`) finds a stem: the
    word's index and the stem."""
    starts = sentence.starts
    for match in pattern.finditer(sentence.text):
        i = bisect_left(starts, match.start())
        if i < len(starts) and starts[i] == match.start():
            yield i, match.group()


class WordLists:
    """Several :class:`WordList` read in one sentence together: ``found(sentence)`` names the
    lists with a term in it, what ``[name for name, wordlist in lists.items() if
    wordlist.search(sentence)]`` names, with one regular-expression scan for the prefixes of
    all the lists instead of one per list.

    The scan reports the longest stem at each word; every other stem found there is a prefix
    of it, so the lists with a stem at that word are those holding a prefix of the longest
    (read once per stem, when the lists are built). A stem never covers the start of another
    word, so the scan finds every word each list's own scan would."""

    def __init__(self, lists: Mapping[str, WordList]) -> None:
        self.lists = dict(lists)
        stems = {stem for wordlist in self.lists.values() for stem in wordlist._prefixes}
        self._owners = {
            stem: frozenset(name for name, wordlist in self.lists.items() if stem.startswith(wordlist._prefix_tuple))
            for stem in stems
        }
        self._pattern = _prefix_pattern(stems)

    def found(self, sentence: Words) -> list[str]:
        """The names of the lists with a term in ``sentence``, in the order they were given."""
        prefixed: dict[str, list[int]] = {name: [] for name in self.lists}
        if self._pattern is not None:
            for i, stem in _prefixed(self._pattern, sentence):
                for name in self._owners[stem]:
                    prefixed[name].append(i)
        return [
            name
            for name, wordlist in self.lists.items()
            if any(wordlist._at(sentence, i) for i in wordlist._candidates(sentence, None, prefixed[name]))
        ]


@cache
def word_list(name: str) -> WordList:
    """The :class:`WordList` of ``data/<name>.txt``, read once per process."""
    return WordList(terms(name))


def unseen(lists: dict[str, WordList], seen: Sequence[Words], held: Sequence[Words]) -> dict[str, WordList]:
    """``lists`` as if written without the ``held`` sentences: a term that occurs in some held
    sentence and in none of the ``seen`` ones is dropped. Used to fit a calibration on how far a
    list reaches beyond the lines it was written from."""

    def used(sentences: Sequence[Words], wordlist: WordList) -> set[str]:
        return {term for sentence in sentences for _, _, term in wordlist.spans(sentence)}

    out = {}
    for name, wordlist in lists.items():
        only_held = used(held, wordlist) - used(seen, wordlist)
        out[name] = WordList(term for term in wordlist.terms if term not in only_held)
    return out


def is_question(raw: str, text: str) -> bool:
    """Whether a sentence asks rather than tells: it ends with ``?`` (or opens with ``¿``), or it
    opens with a question word (en, es, de, fr) and does not end with ``.`` or ``!``. ``text`` is
    the normalised sentence."""
    raw = raw.strip()
    if raw.endswith("?") or raw.startswith("¿"):
        return True
    # "When choosing between two candidates, ..." opens with a question word and tells; a
    # question typed without its "?" ends without a full stop too.
    return not raw.endswith((".", "!")) and bool(_QUESTION_START.match(text))
