"""Personal data found and redacted by pattern: emails, phone numbers, US social security numbers,
payment card numbers, IP addresses, IBANs, and (opt-in) full person names and street addresses.

The audit log redacts every record with this module before it reaches disk, and the SafetyPolicy
PII filter (``serving/safety/pii.py``) reuses it on inputs and outputs, so it runs on the request
path: the regexes are compiled once, and text without a digit, an ``@`` or a capital letter skips
nearly all of them. Each candidate a regex finds is checked the way its issuer checks it, so that
prices, dates, versions, order numbers and model ids are left alone:

- cards: brand prefix and length (Visa, Mastercard incl. the 2-series, Amex, Discover, JCB,
  UnionPay, Diners) and Luhn; an IMEI (15 digits, Luhn-valid, no brand) is not a card;
- IBANs: the country's registered length and ISO 7064 mod-97;
- SSNs: the SSA's rules (no 000, 666 or 9xx area, no 00 group, no 0000 serial); nine digits
  without separators only with a cue word (``ssn``, ``social security``) nearby;
- IPv4 octet ranges, IPv6 through :mod:`ipaddress`;
- phones: a loose digit-group candidate parsed with ``phonenumbers`` over :data:`PHONE_REGIONS`
  and kept when ``is_valid_number`` says so, written the way that country writes it nationally
  (trunk prefix included: ``1733059200`` is not the German mobile ``0173 3059200``); a number
  that is only ``is_possible_number`` counts when it is written in international form, in the
  North American 3-3-4 form, or with a cue word (phone, call, mobile, Telefon, numéro…) nearby;
  a bare run of digits with no ``+``, ``00`` or trunk ``0`` (``3141592653``) needs the cue too.
  Dates, Unix times, prices and counts (a currency or unit beside them), numbers named an order,
  invoice, account or IMEI, and lists of small numbers are not phones.

A candidate that a stronger reader rejected is never re-read by a weaker one: a span shaped like an
IBAN that fails mod-97 is not then a card (its 16-digit BBAN run passes Luhn about one time in
ten), a card-shaped run that fails is not a phone, nor an SSN-shaped or dotted-quad one. Public
crisis and emergency lines (:data:`HELPLINES`) are never redacted: hiding 988 in a crisis reply
does harm.

``personName`` and ``address`` are rule-based and opt-in (the API leaves them out of its default
entity list, and :func:`find` leaves them out of its default): a name is a first name from the
project's gazetteer (``safety/data/pii_first_names.txt``) followed by a capitalised surname, or a
courtesy title (Dr., Mrs., Herr, Mme…) or a cue ("my name is", "me llamo", "ich heiße", "je
m'appelle", "Name:") followed by one; a lone first name is not a finding. An address is a house
number with a street name and a street type in English, Spanish, German or French, optionally with
a postcode and city. Their precision is lower than the checksummed entities'; ``benchmarks`` and
the corpus README give the figures.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import phonenumbers

TOKENS: Mapping[str, str] = {
    entity: f"[REDACTED:{entity}]"
    for entity in ("email", "phone", "ssn", "creditCard", "ipAddress", "iban", "personName", "address")
}
"""The replacement for each entity this module can find, keyed by the API's entity name: the
SafetyPolicy's documented ``[REDACTED:<entity>]``."""

ENTITIES: frozenset[str] = frozenset(TOKENS)
"""Every API ``PiiEntity`` this module finds."""

STRUCTURED: frozenset[str] = frozenset({"email", "phone", "ssn", "creditCard", "ipAddress", "iban"})
"""The entities with a checkable form (checksum, registry, number plan): what :func:`find` looks for
when not told, and what the audit log redacts. ``personName`` and ``address`` are opt-in."""

PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "IT", "AU", "IN", "BR")
"""Regions whose national formats are read as phones (``US`` covers Canada and the rest of the North
American plan: ``phonenumbers`` validates by the number, not the region it was parsed for).
Numbers in international form (``+`` or ``00``) are read for every country."""

HELPLINES: tuple[tuple[str, str], ...] = (
    # (number as published, region). Never redacted, in inputs or outputs.
    ("988", "US"),  # 988 Suicide & Crisis Lifeline, https://988lifeline.org
    ("1-800-273-8255", "US"),  # the Lifeline's former number, still routed to 988 (988lifeline.org/faq)
    ("741741", "US"),  # Crisis Text Line, text HOME, https://www.crisistextline.org
    ("911", "US"),  # emergency, US and Canada
    ("116 123", "GB"),  # Samaritans, https://www.samaritans.org (also a harmonised EU number)
    ("999", "GB"),  # emergency, UK
    ("116 111", "DE"),  # child helpline, harmonised EU number (Nummer gegen Kummer in Germany)
    ("0800 111 0 111", "DE"),  # TelefonSeelsorge, https://www.telefonseelsorge.de
    ("0800 111 0 222", "DE"),  # TelefonSeelsorge, second line
    ("112", "DE"),  # emergency, EU-wide
    ("024", "ES"),  # Línea 024 de atención a la conducta suicida, Ministerio de Sanidad
    ("3114", "FR"),  # numéro national de prévention du suicide, https://3114.fr
    ("13 11 14", "AU"),  # Lifeline Australia, https://www.lifeline.org.au
    ("000", "AU"),  # emergency, Australia
)
"""Public crisis and emergency lines, with their sources: a crisis reply that names them must keep
them readable."""


class Match(NamedTuple):
    """One finding: ``text[start:end]`` is personal data of kind ``entity``; ``score`` in [0, 1] is
    1.0 where a checksum or number plan confirmed it, lower for a rule without one (see
    :data:`SCORES`)."""

    entity: str
    start: int
    end: int
    score: float = 1.0


SCORES: Mapping[str, float] = {
    "confirmed": 1.0,
    "phoneCued": 0.8,
    "ssnCued": 0.9,
    "nameByCue": 0.9,
    "nameByTitle": 0.9,
    "nameByGazetteer": 0.85,
    "address": 0.9,
    "emailSpelled": 0.9,
}
"""The confidence of each kind of finding: a checksum, registered length or number-plan validation
is certain (1.0); a number only possible in its plan and read because of its form or a cue, or
a name or address found by rule, is less so."""

_DATA = Path(__file__).parent / "safety" / "data"

# Candidates are deliberately loose; the validators below decide. Look-arounds keep a candidate from
# starting or ending inside a longer word or number ("v1.2.3.4", "order 1234-567-8901-2"). Digit
# classes are ASCII ([0-9], not \d): the checksums read ASCII digits.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}")
# "jane.doe (at) example (dot) com", "jane at example dot com": the spelled-out forms people use to
# dodge scrapers. A bare " at " needs a spelled " dot ", so "look at example.com" is not an email.
_SPELLED_DOT = r"(?:\s*[\(\[\{]dot[\)\]\}]\s*|\s+dot\s+)"
_EMAIL_SPELLED = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}"
    r"(?:\s*[\(\[\{]at[\)\]\}]\s*(?:[A-Za-z0-9-]{1,63}(?:\.|" + _SPELLED_DOT + r")){1,4}"
    r"|\s+at\s+(?:[A-Za-z0-9-]{1,63}" + _SPELLED_DOT + r"){1,4})"
    r"(?:com|org|net|edu|gov|io|co|uk|de|fr|es|it|info|me|eu|ca|au|in|br|mx|ai|dev)(?![A-Za-z0-9])",
    re.IGNORECASE,
)
# IBANs are printed in capitals; typed ones are often not ("de89 3704 …"): read either, check upper.
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,3})?(?![A-Za-z0-9])"
)
# Cards are printed as one run of digits or in groups of three to six (4-4-4-4, Amex 4-6-5), never as
# single spaced digits, which would read a list of small numbers as a card.
_CARD = re.compile(r"(?<![\w+.,-])(?:[0-9]{13,19}|[0-9]{4}(?:[ -][0-9]{3,6}){2,4})(?![\w]|[.,-][0-9])")
_SSN_SEPARATED = re.compile(r"(?<![\w.,-])[0-9]{3}([- ])[0-9]{2}\1[0-9]{4}(?![\w]|[.,-][0-9])")
_SSN_BARE = re.compile(r"(?<![\w.,-])[0-9]{9}(?![\w]|[.,-][0-9])")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.[0-9])")
_DOTTED_QUAD = re.compile(r"(?<![\w.])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![\w]|\.[0-9])")
_VERSION_BEFORE = re.compile(r"\b(?:version|release|build|firmware|ver\.?|v)(?:\s?(?:is|:|=|==))?\s?$", re.IGNORECASE)
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# A phone candidate: digit groups (an area code may sit in parentheses) joined by one space, dot,
# dash, slash or no-break space, optionally after "+" or "(+"; the separator is required between
# two digit runs so that a long run of digits cannot split in exponentially many ways. A colon
# blocks only after a digit (a time, "12:30:45"), so "tel:+49 30 901820" reads.
_PHONE = re.compile(
    r"(?<![\w+.,/#$€£¥-])(?<![0-9]:)(?:\+ ?|\(\+)?\(?[0-9]{1,15}\)?"
    r"(?:(?:[ .\-/\u00a0\u202f]|(?<=\))|(?=\())\(?[0-9]{1,15}\)?){0,7}"
    r"(?![\w]|[.,:/-][0-9])"
)
_NORTH_AMERICAN_FORM = re.compile(r"(?:\+?1[ .-]?)?(?:\([0-9]{3}\) ?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}")
_DATE_FORM = re.compile(
    r"[0-9]{1,4}[./-][0-9]{1,2}[./-][0-9]{1,4}|[0-9]{1,2}[./-][0-9]{4}|(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])[0-3][0-9]"
)
_DIGIT_RUN = re.compile(r"[0-9]+")
_DIGIT = re.compile(r"[0-9]")
_NOT_DIGIT = re.compile(r"[^0-9]")
_UPPER = re.compile(r"[A-ZÀ-ÖØ-Þ]")

# Cue words: those that say a number nearby is a phone, an SSN, or something else (an order, an
# invoice, a device id) whatever its digits look like.
_PHONE_CUE = re.compile(
    r"\b(?:phone|tel|telephone|call|ring|text|sms|mobile|cell|cellphone|whatsapp|signal|contact|reach|fax|hotline"
    r"|(?:my|your|his|her|our|their) number"
    r"|n[uú]mero|tel[eé]fono|m[oó]vil|celular|llama|llámame|ll[aá]mame"
    r"|nummer|telefon|handy|anrufen|ruf|festnetz"
    r"|num[eé]ro|t[eé]l[eé]phone|portable|appelle[rz]?|joindre)\b",
    re.IGNORECASE,
)
_NOT_PHONE_CUE = re.compile(
    r"(?:\b(?:order|invoice|ticket|ref|reference|tracking|case|serial|sku|part|imei|isbn|iccid|account|acct|policy"
    r"|transaction|confirmation|booking|build|version|id|pedido|factura|referencia|expediente|cuenta"
    r"|bestellung|bestellnummer|rechnung|rechnungsnummer|auftrag|kundennummer|sendungsnummer|konto"
    r"|commande|facture|dossier|colis|compte|r[eé]f)\b)",
    re.IGNORECASE,
)
_SSN_CUE = re.compile(r"\b(?:ssn|ss#|social(?: security)?(?: number| no\.?| #)?)", re.IGNORECASE)
_CURRENCY_BEFORE = re.compile(r"(?:[$€£¥]|\b(?:usd|eur|gbp|chf|inr|brl|aud|cad|rs\.?|r\$))\s?$", re.IGNORECASE)
_UNIT_AFTER = re.compile(
    r"^\s?(?:[$€£¥%]|(?:usd|eur|euros?|dollars?|gbp|pounds?|chf|inr|rupees?|brl|reais|aud|cad|km|kg|mg|ms|mb|gb|tb"
    r"|bytes?|rows|tokens|steps|units|people|users|views|downloads)\b)",
    re.IGNORECASE,
)
_CUE_WINDOW = 40
_E164 = phonenumbers.PhoneNumberFormat.E164
_PLUS = phonenumbers.CountryCodeSource.FROM_NUMBER_WITH_PLUS_SIGN
_IDD = phonenumbers.CountryCodeSource.FROM_NUMBER_WITH_IDD
_WITHOUT_PLUS = phonenumbers.CountryCodeSource.FROM_NUMBER_WITHOUT_PLUS_SIGN
_SPELLED_EMAIL_HINT = re.compile(r"[\(\[\{]at[\)\]\}]|\bdot\b", re.IGNORECASE)


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


# Issuer identification number ranges and lengths of the card brands, from the networks' published
# ranges (Visa, Mastercard incl. 2221-2720 since 2017, Amex, Discover incl. 644-649 and 65, JCB
# 3528-3589, UnionPay 62, Diners Club International 36 and 300-305).
_BRANDS: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    # (prefix length, first prefix, last prefix, lengths)
    (1, 4, 4, frozenset({13, 16, 19})),  # Visa
    (2, 51, 55, frozenset({16})),  # Mastercard
    (4, 2221, 2720, frozenset({16})),  # Mastercard 2-series
    (2, 34, 34, frozenset({15})),  # American Express
    (2, 37, 37, frozenset({15})),  # American Express
    (4, 6011, 6011, frozenset(range(16, 20))),  # Discover
    (3, 644, 649, frozenset(range(16, 20))),  # Discover
    (2, 65, 65, frozenset(range(16, 20))),  # Discover
    (4, 3528, 3589, frozenset(range(16, 20))),  # JCB
    (2, 62, 62, frozenset(range(16, 20))),  # UnionPay
    (2, 36, 36, frozenset({14})),  # Diners Club International
    (3, 300, 305, frozenset({14})),  # Diners Club International
)


def _branded(digits: str) -> bool:
    return any(low <= int(digits[:width]) <= high and len(digits) in lengths for width, low, high, lengths in _BRANDS)


def _card(candidate: str) -> bool:
    digits = _NOT_DIGIT.sub("", candidate)
    return 13 <= len(digits) <= 19 and _branded(digits) and _luhn(digits)


def _card_shaped(candidate: str) -> bool:
    """Whether a rejected card candidate still reads as a card number (a brand's prefix, or Luhn
    valid as an IMEI is), so that no weaker reader takes it. A run starting ``00`` is an
    international dialling prefix, never a card: it stays free for the phone reader."""
    digits = _NOT_DIGIT.sub("", candidate)
    if not 13 <= len(digits) <= 19 or digits.startswith("00"):
        return False
    return _luhn(digits) or any(low <= int(digits[:width]) <= high for width, low, high, _ in _BRANDS)


# IBAN length per country, from the SWIFT IBAN registry.
_IBAN_LENGTHS: Mapping[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def _iban(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _ssn_valid(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ipv6(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _cue_before(text: str, start: int, cue: re.Pattern[str]) -> re.Match[str] | None:
    """The last match of ``cue`` in the window before ``start``."""
    found = list(cue.finditer(text, max(0, start - _CUE_WINDOW), start))
    return found[-1] if found else None


def _cued(text: str, start: int, end: int, cue: re.Pattern[str]) -> bool:
    return _cue_before(text, start, cue) is not None or cue.search(text[end : end + 20]) is not None


class _Found(NamedTuple):
    start: int
    end: int
    score: float


class _Read(NamedTuple):
    """What one reader made of a text: the spans it accepts, and the spans it claims (candidates of
    its shape that it rejected), which no weaker reader may take."""

    found: list[_Found]
    claimed: list[tuple[int, int]]


Reader = Callable[[str, "_Spans"], _Read]
"""A reader takes the text and the spans earlier readers took or claimed (so that it can skip
candidates there before any costly check) and says what it found and claims."""


def _checked(
    pattern: re.Pattern[str],
    valid: Callable[[str], bool],
    trim: str = "",
    claims: Callable[[str], bool] | None = None,
) -> Reader:
    """A reader of ``pattern``'s matches that ``valid`` accepts. With ``trim``, a rejected grouped
    candidate is retried without its trailing groups (cut at those separator characters), since its
    last group may be a following word or number ("DE89 3704 0044 0532 0130 00 AB"). A candidate
    still rejected is claimed when ``claims`` says it has this entity's shape."""

    def read(text: str, occupied: _Spans) -> _Read:
        found: list[_Found] = []
        claimed: list[tuple[int, int]] = []
        for match in pattern.finditer(text):
            candidate = match.group()
            cuts = [len(candidate)] + [i for i in range(len(candidate) - 1, 0, -1) if candidate[i] in trim]
            for cut in cuts:
                if valid(candidate[:cut]):
                    found.append(_Found(match.start(), match.start() + cut, SCORES["confirmed"]))
                    break
            else:
                if claims is not None and claims(candidate):
                    claimed.append(match.span())
        return _Read(found, claimed)

    return read


def _read_emails(text: str, occupied: _Spans) -> _Read:
    found = [_Found(*m.span(), SCORES["confirmed"]) for m in _EMAIL.finditer(text)]
    if _SPELLED_EMAIL_HINT.search(text):
        found += [_Found(*m.span(), SCORES["emailSpelled"]) for m in _EMAIL_SPELLED.finditer(text)]
    return _Read(found, [])


def _read_ssns(text: str, occupied: _Spans) -> _Read:
    found: list[_Found] = []
    claimed: list[tuple[int, int]] = []
    for match in _SSN_SEPARATED.finditer(text):
        if _ssn_valid(_NOT_DIGIT.sub("", match.group())):
            found.append(_Found(*match.span(), SCORES["confirmed"]))
        else:
            claimed.append(match.span())
    # Nine bare digits are an SSN only where the text says so; otherwise they may be a phone.
    for match in _SSN_BARE.finditer(text):
        if not _cued(text, match.start(), match.end(), _SSN_CUE):
            continue
        if _ssn_valid(match.group()):
            found.append(_Found(*match.span(), SCORES["ssnCued"]))
        else:
            claimed.append(match.span())
    return _Read(found, claimed)


def _read_ipv4(text: str, occupied: _Spans) -> _Read:
    found: list[_Found] = []
    claimed: list[tuple[int, int]] = []
    for match in _DOTTED_QUAD.finditer(text):
        # Every dotted quad is claimed (no phone inside it); an address when its octets are in
        # range and it is not named a version ("version 10.4.22.1", "firmware 2.0.1.7").
        in_range = _IPV4.fullmatch(match.group()) is not None
        versioned = _VERSION_BEFORE.search(text, max(0, match.start() - 12), match.start()) is not None
        if in_range and not versioned:
            found.append(_Found(*match.span(), SCORES["confirmed"]))
        else:
            claimed.append(match.span())
    return _Read(found, claimed)


@cache
def _helpline_numbers() -> frozenset[str]:
    """The helplines as digit strings and as E.164 numbers, to compare with a phone candidate."""
    numbers: set[str] = set()
    for number, region in HELPLINES:
        numbers.add(_NOT_DIGIT.sub("", number))
        with contextlib.suppress(phonenumbers.NumberParseException):
            numbers.add(phonenumbers.format_number(phonenumbers.parse(number, region), _E164))
    return frozenset(numbers)


def is_helpline(number: str) -> bool:
    """Whether ``number`` (as written: digits with any separators, optionally ``+`` and a country
    code) is one of the :data:`HELPLINES`, in any of the regions read as phones."""
    digits = _NOT_DIGIT.sub("", number)
    helplines = _helpline_numbers()
    if digits in helplines:
        return True
    regions = (None,) if number.lstrip("( ").startswith("+") else PHONE_REGIONS
    for region in regions:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.format_number(parsed, _E164) in helplines:
            return True
    return False


def _written_nationally(parsed: phonenumbers.PhoneNumber, digits: str, region: str) -> bool:
    """Whether ``digits`` are the number as that country writes it: its national significant number
    with the trunk prefix where the country's national format has one (optional for India and the
    North American plan, where people drop or add it)."""
    significant = phonenumbers.national_significant_number(parsed)
    national = _NOT_DIGIT.sub("", phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL))
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    prefix = metadata.national_prefix if metadata is not None and metadata.national_prefix else ""
    allowed = {national, prefix + significant}
    if region in ("IN", "US"):
        allowed.add(significant)
    return digits in allowed


def _plausible(candidate: str) -> bool:
    """Whether ``candidate`` has the digits and groups of a phone number, before anything costlier
    is asked of it."""
    digits = _NOT_DIGIT.sub("", candidate)
    if not (7 if candidate.lstrip("(").startswith("+") else 8) <= len(digits) <= 15:
        return False
    # "1 2 3 4 5 6 7 8" is a list of numbers; real numbers have at most one single-digit group
    # besides a leading country code and a trunk prefix in parentheses ("0800 111 0 111",
    # "+1 212 555 0100", "+33 (0)6 12 34 56 78").
    groups = _DIGIT_RUN.findall(candidate.replace("(0)", ""))
    return sum(len(g) == 1 for g in groups[1:]) <= 1 and len(groups) <= 7


def _may_be_national(region: str, digits: str) -> bool:
    """A cheap first test of whether ``digits`` can be a number of ``region`` written nationally
    (length and leading digit of its plan), to spare a parse per region (about 50 us each)."""
    first, length = digits[0], len(digits)
    if region == "US":
        return (length == 10 and first in "23456789") or (length == 11 and first == "1" and digits[1] in "23456789")
    if region in ("GB", "DE", "FR", "AU"):
        return first == "0"
    if region == "ES":
        return length == 9 and first in "6789"
    if region == "IT":
        return first in "03"
    if region == "IN":
        return first in "06789"
    if region == "BR":
        return 10 <= length <= 12
    return True


class _Phone(NamedTuple):
    score: float
    e164: str


def _substantive(parsed: phonenumbers.PhoneNumber) -> bool:
    """Whether a number the library calls possible has a national number worth the name: at
    least six digits, not one digit repeated. "00000000" parses as +44 0 (the "00" read as the
    international prefix), and "0000 0000" or "555 5555" are placeholders, not numbers."""
    national = str(parsed.national_number)
    return len(national) >= 6 and len(set(national)) > 1


def _phone(candidate: str, cued: bool) -> _Phone | None:
    """``candidate`` as a phone number (its score and E.164 form), or None when it is not one."""
    if not _plausible(candidate):
        return None
    digits = _NOT_DIGIT.sub("", candidate)
    international = candidate.lstrip("(").startswith("+")
    if _DATE_FORM.fullmatch(candidate):
        return None
    # Unix times in seconds or milliseconds (1.0e9 to 2.0e9 s, from 2001 to 2033) are no
    # national number of these regions written without separators, unless the text says phone.
    if not cued and candidate.isdigit() and len(candidate) in (10, 13) and candidate[0] == "1":
        return None
    # A bare run of digits with neither "+", "00" nor a trunk "0" ("3141592653", "612345678") is as
    # likely an amount, a result or an id as a phone: it needs a cue.
    if not cued and candidate.isdigit() and candidate[0] != "0":
        return None
    strong_form = international or digits.startswith("00") or _NORTH_AMERICAN_FORM.fullmatch(candidate) is not None
    possible: phonenumbers.PhoneNumber | None = None
    regions: tuple[str | None, ...] = (None,) if international else PHONE_REGIONS
    for region in regions:
        if region is not None and not digits.startswith("00") and not _may_be_national(region, digits):
            continue
        try:
            parsed = phonenumbers.parse(candidate, region, keep_raw_input=True)
        except phonenumbers.NumberParseException:
            continue
        # A country code without "+" ("919876543210") counts where the text says it is a phone.
        dialled_abroad = parsed.country_code_source in (_PLUS, _IDD) or (
            cued and parsed.country_code_source == _WITHOUT_PLUS
        )
        if region is not None and not dialled_abroad and not _written_nationally(parsed, digits, region):
            continue
        if phonenumbers.is_valid_number(parsed):
            return _Phone(SCORES["confirmed"], phonenumbers.format_number(parsed, _E164))
        if possible is None and phonenumbers.is_possible_number(parsed) and _substantive(parsed):
            possible = parsed
    if possible is not None and (strong_form or cued):
        return _Phone(SCORES["phoneCued"], phonenumbers.format_number(possible, _E164))
    return None


def _group_windows(candidate: str) -> Iterator[tuple[int, int]]:
    """Sub-spans of a grouped candidate to try when the whole is not a phone: without its first
    group, without its last, without both ("room 12 0151 12345678", "0151 12345678 2"). Only
    those that start the way a dialled number does ("+", "(", "0"): the groups of a longer
    number ("732 829 320 00074", a French company number) are not phones once cut."""
    bounds = [m.span() for m in re.finditer(r"\(?\+?[0-9]+\)?", candidate)]
    if len(bounds) < 3:
        return
    windows = [(bounds[1][0], len(candidate)), (0, bounds[-2][1])]
    if len(bounds) > 3:
        windows.append((bounds[1][0], bounds[-2][1]))
    for left, right in windows:
        if candidate[left] in "+(0":
            yield left, right


def _read_phones(text: str, occupied: _Spans) -> _Read:
    found: list[_Found] = []
    claimed: list[tuple[int, int]] = []
    for match in _PHONE.finditer(text):
        candidate, (start, end) = match.group(), match.span()
        # The whole candidate, then without its first or last group; each as (offset, text), free
        # of what earlier readers took and shaped like a phone number, before anything costlier.
        parts = []
        for left, right in [(0, len(candidate)), *_group_windows(candidate)]:
            part = candidate[left:right].strip(" .-/")
            offset = start + candidate.index(part, left)
            if occupied.free(offset, offset + len(part)) and _plausible(part):
                parts.append((offset, part))
        if not parts:
            continue
        if _CURRENCY_BEFORE.search(text, max(0, start - 5), start) or _UNIT_AFTER.match(text[end : end + 12]):
            continue
        cued = _cued(text, start, end, _PHONE_CUE)
        # "order 0151 12345678" is an order; "call about order 0151 12345678" a phone.
        if not cued and _cue_before(text, start, _NOT_PHONE_CUE) is not None:
            continue
        for offset, part in parts:
            phone = _phone(part, cued)
            if phone is None:
                continue
            helplines = _helpline_numbers()
            if phone.e164 in helplines or _NOT_DIGIT.sub("", part) in helplines:
                # A helpline is kept, and claimed: nothing else may read it either.
                claimed.append((offset, offset + len(part)))
            else:
                found.append(_Found(offset, offset + len(part), phone.score))
            break
    return _Read(found, claimed)


_read_ipv6 = _checked(_IPV6, _ipv6)


# Names ----------------------------------------------------------------------------------------------


@cache
def _first_names() -> frozenset[str]:
    return _word_list("pii_first_names.txt")


@cache
def _not_surnames() -> frozenset[str]:
    return _word_list("pii_not_surnames.txt")


def _word_list(name: str) -> frozenset[str]:
    lines = (_DATA / name).read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


_UP = "A-ZÀ-ÖØ-Þ"
_LOW = "a-zß-öø-ÿ"
# A capitalised word: "Smith", "O'Neill", "McDonald", "García-Márquez", "Müller".
_CAPITALISED = rf"[{_UP}](?:[{_LOW}]+|['\u2019][{_UP}][{_LOW}]+)(?:[{_UP}][{_LOW}]+)?(?:-[{_UP}][{_LOW}]+)?"
_PARTICLE = r"(?:van der|van den|van de|von der|de la|de los|de las|del|van|von|de|du|da|di|dos|le|la|y|zu)"
_NAME_TAIL = rf"(?:\s(?:{_PARTICLE}\s)?{_CAPITALISED}){{1,3}}"
_WORD_CAPITALISED = re.compile(rf"(?<![\w.@-]){_CAPITALISED}")
_NAME_TAIL_AFTER = re.compile(rf"{_NAME_TAIL}(?![\w@])")
_TITLE = (
    r"(?:Dr|Mr|Mrs|Ms|Mx|Prof|Sr|Sra|Srta|Dña|Dª|Mme|Mlle)\.?|M\.|Herr|Frau|Doctor|Doctora|Docteur|Madame"
    r"|Monsieur|Señor|Señora|Señorita|Don|Doña|Professor|Professorin|Miss|Mister"
)
_NAME_BY_TITLE = re.compile(
    rf"(?<![\w.])(?:(?:{_TITLE})\s)+((?:{_CAPITALISED})(?:\s(?:{_PARTICLE}\s)?{_CAPITALISED}){{0,2}})"
)
_NAME_CUE = (
    r"(?i:my name is|my name's|i am called|name:|full name:|me llamo|mi nombre es|nombre:|nombre completo:"
    r"|ich hei(?:ß|ss)e|mein name ist|name lautet|je m['\u2019]appelle|mon nom est|nom:|nom complet:)"
)
_NAME_BY_CUE = re.compile(rf"{_NAME_CUE}\s*((?:{_CAPITALISED})(?:\s(?:{_PARTICLE}\s)?{_CAPITALISED}){{1,3}})")


def _name_end(tokens_text: str, base: int) -> int | None:
    """The end of a name that starts at ``base``, dropping trailing words that are no surnames
    ("Anna Schmidt Street" ends after Schmidt); None when fewer than two words remain."""
    words = list(re.finditer(r"\S+", tokens_text))
    while len(words) > 1 and words[-1].group() in _not_surnames():
        words.pop()
    if len(words) < 2:
        return None
    if words[1].group() in _not_surnames():
        return None
    return base + words[-1].end()


def _read_names(text: str, occupied: _Spans) -> _Read:
    found: list[_Found] = []
    for match in _NAME_BY_CUE.finditer(text):
        end = _name_end(match.group(1), match.start(1))
        if end is not None:
            found.append(_Found(match.start(1), end, SCORES["nameByCue"]))
    for match in _NAME_BY_TITLE.finditer(text):
        words = match.group(1).split()
        while len(words) > 1 and words[-1] in _not_surnames():
            words.pop()
        if words[0] in _not_surnames():
            continue
        name = " ".join(words)
        found.append(_Found(match.start(1), match.start(1) + len(name), SCORES["nameByTitle"]))
    first_names = _first_names()
    position = 0
    # Each capitalised word that is a given name starts a candidate; the words after it are read
    # from there, so that "Invite Michael Patel" or "von Katrin Neumann" is not one run of
    # capitalised words starting at a word that is no name.
    for word in _WORD_CAPITALISED.finditer(text):
        if word.start() < position or word.group() not in first_names:
            continue
        tail = _NAME_TAIL_AFTER.match(text, word.end())
        if tail is None:
            continue
        end = _name_end(text[word.start() : tail.end()], word.start())
        if end is not None:
            found.append(_Found(word.start(), end, SCORES["nameByGazetteer"]))
            position = end
    return _Read(found, [])


# Addresses ------------------------------------------------------------------------------------------

_HOUSE = r"[0-9]{1,5}(?:\s?[A-Za-z](?![\w]))?(?:-[0-9]{1,4})?"
_NAME_WORD = rf"(?:[{_UP}][{_LOW}'\u2019.-]*|[0-9]{{1,2}}(?:st|nd|rd|th))"
_EN_TYPE = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|Close"
    r"|Crescent|Square|Sq|Highway|Hwy|Parkway|Pkwy|Circle|Cir|Grove|Gardens|Row|Mews|Hill|Loop|Trail|Alley)\.?"
)
_UNIT = r"(?:,?\s(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor)\.?\s?#?[0-9A-Za-z]{1,5})?"
_CITY = r"[A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2}"
_US_TAIL = rf",\s{_CITY}(?:,?\s[A-Z]{{2}}(?:\s[0-9]{{5}}(?:-[0-9]{{4}})?)?)?"
_UK_TAIL = rf"(?:,\s{_CITY})?,?\s[A-Z]{{1,2}}[0-9][A-Z0-9]?\s[0-9][A-Z]{{2}}"
_EU_TAIL = rf"(?:,?\s(?:[A-Z]{{1,2}}-)?[0-9]{{4,5}}\s[{_UP}][{_LOW}]+(?:[\s-][{_UP}][{_LOW}]+){{0,2}})?"
_ADDRESS_EN = re.compile(
    rf"(?<![\w.,-]){_HOUSE}\s(?:{_NAME_WORD}\s){{1,4}}{_EN_TYPE}(?:\s(?:NW|NE|SW|SE|N|S|E|W)\b)?{_UNIT}"
    rf"(?:{_UK_TAIL}|{_US_TAIL})?(?![\w])"
)
_ES_TYPE = (
    r"(?:[Cc]alle|C/|c/|[Aa]venida|[Aa]vda\.|[Aa]v\.|[Pp]aseo|P\.º|[Pp]laza|[Pp]za\.|[Cc]arrer|[Cc]amino"
    r"|[Rr]onda|[Tt]ravesía|[Cc]arretera)"
)
_FR_TYPE = (
    r"(?:rue|avenue|av\.|boulevard|bd|bld|place|pl\.|chemin|allée|impasse|quai|route|cours|square|passage"
    r"|Rue|Avenue|Boulevard|Place|Chemin|Allée|Impasse|Quai|Route|Cours)"
)
_LINK = r"(?:de la|de los|de las|de l['\u2019]|del|de|des|du|d['\u2019]|la|le|les|el|los|las)"
_STREET_NAME = rf"(?:(?:{_LINK})\s?)?{_NAME_WORD}(?:[\s-](?:(?:{_LINK})\s?)?{_NAME_WORD}){{0,3}}"
_ADDRESS_ES = re.compile(
    rf"(?<![\w]){_ES_TYPE}\s?{_STREET_NAME},?\s(?:n\.?º\s?)?[0-9]{{1,4}}(?:\s?[A-Za-z](?![\w]))?"
    rf"(?:,?\s[0-9]{{1,2}}[ºª°]?\s?(?:[A-Za-z]|izq(?:da)?\.?|dcha\.?)?)?{_EU_TAIL}(?![\w])"
)
_DE_COMPOUND = r"(?:straße|strasse|str\.|weg|allee|platz|gasse|ring|damm|ufer|chaussee|steig|pfad)"
_ADDRESS_DE = re.compile(
    rf"(?<![\w])(?:[{_UP}][{_LOW}]+{_DE_COMPOUND}"
    rf"|[{_UP}][{_LOW}]+(?:er)?\s(?:Straße|Strasse|Str\.|Weg|Allee|Platz|Gasse|Ring|Damm|Ufer)"
    rf"|(?:Am|An der|An den|Auf dem|Zum|Zur)\s[{_UP}][{_LOW}]+(?=\s[0-9]{{1,4}}\s?[a-z]?,?\s[0-9]{{5}}\s))"
    rf"\s[0-9]{{1,4}}\s?[a-z]?(?![\w]){_EU_TAIL}(?![\w])"
)
_ADDRESS_FR = re.compile(
    rf"(?<![\w.,-])[0-9]{{1,4}}(?:\s?(?:bis|ter))?,?\s{_FR_TYPE}\s{_STREET_NAME}{_EU_TAIL}(?![\w])"
)


_ABBREVIATED = re.compile(r"\b(?:St|Ave|Rd|Blvd|Ln|Dr|Ct|Pl|Sq|Hwy|Pkwy|Cir|str|Str|av|pl|Avda|Pza)\.$")


def _read_addresses(text: str, occupied: _Spans) -> _Read:
    found: list[_Found] = []
    for pattern in (_ADDRESS_EN, _ADDRESS_ES, _ADDRESS_DE, _ADDRESS_FR):
        for match in pattern.finditer(text):
            start, end = match.span()
            # A full stop after the last word ends the sentence unless it abbreviates ("Elm St.").
            if text[end - 1] == "." and not _ABBREVIATED.search(text, start, end):
                end -= 1
            found.append(_Found(start, end, SCORES["address"]))
    return _Read(found, [])


# Earlier readers win where spans overlap, and what an earlier reader claims (a candidate of its shape
# it rejected) no later reader takes: an email's local part may hold a phone-like number, an invalid
# IBAN's BBAN run may pass Luhn, a card may read as a phone, never the other way round.
_READERS: tuple[tuple[str, Reader], ...] = (
    ("email", _read_emails),
    ("iban", _checked(_IBAN, _iban, trim=" ", claims=lambda candidate: True)),
    ("creditCard", _checked(_CARD, _card, trim=" -", claims=_card_shaped)),
    ("ssn", _read_ssns),
    ("ipAddress", _read_ipv4),
    ("ipAddress", _read_ipv6),
    ("phone", _read_phones),
    ("address", _read_addresses),
    ("personName", _read_names),
)
# What each entity needs in the text to be worth looking for.
_NEEDS_DIGIT = frozenset({"iban", "creditCard", "ssn", "ipAddress", "phone", "address"})


def _selected(entities: Collection[str] | None) -> Collection[str]:
    if entities is None:
        return STRUCTURED
    unknown = [e for e in entities if e not in ENTITIES]
    if unknown:
        raise ValueError(f"unknown PII entity {unknown[0]!r}; known: {', '.join(sorted(ENTITIES))}")
    return entities


def find(text: str, entities: Collection[str] | None = None) -> list[Match]:
    """The personal data in ``text``, in order and without overlaps. ``entities`` limits the search
    to some API entity names (:data:`STRUCTURED` by default; ``personName`` and ``address`` only
    when asked for). Raises ``ValueError`` for a name that is no API entity."""
    wanted = _selected(entities)
    has_digit = _DIGIT.search(text) is not None
    has_at = "@" in text or _SPELLED_EMAIL_HINT.search(text) is not None
    has_upper = "personName" in wanted and _UPPER.search(text) is not None
    if not (has_digit or has_at or has_upper):
        return []
    taken: list[Match] = []
    occupied = _Spans()
    for entity, read in _READERS:
        if entity not in wanted:
            continue
        if entity in _NEEDS_DIGIT and not has_digit:
            continue
        if (entity == "email" and not has_at) or (entity == "personName" and not has_upper):
            continue
        result = read(text, occupied)
        accepted = [found for found in result.found if occupied.free(found.start, found.end)]
        # Spans of one reader do not block each other (the same span may come twice from two of
        # its patterns): they are added once the reader is done, keeping the first of an overlap.
        for found in accepted:
            if occupied.free(found.start, found.end):
                taken.append(Match(entity, found.start, found.end, found.score))
                occupied.add(found.start, found.end)
        for start, end in result.claimed:
            occupied.add(start, end)
    return sorted(taken, key=lambda m: m.start)


class _Spans:
    """Taken ``[start, end)`` spans, possibly overlapping one another (claims may), kept sorted by
    start so that an overlap test looks only at the spans that start within the longest span's
    length before it: O(log n) where a text holds many findings (the quadratic scan took seconds
    on 100 kB)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._longest = 0

    def free(self, start: int, end: int) -> bool:
        """Whether ``[start, end)`` overlaps no taken span."""
        index = bisect.bisect_left(self._starts, end)
        for i in range(index - 1, -1, -1):
            if self._starts[i] + self._longest <= start:
                break
            if self._ends[i] > start:
                return False
        return True

    def add(self, start: int, end: int) -> None:
        """Take ``[start, end)``."""
        index = bisect.bisect_left(self._starts, start)
        self._starts.insert(index, start)
        self._ends.insert(index, end)
        self._longest = max(self._longest, end - start)


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
