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


def _found(text: str, entities: typing.Collection[str] | None = None) -> list[tuple[str, str]]:
    return [(m.entity, text[m.start : m.end]) for m in pii.find(text, entities)]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("call me on 07911 123456 tonight", "07911 123456"),  # UK mobile
        ("uk landline 020 7946 0958", "020 7946 0958"),
        ("mein Handy: 0151 12345678", "0151 12345678"),  # DE mobile
        ("Festnetz 030/1234567", "030/1234567"),
        ("appelle-moi au 06 12 34 56 78", "06 12 34 56 78"),  # FR in pairs
        ("mon numéro 06.45.12.78.90", "06.45.12.78.90"),
        ("ring 0412 345 678 after 5", "0412 345 678"),  # AU mobile
        ("my number is (212) 555-0148", "(212) 555-0148"),  # US
        ("llámame al 612 34 56 78", "612 34 56 78"),  # ES
        ("chiamami al 347 123 4567", "347 123 4567"),  # IT mobile
        ("call 98765 43210", "98765 43210"),  # IN mobile
        ("escritório (11) 91234-5678", "(11) 91234-5678"),  # BR
        ("+44 (0) 20 7946 0958", "+44 (0) 20 7946 0958"),
        ("0044 20 7946 0958", "0044 20 7946 0958"),  # international with 00
        ("+33 (0)6 12 34 56 78", "+33 (0)6 12 34 56 78"),  # trunk prefix in parentheses
        ("Phone:0151 12345678", "0151 12345678"),
        ("room 12 0151 12345678", "0151 12345678"),  # a leading group that is no part of it
    ],
)
def test_national_and_international_phone_formats_are_found(text: str, number: str) -> None:
    assert _found(text) == [("phone", number)]


@pytest.mark.parametrize(
    "text",
    [
        "released 15.01.2024 at 12:30, rebuilt 2024-01-15T12:30:45Z",
        "the meeting moved to 03/15/2024",
        "timestamp 1733059200 and 1733059200123",  # would be DE 0173 3059200 with a trunk 0
        "order #1234567890 and Order number 0151 12345678",
        "Rechnungsnummer 030 12345678 bitte korrigieren",
        "it costs €12 345 678, or $1,234,567.89",
        "version 10.2.3.4567 and v2024.11.3",
        "ISBN 978-3-16-148410-0",
        "we had 25000000 page views",
        "what is 12345678 times 87654321?",
        "the function returns 3141592653 for n = 10",  # a valid US number, written as a result
        "Le SIRET 732 829 320 00074 de l'entreprise",  # cut groups of a longer number
        "numéro de sécurité sociale 1 85 05 78 006 084 36",
        "at 12:30:45 the job 12:3012345678 ran",
    ],
)
def test_dates_times_versions_prices_orders_and_timestamps_are_not_phones(text: str) -> None:
    assert _found(text) == []


def test_a_bare_run_of_digits_without_a_trunk_zero_is_a_phone_only_with_a_cue() -> None:
    assert _found("see 4155550132") == []
    assert _found("my number is 4155550132") == [("phone", "4155550132")]
    assert _found("mi móvil: 612345678") == [("phone", "612345678")]
    assert _found("see 07911123456") == [("phone", "07911123456")]
    assert _found("tel:+4915112345678") == [("phone", "+4915112345678")]


def test_a_country_code_without_a_plus_counts_with_a_cue() -> None:
    assert _found("whatsapp 919876543210") == [("phone", "919876543210")]
    assert _found("see 919876543210") == []


def test_a_typed_iban_in_lower_case_is_checked_like_a_printed_one() -> None:
    assert _found("IBAN: de89370400440532013000") == [("iban", "de89370400440532013000")]
    assert _found("iban de89 3704 0044 0532 0130 01") == []


def test_a_number_only_possible_in_its_plan_needs_a_cue_or_an_international_form() -> None:
    # 0148 1100457 fits the UK plan's length but no assigned range.
    assert _found("see 0148 1100457") == []
    assert _found("phone 0148 1100457") == [("phone", "0148 1100457")]
    assert _found("Telefon: 0148 1100457") == [("phone", "0148 1100457")]
    assert _found("see +44 148 1100457") == [("phone", "+44 148 1100457")]
    assert pii.find("phone 0148 1100457")[0].score < pii.find("phone 07911 123456")[0].score == 1.0


def test_nine_bare_digits_are_an_ssn_only_with_a_cue() -> None:
    assert _found("ssn 123456789") == [("ssn", "123456789")]
    assert _found("my social security number is 536904399") == [("ssn", "536904399")]
    assert _found("ticket 123456789") == []
    # An unseparated SSN rejected with its cue is not then a phone either.
    assert _found("ssn 912345678") == []


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1111",  # Visa 16
        "4222 222 222 222",  # Visa 13
        "5425-2334-3010-9903",  # Mastercard 51-55
        "2223 0031 2200 3222",  # Mastercard 2-series
        "3714 496353 98431",  # Amex
        "6011 0009 9013 9424",  # Discover
        "3530111333300000",  # JCB
        "6250941006528599",  # UnionPay
        "3056 930902 5904",  # Diners
    ],
)
def test_each_card_brand_is_found(number: str) -> None:
    assert _found(f"card {number} please") == [("creditCard", number)]


@pytest.mark.parametrize(
    "text",
    [
        "device 1234 5678 9012 3452",  # Luhn-valid, no brand prefix
        "amex 3714 4963 5398 4310",  # Amex prefix, 16 digits
        "IMEI 490154203237518",  # 15 digits, Luhn-valid: an IMEI, neither card nor phone
        "my imei is 356938035643809",
        "card 5500 0000 0000 0005",  # Mastercard prefix, Luhn-invalid
    ],
)
def test_numbers_without_a_card_brand_and_length_are_no_cards_and_no_phones(text: str) -> None:
    assert _found(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "ssn 000-12-3456 or 666 12 3456",  # SSN-shaped and rejected: not read as phones
        "IP 300.200.100.50",  # dotted quad with octets out of range: not a phone
        "DE00 1234 5678 9012 3456 78 is a placeholder",  # invalid IBAN: no card, no phone inside
    ],
)
def test_a_candidate_rejected_by_its_reader_is_not_read_by_a_weaker_one(text: str) -> None:
    assert _found(text, pii.ENTITIES) == []


@pytest.mark.parametrize(
    "text",
    [
        "If you are in danger, call 911. You can also call or text 988, or text HOME to 741741.",
        "The Lifeline is at 1-800-273-8255 or +1 800 273 8255, or just dial 988.",
        "Samaritans: 116 123. Emergency: 999 or 112.",
        "TelefonSeelsorge 0800 111 0 111 oder 0800 111 0 222, auch +49 800 111 0 111.",
        "Llama al 024 o al 112. Appelez le 3114. Lifeline 13 11 14, emergencies 000. Kinder: 116 111.",
    ],
)
def test_helplines_are_never_redacted(text: str) -> None:
    assert pii.find(text, pii.ENTITIES) == []


def test_every_listed_helpline_is_recognised_as_one() -> None:
    for number, _region in pii.HELPLINES:
        assert pii.is_helpline(number), number
    assert not pii.is_helpline("07911 123456")


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("please add Maria Garcia to the booking", "Maria Garcia"),
        ("Invite Michael Patel and me", "Michael Patel"),
        ("ich schreibe im Auftrag von Katrin Neumann", "Katrin Neumann"),
        ("me llamo Lucía Fernández de la Vega", "Lucía Fernández de la Vega"),
        ("My name is Oluwaseun Adeyemi", "Oluwaseun Adeyemi"),  # neither name in the gazetteer
        ("Name: Jean-Pierre Dubois", "Jean-Pierre Dubois"),
        ("je m\u2019appelle Camille Lefèvre", "Camille Lefèvre"),  # typographic apostrophe
        ("ich heiße Jonas Becker", "Jonas Becker"),
        ("cancel my appointment with Dr. Okafor", "Okafor"),
        ("Sehr geehrte Frau Dr. Hoffmann, danke", "Hoffmann"),
        ("rendez-vous avec Mme Lefèvre jeudi", "Lefèvre"),
        ("Mr O'Neill called", "O'Neill"),
    ],
)
def test_person_names_by_gazetteer_title_or_cue(text: str, name: str) -> None:
    assert _found(text, ["personName"]) == [("personName", name)]


@pytest.mark.parametrize(
    "text",
    [
        "thanks Sarah, that fixed it!",  # a lone first name
        "my name is Sarah",  # a cue and a lone first name
        "Thanks Sarah. The meeting is Monday",
        "Anna Street is closed",
        "Tell Me About The French Revolution",
        "all lowercase: maria garcia called",
    ],
)
def test_lone_first_names_and_capitalised_words_are_not_names(text: str) -> None:
    assert _found(text, ["personName"]) == []


@pytest.mark.parametrize(
    "address",
    [
        "221B Baker Street, London NW1 6XE",
        "1600 Pennsylvania Avenue NW, Washington, DC 20500",
        "350 Fifth Avenue, Apt 12B, New York, NY 10118",
        "42 Elm St., Springfield, IL 62704",
        "Calle Mayor 12, 28013 Madrid",
        "C/ Alcalá 45, 3º izq, 28009 Madrid",
        "Hauptstraße 5, 10115 Berlin",
        "Berliner Straße 12a",
        "12 rue de la Paix, 75002 Paris",
        "5, avenue des Champs-Élysées",
        "1 Infinite Loop, Cupertino, CA 95014",
        "Am Markt 3, 50667 Köln",
    ],
)
def test_street_addresses_in_four_languages(address: str) -> None:
    assert _found(f"send it to {address} please", ["address"]) == [("address", address)]


def test_street_words_without_a_street_address_are_not_addresses() -> None:
    assert _found("I've played 5 Street Fighter games", ["address"]) == []
    assert _found("route 66 is long", ["address"]) == []
    assert _found("Am Dienstag 12 Leute, Im Notfall 112", ["address"]) == []


def test_a_full_stop_after_an_address_is_not_part_of_it_unless_it_abbreviates() -> None:
    assert _found("We met at 5 Place Vendôme.", ["address"]) == [("address", "5 Place Vendôme")]
    assert _found("at 42 Elm St.", ["address"]) == [("address", "42 Elm St.")]


def test_a_dotted_quad_named_a_version_is_no_ip_address() -> None:
    assert _found("the version is 10.4.22.1 on all hosts, server 10.4.22.1") == [("ipAddress", "10.4.22.1")]
    assert _found("firmware 2.0.1.7") == []


@pytest.mark.parametrize(
    ("text", "email"),
    [
        ("email me: jane.doe (at) example (dot) com", "jane.doe (at) example (dot) com"),
        ("john at gmail dot com, no spam", "john at gmail dot com"),
        ("write to k_schulz[at]proton.de", "k_schulz[at]proton.de"),
    ],
)
def test_spelled_out_emails(text: str, email: str) -> None:
    assert _found(text) == [("email", email)]


def test_look_at_a_website_is_no_email() -> None:
    assert _found("look at example.com and at the docs dot page") == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\ud800 lone surrogate 07911 123456",
        "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦ Arabic-Indic digits",
        "\uff11\uff12\uff13\uff14 \uff15\uff16\uff17\uff18 \uff19\uff10\uff11\uff12 fullwidth digits",
        "1 " * 5000,
        "a" * 20000 + "@",
        "(+" * 5000,
        "Maria " * 5000,
        "12 rue " * 3000,
    ],
)
def test_any_text_is_read_without_error(text: str) -> None:
    for match in pii.find(text, pii.ENTITIES):
        assert 0 <= match.start < match.end <= len(text)


@pytest.mark.parametrize("text", ["00000000", "call 00000000", "00 00 00 00", "0000 0000 0000", "tel 555 5555"])
def test_a_placeholder_digit_run_is_no_phone(text: str) -> None:
    # Found by hypothesis (random printable text): "00000000" parsed as +44 0, the "00" read as
    # the international prefix, and the library calls that a possible number.
    assert pii.find(text, pii.ENTITIES) == []
