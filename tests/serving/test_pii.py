"""PII redaction: each entity found and replaced, checksums that keep look-alikes, and ordinary
numbers (prices, dates, versions, model ids) left alone."""

from __future__ import annotations

import typing

import pytest

from cutover.api.v1alpha1.safetypolicy import PiiEntity
from cutover.serving import pii


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+audit@example.co.uk today", "write to [REDACTED:email] today"),
        ("E.164: +4915112345678.", "E.164: [REDACTED:phone]."),
        ("office +44 20 7946 0958", "office [REDACTED:phone]"),
        ("call (555) 123-4567 now", "call [REDACTED:phone] now"),
        ("call 555-123-4567 now", "call [REDACTED:phone] now"),
        ("call +1 555-123-4567 now", "call [REDACTED:phone] now"),
        ("ssn 123-45-6789", "ssn [REDACTED:ssn]"),
        ("card 4111 1111 1111 1111", "card [REDACTED:creditCard]"),
        ("card 4111-1111-1111-1111 exp 2027", "card [REDACTED:creditCard] exp 2027"),
        ("amex 378282246310005", "amex [REDACTED:creditCard]"),
        ("from 192.168.10.254.", "from [REDACTED:ipAddress]."),
        ("from 2001:db8::8a2e:370:7334", "from [REDACTED:ipAddress]"),
        ("iban DE89 3704 0044 0532 0130 00 please", "iban [REDACTED:iban] please"),
        ("iban GB82WEST12345698765432", "iban [REDACTED:iban]"),
    ],
)
def test_each_entity_is_replaced_by_its_token(text: str, expected: str) -> None:
    assert pii.redact(text) == expected


def test_find_reports_entity_and_span_in_order() -> None:
    text = "mail a@b.io or call 555-123-4567"
    matches = pii.find(text)
    assert [(m.entity, text[m.start : m.end]) for m in matches] == [("email", "a@b.io"), ("phone", "555-123-4567")]


def test_entity_names_are_the_safety_policy_api_names() -> None:
    assert set(typing.get_args(PiiEntity)) == pii.ENTITIES == set(pii.TOKENS)
    assert {"personName", "address"} == pii.ENTITIES - pii.STRUCTURED


def test_only_the_requested_entities_are_redacted() -> None:
    text = "a@b.io 555-123-4567"
    assert pii.redact(text, ["phone"]) == "a@b.io [REDACTED:phone]"
    assert pii.redact(text, []) == text


def test_names_and_addresses_are_found_only_when_asked_for() -> None:
    text = "Maria Garcia lives at 12 Elm Street"
    assert pii.redact(text) == text
    assert pii.redact(text, ["personName", "address"]) == "[REDACTED:personName] lives at [REDACTED:address]"


def test_unknown_entities_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown PII entity 'credit_card'"):
        pii.redact("x", ["credit_card"])


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails Luhn
        "order 1234567812345678",  # fails Luhn
        "iban DE89 3704 0044 0532 0130 01",  # fails mod-97
        "ssn 000-12-3456",
        "ssn 666-12-3456",
        "ssn 912-34-5678",
        "ssn 123-00-6789",
        "ssn 123-45-0000",
        "ip 256.1.1.1",
    ],
)
def test_checksum_and_rule_failures_are_kept(text: str) -> None:
    assert pii.redact(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "pi is 3.14159 and e is 2.71828",
        "it costs $1,234.56 or 1234.56 EUR",
        "released 2024-01-15, 12/31/2024 at 12:30:45 in 2024",
        "cutover 2.14.3 with numpy==2.4.6, build v1.2.3.4",
        "models gpt-4-0613, resnet-50, bert-base-uncased",
        "request 550e8400-e29b-41d4-a716-446655440000 digest sha256:9f86d081884c7d659a2feaa0c55ad015",
        "scores 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6",
        "rows 1000000 of 25000000, p=0.05",
        "plus +5 points",
    ],
)
def test_ordinary_numbers_are_left_alone(text: str) -> None:
    assert pii.redact(text) == text


def test_redact_value_walks_nested_values_and_keeps_numbers() -> None:
    value = {
        "outputs": {"text": {"values": ["mail a@b.io", 3.5, None], "shape": [2]}},
        "rows": [["ssn 123-45-6789", 7], ("555-123-4567",)],
        "ok": True,
        "a@b.io": 1,
    }
    assert pii.redact_value(value) == {
        "outputs": {"text": {"values": ["mail [REDACTED:email]", 3.5, None], "shape": [2]}},
        "rows": [["ssn [REDACTED:ssn]", 7], ("[REDACTED:phone]",)],
        "ok": True,
        "a@b.io": 1,
    }


@pytest.mark.parametrize(
    "text",
    [
        # The 16-digit run after the country code and check digits passes Luhn and starts with a
        # Visa prefix, so a card reader that ignores the IBAN's verdict calls it a card.
        "iban DE12 4704 0044 0532 0139 00 please",
        # A cut-off prefix of a 27-character French IBAN that passes mod-97 by chance.
        "FR12 3000 6000 0112 3456 7894 189",
    ],
)
def test_a_span_rejected_as_an_iban_is_not_read_as_anything_else(text: str) -> None:
    assert pii.find(text) == []
