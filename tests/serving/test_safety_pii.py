"""The SafetyPolicy PII filter: the API spec's entities found in raw text, one finding per entity
with every span, helplines left alone, never an error; and the corpus it is scored on."""

from __future__ import annotations

import itertools
import json
import re
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cutover.api.v1alpha1.safetypolicy import PiiEntity, PiiFilter
from cutover.serving import pii
from cutover.serving.safety.base import Finding
from cutover.serving.safety.learned import read_corpus
from cutover.serving.safety.pii import detector

CORPUS = Path(pii.__file__).parent / "safety" / "corpus" / "pii"
EVERY_ENTITY = list(typing.get_args(PiiEntity))


def _redacted(text: str, findings: list[Finding]) -> str:
    spans = sorted((start, end, f.category) for f in findings for start, end in f.spans)
    out, position = [], 0
    for start, end, entity in spans:
        out += [text[position:start], f"[REDACTED:{entity}]"]
        position = end
    return "".join(out) + text[position:]


def test_one_finding_per_entity_with_every_span_into_the_raw_text() -> None:
    text = "Mail a@b.io or c@d.org, call 07911 123456; card 4111 1111 1111 1111."
    findings = detector(PiiFilter()).scan(text, "input")
    assert [(f.filter, f.category) for f in findings] == [("pii", "email"), ("pii", "phone"), ("pii", "creditCard")]
    email, phone, card = findings
    assert [text[s:e] for s, e in email.spans] == ["a@b.io", "c@d.org"]
    assert [text[s:e] for s, e in phone.spans] == ["07911 123456"]
    assert [text[s:e] for s, e in card.spans] == ["4111 1111 1111 1111"]
    assert email.score == phone.score == card.score == 1.0
    assert _redacted(text, findings) == (
        "Mail [REDACTED:email] or [REDACTED:email], call [REDACTED:phone]; card [REDACTED:creditCard]."
    )


def test_the_api_default_leaves_names_addresses_and_ibans_to_be_asked_for() -> None:
    text = "Maria Garcia, 12 Elm Street, IBAN GB82 WEST 1234 5698 7654 32, ip 10.0.0.1"
    assert [f.category for f in detector(PiiFilter()).scan(text, "input")] == ["ipAddress"]
    every = detector(PiiFilter(entities=EVERY_ENTITY)).scan(text, "input")
    assert [f.category for f in every] == ["personName", "address", "iban", "ipAddress"]
    assert {f.category: f.score for f in every if f.category in ("personName", "address")} == {
        "personName": pii.SCORES["nameByGazetteer"],
        "address": pii.SCORES["address"],
    }


def test_only_the_spec_entities_are_reported() -> None:
    text = "a@b.io 07911 123456"
    assert [f.category for f in detector(PiiFilter(entities=["phone"])).scan(text, "output")] == ["phone"]


def test_a_disabled_filter_finds_nothing() -> None:
    assert detector(PiiFilter(enabled=False)).scan("a@b.io", "input") == []


@pytest.mark.parametrize("direction", ["input", "output"])
def test_helplines_are_no_findings_in_either_direction(direction: typing.Literal["input", "output"]) -> None:
    reply = (
        "You are not alone. In the US call or text 988 (or 1-800-273-8255), text HOME to 741741; "
        "UK Samaritans 116 123; TelefonSeelsorge 0800 111 0 111; España 024; France 3114."
    )
    assert detector(PiiFilter(entities=EVERY_ENTITY)).scan(reply, direction) == []


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=400))
def test_scan_never_raises_and_spans_stay_in_the_text(text: str) -> None:
    findings = detector(PiiFilter(entities=EVERY_ENTITY)).scan(text, "input")
    spans = sorted(span for f in findings for span in f.spans)
    assert all(0 <= start < end <= len(text) for start, end in spans)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert all(f.filter == "pii" and f.category in EVERY_ENTITY and 0 < f.score <= 1 for f in findings)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["call", "ssn", "IBAN", "card", "+", "(", ")", "-", " ", ".", "/", "Dr.", "Maria", "rue"]),
            st.from_regex(r"[0-9]{1,6}", fullmatch=True),
            st.from_regex(r"[A-Z]{2}[0-9]{2}", fullmatch=True),
        ),
        max_size=40,
    )
)
def test_digit_soup_never_raises(parts: list[str]) -> None:
    text = " ".join(parts)
    for finding in detector(PiiFilter(entities=EVERY_ENTITY)).scan(text, "output"):
        assert all(0 <= start < end <= len(text) for start, end in finding.spans)


# The corpus ---------------------------------------------------------------------------------------


def _lines(split: str) -> list[dict[str, typing.Any]]:
    return [json.loads(line) for line in (CORPUS / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_the_corpus_is_large_enough_disjoint_and_well_formed() -> None:
    train, test = _lines("train"), _lines("test")
    assert len(train) >= 600 and len(test) >= 300
    assert not {line["text"] for line in train} & {line["text"] for line in test}
    for line in train + test:
        assert set(line["labels"]) <= set(EVERY_ENTITY), line
        assert all(value in line["text"] for value in line["values"]), line
        assert bool(line["labels"]) == bool(line["values"]), line
        assert line["lang"] in ("en", "es", "de", "fr") and line["direction"] in ("input", "output")
    # learned.read_corpus reads it too (the benchmark does).
    assert len(read_corpus("pii", "test")) == len(test)
    for split in (train, test):
        notes = {line["note"] for line in split if not line["labels"]}
        for kind in ("Luhn-invalid card", "invalid IBAN", "invalid SSN", "IMEI", "helpline", "date", "price"):
            assert any(kind in note for note in notes), (kind, notes)


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def test_structured_recall_on_the_held_out_split_and_no_luhn_invalid_card_redacted() -> None:
    scan = detector(PiiFilter(entities=EVERY_ENTITY)).scan
    found = missed = 0
    for line in _lines("test"):
        text = line["text"]
        findings = scan(text, line["direction"])
        for finding in findings:
            if finding.category == "creditCard":
                assert all(_luhn(re.sub(r"\D", "", text[s:e])) for s, e in finding.spans), text
            if not line["labels"] and "helpline" in line["note"]:
                raise AssertionError(f"a helpline redacted: {text}")
        spans = {f.category: f.spans for f in findings}
        for entity in set(line["labels"]) & pii.STRUCTURED:
            covered = any(
                any(s <= text.find(value) and text.find(value) + len(value) <= e for s, e in spans.get(entity, ()))
                for value in line["values"]
            )
            found, missed = found + covered, missed + (not covered)
    assert found / (found + missed) >= 0.98, (found, missed)
