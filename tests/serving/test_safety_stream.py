"""A SafetyPolicy on a streamed chat answer, in process with fake detectors: text released a
sentence at a time, redacted in place, disclaimed once at the end, the pieces counted as one
screening (one violation per filter and request), escalation and a failing filter mid-stream,
and the one audit record written when the stream ends."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cutover.serving.errors import SafetyUnavailable
from cutover.serving.pipeline import ChatStream

from .test_pipeline import json_body
from .test_safety_pipeline import Setup, Upstream
from .test_safety_policy import WEBHOOK

POLICY: dict[str, Any] = {
    "crisis": {"escalationWebhook": WEBHOOK, "responseMessage": "You are not alone. Call 988.", "scope": "outputs"},
    "toxicity": {"action": "flag", "scope": "outputs"},
    "pii": {"entities": ["email"], "scope": "outputs"},
    "advice": {"action": "disclaim", "domains": ["medical"], "scope": "outputs", "disclaimer": "Ask a doctor."},
    "blockMessage": "Not under this policy.",
}


class Streamer(Upstream):
    """An llm model whose upstream streams ``reply`` a word per chunk, each with its logprobs."""

    async def chat_stream(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        self.asked.append(dict(request))
        head = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "classifier"}
        yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        assert self.reply is not None
        for i, word in enumerate(self.reply.split(" ")):
            delta = {"content": word if i == 0 else f" {word}"}
            logprobs = {"content": [{"token": word, "logprob": -0.1}]}
            yield {**head, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}]}
        yield {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


async def streamed(setup: Setup, request_id: str = "req-1") -> tuple[list[dict[str, Any]], ChatStream]:
    body = {"messages": [{"role": "user", "content": "hello"}], "stream": True}
    stream = await setup.pipeline.chat(json_body(body), request_id)
    assert isinstance(stream, ChatStream)
    chunks: list[dict[str, Any]] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
    finally:
        await stream.aclose()
    return chunks, stream


def contents(chunks: list[dict[str, Any]]) -> list[str]:
    return [
        c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")
    ]


async def test_a_stream_is_released_a_sentence_at_a_time_redacted_disclaimed_once_and_counted_once(
    tmp_path: Path,
) -> None:
    reply = "You silly idiot. Mail a@b.io now. You idiot again. Take 800 mg daily."
    setup = Setup(tmp_path, Streamer(reply), **POLICY)

    chunks, stream = await streamed(setup)

    assert contents(chunks) == [
        "You silly idiot. ",
        "Mail [REDACTED:email] now. ",
        "You idiot again. ",
        "Take 800 mg daily.\n\nAsk a doctor.",
    ]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert all(c["choices"][0]["logprobs"] is None for c in chunks if c["choices"])  # they spell held-back tokens
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and stream.status == 200
    # Two sentences with toxicity, one request: one violation, one check, as for a whole answer.
    assert setup.violations("toxicity", "toxicity", "flag", "output") == 1
    assert setup.sample("cutover_safety_checks_total", filter="toxicity", scope="output") == 1
    (record,) = setup.records()
    assert record["outputs"] == {"content": "".join(contents(chunks))} and record["status"] == 200
    assert sorted((f["filter"], f["category"]) for f in record["safety"]) == [
        ("advice", "medical"),
        ("pii", "email"),
        ("toxicity", "toxicity"),
    ]


async def test_an_escalation_mid_stream_notifies_once_and_ends_with_the_crisis_message(tmp_path: Path) -> None:
    setup = Setup(tmp_path, Streamer("Hello there. I want to die. Nothing more."), **POLICY)

    chunks, stream = await streamed(setup, "req-crisis")

    assert contents(chunks) == ["Hello there. ", "You are not alone. Call 988."]
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter" and stream.status == 200
    (notifier,) = setup.notifiers
    assert [(event.request_id, event.scope) for event in notifier.events] == [("req-crisis", "output")]
    assert setup.violations("crisis", "suicidalIdeation", "escalate", "output") == 1
    (record,) = setup.records()
    assert record["outputs"] == {"content": "Hello there. You are not alone. Call 988."}


async def test_a_filter_failing_mid_stream_under_fail_closed_ends_it_with_an_error(tmp_path: Path) -> None:
    setup = Setup(tmp_path, Streamer("All fine here. Then BOOM goes the filter."), **POLICY, failClosed=True)
    body = {"messages": [{"role": "user", "content": "hello"}], "stream": True}
    stream = await setup.pipeline.chat(json_body(body), "req-1")
    assert isinstance(stream, ChatStream)
    received: list[dict[str, Any]] = []

    with pytest.raises(SafetyUnavailable, match="failClosed"):
        async for chunk in stream:
            received.append(chunk)
    await stream.aclose()

    assert contents(received) == ["All fine here. "] and stream.status == 503
    assert setup.pipeline.admission.in_flight == 0
    (record,) = setup.records()
    assert record["status"] == 503


async def test_an_escalated_streamed_request_is_answered_with_the_crisis_message_as_a_stream(tmp_path: Path) -> None:
    upstream = Streamer("never asked")
    setup = Setup(tmp_path, upstream)  # every filter, crisis on the request too
    body = {"messages": [{"role": "user", "content": "I want to die"}], "stream": True}
    stream = await setup.pipeline.chat(json_body(body), "req-1")
    assert isinstance(stream, ChatStream)
    chunks = [chunk async for chunk in stream]
    await stream.aclose()

    assert upstream.asked == [] and contents(chunks) == ["You are not alone. Call 988."]
    assert chunks[0]["object"] == "chat.completion.chunk" and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert setup.sample("cutover_predictions_total") == 0
