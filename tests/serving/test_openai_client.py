"""The ``openai`` Python client as LLM application developers call cutover: chat completions whole
and streamed (server-sent events) against a real `cutover serve` in front of an OpenAI-compatible
upstream, and through the gateway; a SafetyPolicy on a stream (redacted in place, stopped
mid-stream with its blockMessage); the upstream's faults (429, refused credentials, a timeout, a
stream that breaks off) as the client sees them; and readiness that asks the upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from cutover.serving.adapters.llm import LLMAdapter
from cutover.serving.errors import InvalidInput, Overloaded, ServingError, TooManyRequests, UpstreamError
from tests.support.waiting import wait_until

from .support import Serving, key_secret, openai_error, threaded_gateway
from .test_adapters import ChatUpstream, chat_upstream
from .test_safety_policy import document

__all__ = ["chat_upstream"]  # the fixture, used by name

MODEL = "assistant"
GUARDED = "guarded"
API_KEY = "cut_app-key"


def said(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def llm(workdir: Path, upstream: str, name: str, *args: str) -> Serving:
    audit = workdir / f"{name}-audit.jsonl"
    return Serving(
        workdir, "--format", "llm", "--upstream", upstream, "--upstream-model", "tiny-llm", "--audit-log", str(audit),
        *args, name=name,
    )  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, chat_upstream: str) -> Iterator[Serving]:
    serving = llm(tmp_path_factory.mktemp("openai"), chat_upstream, MODEL, "--upstream-timeout", "2").start()
    yield serving
    serving.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, chat_upstream: str) -> Iterator[Serving]:
    """An llm revision whose SafetyPolicy (the real filters) redacts emails from answers and
    blocks toxic answers; neither reads the request, so the upstream is told what to say."""
    workdir = tmp_path_factory.mktemp("guarded")
    spec = {
        "pii": {"entities": ["email"], "scope": "outputs"},
        "toxicity": {"action": "block", "scope": "outputs"},
        "blockMessage": "Not under this policy.",
    }
    policy = workdir / "policy.json"
    policy.write_text(json.dumps(document(**spec)))
    serving = llm(workdir, chat_upstream, GUARDED, "--safety-policy", str(policy)).start()
    yield serving
    serving.stop()


@pytest.fixture(scope="module")
def gateways(served: Serving, guarded: Serving) -> Iterator[dict[str, str]]:
    """A gateway in front of each revision, taking the openai client's API key as its own (both
    send ``Authorization: Bearer``); faults must not open its circuit for the tests after."""
    with (
        threaded_gateway(MODEL, served.url, auth=True, breaker_failures=1000) as (plain, first),
        threaded_gateway(GUARDED, guarded.url, auth=True, breaker_failures=1000) as (safe, second),
    ):
        for gateway in (first, second):
            gateway.keys.replace([key_secret("app", API_KEY, "pro")])
        yield {MODEL: plain, GUARDED: safe}


@pytest.fixture(params=["serve", "gateway"])
def via(request: pytest.FixtureRequest, served: Serving, guarded: Serving, gateways: dict[str, str]) -> str:
    return str(request.param)


def client(via: str, serving: Serving, gateways: dict[str, str]) -> openai.OpenAI:
    base = serving.url if via == "serve" else gateways[serving.name]
    return openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0, timeout=20)


def text_of(chunks: list[Any]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def test_whole_and_streamed_answers_reach_the_client_event_by_event(
    via: str, served: Serving, gateways: dict[str, str]
) -> None:
    chat = client(via, served, gateways).chat.completions
    audit = Path(served.args[served.args.index("--audit-log") + 1])
    audited = len(audit.read_text().splitlines()) if audit.exists() else 0

    whole = chat.create(model=MODEL, messages=said("hello"))
    chunks = list(chat.create(model=MODEL, messages=said("hello"), stream=True, stream_options={"include_usage": True}))

    assert whole.choices[0].message.content == ChatUpstream.reply and whole.model == MODEL
    assert text_of(chunks) == ChatUpstream.reply
    words = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert len(words) == len(ChatUpstream.reply.split(" "))  # as the upstream sent them, not gathered
    assert chunks[0].choices[0].delta.role == "assistant" and {chunk.model for chunk in chunks} == {MODEL}
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8
    forwarded = ChatUpstream.seen[-1]["body"]
    assert forwarded["stream"] is True and forwarded["stream_options"] == {"include_usage": True}
    assert forwarded["model"] == "tiny-llm"
    records = wait_until(lambda: len(lines := audit.read_text().splitlines()) >= audited + 2 and lines, 10, "records")
    streamed = json.loads(records[-1])  # one record for the stream, written at its end with its content
    assert len(records) == audited + 2 and streamed["status"] == 200
    assert streamed["outputs"] == {"content": "Write to [REDACTED:email] for help."}  # the audit log's own redaction


def test_each_event_is_sent_on_as_it_comes(via: str, served: Serving, gateways: dict[str, str]) -> None:
    """The upstream holds the rest of its answer until the client has the first word: a server or
    gateway that gathered the stream before sending it would never give the client that word."""
    ChatUpstream.release.clear()
    stream = client(via, served, gateways).chat.completions.create(
        model=MODEL, messages=said("[hold] say: one two three"), stream=True
    )
    chunks = iter(stream)
    first = next(chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content)
    ChatUpstream.release.set()

    assert first.choices[0].delta.content == "one"
    assert text_of(list(chunks)) == " two three"


def test_a_client_that_leaves_mid_stream_is_counted_as_499(served: Serving, gateways: dict[str, str]) -> None:
    """The client left, not the revision: no failure is counted against it (499, nginx's code).
    (Through the gateway, the revision sees it leave when the gateway next writes to the client
    and finds it gone, which closes the gateway's connection to the revision.)"""
    before = served.metric("cutover_serving_requests_total", code="499")
    ChatUpstream.release.clear()
    stream = client("serve", served, gateways).chat.completions.create(
        model=MODEL, messages=said("[hold] say: one two three"), stream=True
    )
    next(chunk for chunk in stream if chunk.choices and chunk.choices[0].delta.content)
    stream.close()
    ChatUpstream.release.set()  # the next event finds the client gone

    wait_until(lambda: served.metric("cutover_serving_requests_total", code="499") == before + 1, 10, "a 499")


def test_a_client_that_leaves_while_the_upstream_is_silent_frees_its_slot_at_once(
    via: str, served: Serving, gateways: dict[str, str]
) -> None:
    """The upstream holds the stream (a long generation) and the client leaves: the request ends
    then, not when the upstream speaks again or times out. It held its admission slot meanwhile,
    so a few clients that gave up could shed everyone else's requests as 503s. Through the
    gateway, its call to the revision is closed as the client leaves."""
    before = served.metric("cutover_serving_requests_total", code="499")
    ChatUpstream.release.clear()
    try:
        stream = client(via, served, gateways).chat.completions.create(
            model=MODEL, messages=said("[hold] say: one two three"), stream=True
        )
        next(chunk for chunk in stream if chunk.choices and chunk.choices[0].delta.content)
        stream.close()

        wait_until(lambda: served.metric("cutover_serving_requests_total", code="499") == before + 1, 10, "a 499")
        assert served.metric("cutover_serving_in_flight") == 0
    finally:
        ChatUpstream.release.set()


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_faults_reach_the_client_with_a_faithful_status_and_reason(
    via: str, stream: bool, served: Serving, gateways: dict[str, str]
) -> None:
    """Once a 400 for all of them (429 and refused credentials blamed on the caller), and a
    timeout with an empty reason; the openai client showed only "Error code: 400"."""
    chat = client(via, served, gateways).chat.completions

    def refused(text: str, error: type[openai.APIStatusError], **extra: Any) -> openai.APIStatusError:
        with pytest.raises(error) as caught:
            chat.create(model=MODEL, messages=said(text), stream=stream, **extra)
        return caught.value

    limited = refused("[429]", openai.RateLimitError)
    assert limited.response.headers["Retry-After"] == "7" and "Rate limit reached" in limited.message
    credentials = refused("[401]", openai.InternalServerError)
    assert credentials.status_code == 502 and "refused cutover's credentials (401)" in credentials.message
    assert "Incorrect API key provided" in credentials.message
    slow = refused("[slow]", openai.InternalServerError)
    assert slow.status_code == 502 and "timed out after 2 s (SocketTimeoutError" in slow.message
    invalid = refused("hi", openai.BadRequestError, max_tokens=-1)
    assert "max_tokens must be positive" in invalid.message and invalid.type == "invalid_request_error"
    unknown = refused("hi", openai.NotFoundError, extra_body={"model": "gpt-9"})
    assert "unknown model 'gpt-9'" in unknown.message


def test_a_stream_that_breaks_off_ends_with_an_error_event_and_counts_as_a_failure(
    via: str, served: Serving, gateways: dict[str, str]
) -> None:
    """The status was sent with the first byte; the client hears the failure as an error event,
    and the revision counts the request as the 502 it would have answered."""
    chat = client(via, served, gateways).chat.completions
    before = served.metric("cutover_serving_requests_total", code="502")
    for fault, reason in (("[broken]", "failed mid-stream: CUDA out of memory"), ("[cut]", "without data: [DONE]")):
        received: list[Any] = []
        with pytest.raises(openai.APIError) as broke:
            received.extend(chat.create(model=MODEL, messages=said(f"{fault} say: one two"), stream=True))
        assert reason in broke.value.message
    assert served.metric("cutover_serving_requests_total", code="502") == before + 2


def test_a_safety_policy_redacts_a_stream_in_place_and_stops_it_with_its_block_message(
    via: str, guarded: Serving, gateways: dict[str, str]
) -> None:
    chat = client(via, guarded, gateways).chat.completions
    blocked_before = guarded.metric("cutover_safety_violations_total", filter="toxicity")

    redacted = list(
        chat.create(model=GUARDED, messages=said("say: Sure. Mail jane.doe@example.com today."), stream=True)
    )
    stopped = list(
        chat.create(
            model=GUARDED,
            messages=said("say: Happy to help. You are a worthless idiot and everyone knows it. Bye."),
            stream=True,
        )
    )

    assert text_of(redacted) == "Sure. Mail [REDACTED:email] today."
    assert text_of(stopped) == "Happy to help. Not under this policy."
    assert stopped[-1].choices[0].finish_reason == "content_filter"
    assert guarded.metric("cutover_safety_violations_total", filter="toxicity") == blocked_before + 1


@pytest.mark.parametrize(
    ("fault", "error", "status", "retry_after", "reason"),
    [
        ("[429]", TooManyRequests, 429, 7, "is rate-limiting (429): Rate limit reached"),
        ("[503]", Overloaded, 503, 7, "is unavailable or overloaded (503)"),
        ("[401]", UpstreamError, 502, None, "refused cutover's credentials (401): Incorrect API key"),
        ("[403]", UpstreamError, 502, None, "refused cutover's credentials (403)"),
        ("[404]", UpstreamError, 502, None, "failed (404)"),
        ("[413]", InvalidInput, 400, None, "refused the request (413)"),
        ("[422]", InvalidInput, 400, None, "refused the request (422)"),
        ("[500]", UpstreamError, 502, None, "failed (500)"),
        ("[504]", UpstreamError, 502, None, "failed (504)"),
        ("[garbage]", UpstreamError, 502, None, "answered malformed JSON|did not stream"),
        ("[slow]", UpstreamError, 502, None, "timed out after 0.5 s (SocketTimeoutError"),
    ],
)
async def test_every_upstream_failure_keeps_its_meaning_whole_or_streamed(
    chat_upstream: str, fault: str, error: type[ServingError], status: int, retry_after: int | None, reason: str
) -> None:
    """The kind: every status class an upstream answers, and what is not an answer (malformed,
    too slow), each a named error with a faithful status, the upstream's Retry-After, and a reason."""
    adapter = LLMAdapter(chat_upstream, "tiny-llm", timeout=0.5)
    request = {"messages": said(fault)}
    try:
        for call in (adapter.chat(request), anext(adapter.chat_stream(request))):
            with pytest.raises(error) as caught:
                await call
            assert caught.value.status == status and caught.value.retry_after == retry_after
            assert any(part in str(caught.value) for part in reason.split("|")), caught.value
    finally:
        await adapter.close()


async def test_the_upstream_is_ready_only_when_it_lists_its_models(chat_upstream: str) -> None:
    """Any answer below 500 once made a revision Ready: a wrong path (404) or a refused key (401)
    left a Ready revision whose every chat failed."""
    adapters = {
        "right": LLMAdapter(chat_upstream, "tiny-llm"),
        "wrong path": LLMAdapter(f"{chat_upstream}/openai", "tiny-llm"),
        "revoked key": LLMAdapter(chat_upstream, "tiny-llm", api_key="sk-revoked"),
        "nothing there": LLMAdapter("http://127.0.0.1:9", "tiny-llm"),
    }
    try:
        ready = {name: await adapter.ready() for name, adapter in adapters.items()}
        reasons = {name: adapter.not_ready_reason for name, adapter in adapters.items()}
    finally:
        for adapter in adapters.values():
            await adapter.close()

    assert ready == {"right": True, "wrong path": False, "revoked key": False, "nothing there": False}
    assert reasons["right"] is None
    assert f"no {chat_upstream}/openai/v1/models (404)" in str(reasons["wrong path"])
    assert "refused cutover's credentials (401" in str(reasons["revoked key"])
    assert "cannot connect to the upstream http://127.0.0.1:9/v1 (ClientConnectorError" in str(reasons["nothing there"])


def test_a_revision_that_breaks_off_a_stream_is_an_error_event_at_the_gateway(chat_upstream: str) -> None:
    """A revision whose connection drops mid-stream (here: an answer that ends with the
    connection, before [DONE]): the gateway has sent the status and the first events already, so
    it ends the stream with an error event naming the revision, and never retries it."""
    with threaded_gateway(MODEL, chat_upstream, breaker_failures=1000) as (url, gateway):
        chat = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=20).chat.completions
        received: list[Any] = []
        with pytest.raises(openai.APIError) as broke:
            received.extend(chat.create(model=MODEL, messages=said("[cut] say: one two"), stream=True))
        retried = gateway.metrics.registry.get_sample_value("cutover_gateway_retries_total", {"reason": "disconnect"})
        wait_until(lambda: gateway.in_flight == 0, 10, "the stream to be no longer in flight at the gateway")

    assert text_of(received) == "one"
    assert "revision a" in broke.value.message and "mid-stream" in broke.value.message
    assert not retried


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("value", "reason"),
    [('"x \\ud800 y"', "not Unicode"), ("NaN", "NaN or infinite"), ("-Infinity", "NaN or infinite")],
)
def test_json_the_upstream_cannot_be_sent_is_refused_as_the_clients(
    served: Serving, stream: bool, value: str, reason: str
) -> None:
    """JSON as Python reads it may hold a lone surrogate (an escaped ``"\\ud800"``), NaN or
    Infinity, which no JSON body to the upstream can carry: each was a 502 ("upstream failed"),
    counted against the revision, for the client's own request."""
    seen = len(ChatUpstream.seen)
    message = f'{{"role": "user", "content": "hi", "name": {value}}}'
    body = f'{{"model": "{MODEL}", "messages": [{message}], "stream": {str(stream).lower()}}}'
    status, answer = served.post("/v1/chat/completions", body.encode())
    assert status == 400, answer
    assert reason in openai_error(answer)
    assert len(ChatUpstream.seen) == seen
