"""Personal data found and redacted by pattern: emails, phone numbers, US social security numbers,
payment card numbers, IP addresses and IBANs.

The audit log redacts every record with this module before it reaches disk, and the SafetyPolicy
PII filter reuses it on inputs and outputs, so it runs on the request path: the regexes are compiled
once, text without a digit or an ``@`` skips them, and each candidate a regex finds is checked the way
its issuer checks it (Luhn for cards, mod-97 for IBANs, the SSA's rules for SSNs, octet ranges for
IPv4) so that prices, dates, versions and model ids are left alone.

Entity names are the SafetyPolicy API's ``PiiEntity`` values. ``personName`` and ``address`` are in
that enum too but cannot be found by pattern (they need a named-entity model), so asking for them
here is an error rather than a silent no-op.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

TOKENS: Mapping[str, str] = {
    entity: f"[REDACTED:{entity}]" for entity in ("email", "phone", "ssn", "creditCard", "ipAddress", "iban")
}
"""The replacement for each entity this module can find, keyed by the API's entity name: the
SafetyPolicy's documented ``[REDACTED:<entity>]``."""

ENTITIES: frozenset[str] = frozenset(TOKENS)
NEEDS_A_MODEL: frozenset[str] = frozenset({"personName", "address"})
"""API entities that no pattern finds reliably."""


class Match(NamedTuple):
    """One finding: ``text[start:end]`` is personal data of kind ``entity``."""

    entity: str
    start: int
    end: int


# Candidates are deliberately loose; the validators below decide. Look-arounds keep a candidate from
# starting or ending inside a longer word or number ("v1.2.3.4", "order 1234-567-8901-2").
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
# Cards are printed as one run of digits or in groups of three to six (4-4-4-4, Amex 4-6-5), never as
# single spaced digits, which would read a list of small numbers as a card.
_CARD = re.compile(r"(?<![\w+.,-])(?:\d{13,19}|\d{4}(?:[ -]\d{3,6}){2,4})(?![\w]|[.,-]\d)")
_SSN = re.compile(r"(?<![\w.,-])(?!000|666|9)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w]|[.,-]\d)")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# E.164 and international formats start with "+"; North American ones are 3-3-4 with an optional
# "1" prefix ("+1" is international) and the area code optionally in parentheses. Bare digit runs
# are never phones.
_PHONE_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}(?![\w]|[.,-]\d)")
_PHONE_NORTH_AMERICA = re.compile(r"(?<![\w+.,-])(?:1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w]|[.,-]\d)")
_DIGIT = re.compile(r"\d")
_NOT_DIGIT = re.compile(r"\D")


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(candidate: str) -> bool:
    digits = _NOT_DIGIT.sub("", candidate)
    # All-zero runs pass Luhn; they are padding, not cards.
    return 13 <= len(digits) <= 19 and digits.strip("0") != "" and _luhn(digits)


def _iban(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _ipv6(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _phone(candidate: str) -> bool:
    return 8 <= len(_NOT_DIGIT.sub("", candidate)) <= 15


Spans = Callable[[str], list[tuple[int, int]]]


def _finder(pattern: re.Pattern[str], valid: Callable[[str], bool] | None = None, trim: str = "") -> Spans:
    """Spans of ``pattern``'s matches that ``valid`` accepts. With ``trim``, a rejected grouped
    candidate is retried without its trailing groups (cut at those separator characters), since its
    last group may be a following word or number ("DE89 3704 0044 0532 0130 00 AB")."""

    def spans(text: str) -> list[tuple[int, int]]:
        found_spans = []
        for found in pattern.finditer(text):
            candidate = found.group()
            if valid is None:
                found_spans.append(found.span())
                continue
            cuts = [len(candidate)] + [i for i in range(len(candidate) - 1, 0, -1) if candidate[i] in trim]
            for cut in cuts:
                if valid(candidate[:cut]):
                    found_spans.append((found.start(), found.start() + cut))
                    break
        return found_spans

    return spans


# Earlier entries win where findings overlap: an email's local part may hold a phone-like number and
# a card number may read as a phone, never the other way round.
_DETECTORS: tuple[tuple[str, Spans], ...] = (
    ("email", _finder(_EMAIL)),
    ("iban", _finder(_IBAN, _iban, trim=" ")),
    ("creditCard", _finder(_CARD, _card, trim=" -")),
    ("ssn", _finder(_SSN)),
    ("ipAddress", _finder(_IPV4)),
    ("ipAddress", _finder(_IPV6, _ipv6)),
    ("phone", _finder(_PHONE_INTERNATIONAL, _phone)),
    ("phone", _finder(_PHONE_NORTH_AMERICA)),
)


def _selected(entities: Collection[str] | None) -> Collection[str]:
    if entities is None:
        return ENTITIES
    unknown = [e for e in entities if e not in ENTITIES]
    if unknown:
        if unknown[0] in NEEDS_A_MODEL:
            raise ValueError(f"PII entity {unknown[0]!r} cannot be found by pattern; it needs a named-entity model")
        raise ValueError(f"unknown PII entity {unknown[0]!r}; known: {', '.join(sorted(ENTITIES))}")
    return entities


def find(text: str, entities: Collection[str] | None = None) -> list[Match]:
    """The personal data in ``text``, in order and without overlaps. ``entities`` limits the search
    to some API entity names (all of :data:`ENTITIES` by default)."""
    wanted = _selected(entities)
    has_digit = _DIGIT.search(text) is not None
    if not has_digit and "@" not in text:
        return []
    taken: list[Match] = []
    for entity, detect in _DETECTORS:
        # Every entity but an email holds a digit; most text has none of either, and stops here.
        if entity not in wanted or not (has_digit if entity != "email" else "@" in text):
            continue
        for start, end in detect(text):
            if all(end <= m.start or start >= m.end for m in taken):
                taken.append(Match(entity, start, end))
    return sorted(taken, key=lambda m: m.start)


def redact(text: str, entities: Collection[str] | None = None) -> str:
    """``text`` with each finding replaced by its entity's token, such as ``[REDACTED:email]``."""
    matches = find(text, entities)
    if not matches:
        return text
    parts: list[str] = []
    position = 0
    for match in matches:
        parts.append(text[position : match.start])
        parts.append(TOKENS[match.entity])
        position = match.end
    parts.append(text[position:])
    return "".join(parts)


def redact_value(value: Any, entities: Collection[str] | None = None) -> Any:
    """``value`` with every string inside it redacted: mappings (values only, keys are field
    names) and lists or tuples are walked; numbers, booleans and None come back unchanged."""
    if isinstance(value, str):
        return redact(value, entities)
    if isinstance(value, Mapping):
        return {key: redact_value(item, entities) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_value(item, entities) for item in value]
    if isinstance(value, tuple):
        return tuple(redact_value(item, entities) for item in value)
    return value
