"""Holding back a streamed answer until the SafetyPolicy can judge it.

A streamed chat completion arrives a few characters at a time, and a filter cannot judge half a
sentence (a PII span may still be arriving; "I want to" is harmless until its last word). So the
text of each streamed choice is held back and released a piece at a time: up to the last
sentence end followed by white space (``. ``, ``!``, ``?``, ``…``), a CJK full stop (``。``,
which needs none) or a line break; or, when a piece grows past :data:`HOLD_CHARACTERS` without
one (code, a list without stops), up to its last white space (text with none at all is held to
the end). A piece is screened on its own before any of it is sent; what remains when the choice
finishes is screened last.

The cost is the time to the first token: nothing of a choice's text is sent before its first
sentence is complete and screened (measured in ``benchmarks/streaming.py``). A span a filter
needs to see whole never straddles two pieces unless it holds a sentence end followed by white
space, or runs past HOLD_CHARACTERS.
"""

from __future__ import annotations

import re

HOLD_CHARACTERS = 1000
"""The longest piece held back waiting for a sentence end; past it, a piece ends at white space."""
SENTENCE_END = re.compile(r"""[.!?\u2026]+["'\u201d\u2019)\]]*\s+|[\u3002\uff01\uff1f]+|\n+""")
"""The end of a sentence, with the white space after it."""


class HeldText:
    """The text of one streamed choice that has arrived and is not yet released."""

    def __init__(self) -> None:
        self.pending = ""

    def add(self, text: str, final: bool = False) -> str:
        """Append ``text``; return the piece now ready to screen (up to the last sentence end,
        everything when ``final``), possibly empty, and hold back the rest."""
        self.pending += text
        if final:
            ready, self.pending = self.pending, ""
            return ready
        end = 0
        for match in SENTENCE_END.finditer(self.pending):
            end = match.end()
        if not end and len(self.pending) > HOLD_CHARACTERS:
            end = max(self.pending.rfind(" "), self.pending.rfind("\t")) + 1
        ready, self.pending = self.pending[:end], self.pending[end:]
        return ready
