"""The shadow comparison rules (cutover.serving.gateway.shadow): top1 and numeric for Open
Inference Protocol answers and for LLM chat, per spec.strategy.shadow.agreement and tolerance."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from cutover.serving.gateway.shadow import Comparison, Outcome, chat_words, compare_chat, compare_inference, word_f1
from cutover.serving.protocol import InferRequest, encode_response

TOP1, NUMERIC = Comparison("top1", 0.05), Comparison("numeric", 0.05)


def answer(**outputs: tuple[str, list[Any], list[int]]) -> bytes:
    """A JSON inference answer: name -> (datatype, flat data, shape)."""
    tensors = [{"name": n, "datatype": d, "shape": s, "data": v} for n, (d, v, s) in outputs.items()]
    return json.dumps({"model_name": "m", "outputs": tensors}).encode()


def compare(live: bytes, mirror: bytes, rule: Comparison) -> tuple[bool, float | None]:
    outcome = compare_inference(live, None, mirror, None, rule)
    return outcome.agree, outcome.divergence


def probabilities(*rows: list[float]) -> bytes:
    return answer(probabilities=("FP32", [v for r in rows for v in r], [len(rows), len(rows[0])]))


def test_top1_compares_each_rows_class_and_numeric_every_element_within_tolerance() -> None:
    live = probabilities([0.9, 0.1], [0.2, 0.8])
    near = probabilities([0.87, 0.13], [0.22, 0.78])
    far_same_class = probabilities([0.6, 0.4], [0.4, 0.6])
    flipped = probabilities([0.9, 0.1], [0.6, 0.4])
    assert compare(live, near, TOP1)[0] and compare(live, near, NUMERIC)[0]
    assert compare(live, far_same_class, TOP1)[0] and not compare(live, far_same_class, NUMERIC)[0]
    assert not compare(live, flipped, TOP1)[0] and not compare(live, flipped, NUMERIC)[0]
    assert compare(live, far_same_class, TOP1)[1] == pytest.approx(0.3, abs=1e-6)


def test_every_output_is_compared_not_only_the_first() -> None:
    live = answer(probabilities=("FP32", [0.9, 0.1], [1, 2]), label=("INT64", [0], [1]), score=("FP32", [0.5], [1, 1]))
    other_label = answer(
        probabilities=("FP32", [0.9, 0.1], [1, 2]), label=("INT64", [1], [1]), score=("FP32", [0.5], [1, 1])
    )
    other_score = answer(
        probabilities=("FP32", [0.9, 0.1], [1, 2]), label=("INT64", [0], [1]), score=("FP32", [0.7], [1, 1])
    )
    for rule in (TOP1, NUMERIC):
        assert compare(live, live, rule) == (True, 0.0)
        assert not compare(live, other_label, rule)[0], rule
        assert not compare(live, other_score, rule)[0], rule  # a one-column score agrees within tolerance only


def test_a_different_set_of_outputs_or_shape_disagrees_and_strings_must_be_equal() -> None:
    live = answer(text=("BYTES", ["cat"], [1]), probabilities=("FP32", [0.9, 0.1], [1, 2]))
    assert compare(live, answer(text=("BYTES", ["cat"], [1])), TOP1) == (False, None)
    assert not compare(live, answer(text=("BYTES", ["dog"], [1]), probabilities=("FP32", [0.9, 0.1], [1, 2])), TOP1)[0]
    assert not compare(probabilities([0.9, 0.1]), answer(probabilities=("FP32", [0.9, 0.1], [2])), NUMERIC)[0]


def test_missing_values_agree_only_with_missing_values() -> None:
    live = answer(score=("FP32", [None, 0.5], [2, 1]))
    assert compare(live, answer(score=("FP32", [None, 0.5], [2, 1])), NUMERIC) == (True, 0.0)
    assert compare(live, answer(score=("FP32", [0.5, 0.5], [2, 1])), NUMERIC) == (False, None)
    assert not compare(probabilities([math.nan, 0.5]), probabilities([0.9, 0.5]), TOP1)[0]


def test_binary_answers_are_compared_like_json_ones() -> None:
    outputs = {"probabilities": np.array([[0.9, 0.1]], dtype=np.float32)}
    request = InferRequest(inputs={}, binary_output=True)
    body, length = encode_response("m", "1", request, outputs)
    assert length is not None
    shifted, shifted_length = encode_response("m", "2", request, {"probabilities": outputs["probabilities"] + 0.04})
    assert compare_inference(body, str(length), shifted, str(shifted_length), NUMERIC).agree
    assert not compare_inference(body, str(length), shifted, str(shifted_length), Comparison("numeric", 0.01)).agree


def chat(content: str | None) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


def test_chat_words_are_normalised() -> None:
    assert chat_words(chat("\uff39es!  The ANSWER,\nis 42.")) == ["yes", "the", "answer", "is", "42"]
    assert chat_words(chat(None)) == [] and chat_words(b'{"choices": []}') == []
    assert word_f1([], []) == 1.0 and word_f1(["a"], []) == 0.0
    assert word_f1(["a", "b", "c", "d"], ["a", "b", "x", "y"]) == pytest.approx(0.5)


def test_chat_top1_compares_the_answers_first_word_and_numeric_its_word_overlap() -> None:
    live = chat("Yes. The charge matches the card holder's usual pattern.")
    sampled = chat("yes, the charge matches the cardholder's usual spending pattern")
    contrary = chat("No. The charge does not match the usual pattern.")
    assert compare_chat(live, sampled, Comparison("top1")).agree
    assert not compare_chat(live, contrary, Comparison("top1")).agree
    loose = Comparison("numeric", 0.5)
    assert compare_chat(live, sampled, loose).agree
    outcome = compare_chat(live, chat("I cannot help with that request."), loose)
    assert not outcome.agree and outcome.divergence == 1.0
    assert compare_chat(chat(""), chat(""), Comparison("top1")).agree
    assert not compare_chat(chat(""), chat("Yes"), Comparison("top1")).agree


def test_comparison_reads_the_shadow_spec_with_the_apis_defaults() -> None:
    assert Comparison.of(None) == Comparison("top1", 1e-3)
    assert Comparison.of({"agreement": "numeric", "tolerance": 0.5}) == Comparison("numeric", 0.5)
    assert Comparison.of({"agreement": "numeric", "tolerance": 2}) == Comparison("numeric", 2.0)
    # What the API server would refuse falls back to the defaults instead of breaking the route.
    assert Comparison.of({"agreement": "exact", "tolerance": -1}) == Comparison("top1", 1e-3)
    assert Comparison.of({"tolerance": "wide"}) == Comparison("top1", 1e-3)


def message(**fields: Any) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", **fields}}]}).encode()


def streamed(*deltas: dict[str, Any]) -> bytes:
    """A streamed completion as an OpenAI-compatible server sends it (server-sent events)."""
    chunks = [{"choices": [{"index": 0, "delta": delta}]} for delta in deltas]
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"


def test_answers_that_cannot_be_compared_are_not_counted_never_agreeing() -> None:
    """Two answers without outputs once agreed; an unreadable live answer once disagreed. Neither
    says anything about the candidate: not counted (None). A mirrored answer that cannot be read,
    or has no output, where the live one has, disagrees."""
    top1 = Comparison("top1")
    for unreadable in (b"", b"not json", b"[" * 100_000, b'{"choices": {"0": 1}}', b"data: {]\n\n"):
        assert compare_chat(unreadable, chat("Yes"), top1) is None, unreadable[:20]
        assert compare_chat(chat("Yes"), unreadable, top1) == Outcome(False), unreadable[:20]
        assert compare_inference(unreadable, None, probabilities([0.9, 0.1]), None, top1) is None
        assert compare_inference(probabilities([0.9, 0.1]), None, unreadable, None, top1) == Outcome(False)
    for silent in (chat(None), message(), b'{"choices": []}'):
        assert compare_chat(silent, silent, top1) is None and compare_chat(silent, chat("Yes"), top1) is None
        assert compare_chat(chat("Yes"), silent, top1) == Outcome(False)
    no_outputs = json.dumps({"model_name": "m", "outputs": []}).encode()
    assert compare_inference(no_outputs, None, no_outputs, None, top1) is None
    assert compare_inference(chat("Yes"), None, chat("No"), None, top1) is None  # chat read as inference


def test_streamed_chat_is_compared_by_the_message_its_chunks_assemble() -> None:
    live = streamed({"role": "assistant"}, {"content": "Yes, "}, {"content": "it is fraud."}, {})
    assert chat_words(live) == ["yes", "it", "is", "fraud"]
    assert compare_chat(live, chat("yes - it is fraud"), Comparison("numeric", 0.01)) == Outcome(True, 0.0)
    assert compare_chat(live, streamed({"content": "No."}), Comparison("top1")) == Outcome(False, 1.0)
    assert compare_chat(chat("Yes"), live, Comparison("top1")) == Outcome(True, 0.6)


def test_content_parts_are_compared_by_their_text_and_tool_calls_by_the_functions_called() -> None:
    parts = [
        {"type": "text", "text": "Yes,"},
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "fraud"},
    ]
    assert chat_words(message(content=parts)) == ["yes", "fraud"]
    no = [{"type": "text", "text": "No"}]
    assert compare_chat(message(content=parts), message(content=no), Comparison("top1")) == Outcome(False, 1.0)

    def calls(*names: str) -> bytes:
        return message(
            content=None, tool_calls=[{"type": "function", "function": {"name": n, "arguments": "{}"}} for n in names]
        )

    for rule in (Comparison("top1"), Comparison("numeric", 0.5)):
        assert compare_chat(calls("block_card"), calls("block_card"), rule) == Outcome(True)
        assert compare_chat(calls("block_card"), calls("refund"), rule) == Outcome(False)
        assert compare_chat(calls("block_card"), chat("block card"), rule) == Outcome(False)
        assert compare_chat(calls("a", "b"), calls("a"), rule) == Outcome(False)
    chunks = streamed(
        {"tool_calls": [{"index": 0, "function": {"name": "block_", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"name": "card", "arguments": "{}"}}]},
    )
    assert compare_chat(chunks, calls("block_card"), Comparison("top1")) == Outcome(True)
