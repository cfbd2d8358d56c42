"""A SafetyPolicy on the request path, in process: what the client gets (refusals with their
status, crisis answers, redacted and disclaimed texts), what the model or upstream sees, what is
counted and audited, what the escalation webhook is told, and bad input (empty and 10 MB texts,
invalid UTF-8, deep nesting, numeric tensors, failing filters with and without failClosed).
Fake detectors (``safety_fakes``) read plain marker phrases."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from cutover.serving.adapters.base import Adapter, TensorInfo
from cutover.serving.audit import AuditLog, input_digest
from cutover.serving.errors import CrisisEscalated, InvalidInput, SafetyBlocked, SafetyUnavailable
from cutover.serving.loading import LoadedModel
from cutover.serving.metrics import ServingMetrics
from cutover.serving.pipeline import Admission, Pipeline
from cutover.serving.safety.escalation import Escalation, Outcome
from cutover.serving.safety.guard import Guard
from cutover.serving.safety.policy import compile_policy

from .safety_fakes import fake_builders
from .test_pipeline import LABELS, body, config, json_body
from .test_safety_policy import EVERY_FILTER, document


class Upstream(Adapter):
    """An llm model whose upstream answers ``reply`` (default: echoes the last message) and
    records every request it was asked."""

    platform: ClassVar[str] = "openai_chat"

    def __init__(self, reply: str | None = None) -> None:
        self.reply = reply
        self.asked: list[dict[str, Any]] = []

    async def load(self) -> None:
        pass

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    async def chat(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.asked.append(dict(request))
        content = self.reply if self.reply is not None else str(request["messages"][-1]["content"])
        return {
            "id": "chatcmpl-up",
            "model": "classifier",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": {"content": [{"token": word, "logprob": -0.5} for word in content.split()]},
                    "finish_reason": "stop",
                }
            ],
        }


class Texter(Adapter):
    """A text model: BYTES ``text`` and FP32 ``weight`` in; BYTES ``reply`` (``reply`` or an
    echo of each text) and FP32 ``score`` out. Records what it was given."""

    platform: ClassVar[str] = "test_text"
    inputs = (TensorInfo("text", "BYTES", (-1,)), TensorInfo("weight", "FP32", (-1,)))
    outputs = (TensorInfo("reply", "BYTES", (-1,)), TensorInfo("score", "FP32", (-1,)))

    def __init__(self, reply: bytes | None = None) -> None:
        self.reply = reply
        self.seen: list[list[bytes]] = []

    async def load(self) -> None:
        pass

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [bytes(t) for t in inputs["text"]]
        self.seen.append(texts)
        replies = np.empty(len(texts), dtype=object)
        replies[:] = [self.reply if self.reply is not None else b"you said: " + t for t in texts]
        return {"reply": replies, "score": inputs["weight"] * 2}


class Notifier:
    """Records escalations instead of POSTing them."""

    def __init__(self, url: str, timeout: float, from_secret: bool, count: Callable[[Outcome], None]) -> None:
        self.url, self.timeout, self.count = url, timeout, count
        self.events: list[Escalation] = []
        self.closed = False

    def notify(self, event: Escalation) -> bool:
        self.events.append(event)
        self.count("delivered")
        return True

    async def close(self, drain: float = 2.0) -> None:
        self.closed = True


class Setup:
    """A pipeline with a guard applying ``spec`` (fake detectors) and an audit log."""

    def __init__(self, tmp_path: Path, adapter: Adapter, apply: bool = True, **spec: Any) -> None:
        self.metrics = ServingMetrics("tests", "classifier", "rev-1", lambda: 0)
        self.notifiers: list[Notifier] = []

        def notifier(url: str, timeout: float, from_secret: bool, count: Callable[[Outcome], None]) -> Notifier:
            self.notifiers.append(Notifier(url, timeout, from_secret, count))
            return self.notifiers[-1]

        self.guard = Guard(self.metrics.safety, "tests", "classifier", "rev-1", notifiers=notifier)
        if apply:
            self.guard.apply(compile_policy(document(**(spec or EVERY_FILTER)), builders=fake_builders))
        self.audit_path = tmp_path / "audit.jsonl"
        self.audit = AuditLog(self.audit_path)
        model = LoadedModel(adapter, list(adapter.inputs), list(adapter.outputs), audit=self.audit)
        self.pipeline = Pipeline(config(), model, self.metrics, Admission(8), safety=self.guard)

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, {**LABELS, **labels})

    def violations(self, filter_: str, category: str, action: str, scope: str) -> float | None:
        labels = {"filter": filter_, "category": category, "action": action, "scope": scope}
        return self.sample("cutover_safety_violations_total", **labels)

    def records(self) -> list[dict[str, Any]]:
        self.audit.close()
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    async def chat(self, *messages: Any, request_id: str = "req-1") -> dict[str, Any]:
        listed = [m if isinstance(m, dict) else {"role": "user", "content": m} for m in messages]
        return await self.pipeline.chat(json_body({"messages": listed}), request_id)

    async def infer(self, *texts: bytes | str, request_id: str = "req-1") -> tuple[dict[str, Any], Any]:
        data = [t if isinstance(t, str) else t.decode("latin-1") for t in texts]
        sent = {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": data},
                {"name": "weight", "datatype": "FP32", "shape": [len(texts)], "data": [1.0] * len(texts)},
            ]
        }
        answer = await self.pipeline.infer(body(json.dumps(sent).encode()), None, request_id)
        return json.loads(answer.body), answer


# -- chat -----------------------------------------------------------------------------------------


async def test_a_blocked_chat_request_never_reaches_the_upstream_and_is_audited_and_counted(tmp_path: Path) -> None:
    upstream = Upstream()
    setup = Setup(tmp_path, upstream)

    with pytest.raises(SafetyBlocked) as refused:
        await setup.chat("hello", {"role": "assistant", "content": "hi"}, "you idiot")

    assert refused.value.status == 422 and str(refused.value) == "Not under this policy."
    assert upstream.asked == []
    assert setup.violations("toxicity", "toxicity", "block", "input") == 1
    assert setup.sample("cutover_safety_checks_total", filter="toxicity", scope="input") == 1
    assert setup.sample("cutover_safety_checks_total", filter="toxicity", scope="output") == 0
    assert setup.sample("cutover_predictions_total") == 0
    (record,) = setup.records()
    assert record["status"] == 422 and record["request_id"] == "req-1" and record["outputs"] is None
    assert record["safety"] == [
        {"filter": "toxicity", "category": "toxicity", "action": "block", "score": 0.95, "scope": "input"}
    ]


async def test_the_classifiers_read_only_the_last_user_message(tmp_path: Path) -> None:
    upstream = Upstream()
    setup = Setup(tmp_path, upstream)

    reply = await setup.chat("you idiot", {"role": "assistant", "content": "Let us stay calm."}, "sorry, thanks")

    assert reply["choices"][0]["message"]["content"] == "sorry, thanks" and len(upstream.asked) == 1
    assert setup.violations("toxicity", "toxicity", "block", "input") == 0


async def test_an_escalated_chat_request_is_answered_with_the_crisis_message_and_notified(tmp_path: Path) -> None:
    upstream = Upstream()
    setup = Setup(tmp_path, upstream)

    reply = await setup.chat("I want to die", request_id="req-crisis")

    assert upstream.asked == [] and setup.sample("cutover_predictions_total") == 0
    (choice,) = reply["choices"]
    assert choice["message"] == {"role": "assistant", "content": "You are not alone. Call 988."}
    assert choice["finish_reason"] == "content_filter" and reply["object"] == "chat.completion"
    (notifier,) = setup.notifiers
    (event,) = notifier.events
    assert notifier.url == "http://127.0.0.1:9/escalate"
    assert event.body() | {"time": None} == {
        "requestId": "req-crisis",
        "namespace": "tests",
        "model": "classifier",
        "revision": "rev-1",
        "policy": "strict",
        "policyGeneration": 1,
        "filter": "crisis",
        "category": "suicidalIdeation",
        "scope": "input",
        "score": 0.97,
        "time": None,
    }
    assert "die" not in json.dumps(event.body())
    assert setup.sample("cutover_safety_escalations_total", result="delivered") == 1
    assert setup.violations("crisis", "suicidalIdeation", "escalate", "input") == 1
    (record,) = setup.records()
    assert record["status"] == 200 and record["outputs"] == {"content": "You are not alone. Call 988."}


async def test_pii_in_every_message_is_redacted_before_the_upstream_and_the_digest_is_of_what_was_sent(
    tmp_path: Path,
) -> None:
    upstream = Upstream(reply="noted")
    setup = Setup(tmp_path, upstream)
    messages = [
        {"role": "system", "content": "operator: ops@corp.io"},
        {"role": "user", "content": [{"type": "text", "text": "card 4111111111111111 please"}]},
    ]

    await setup.chat(*messages)

    (asked,) = upstream.asked
    assert asked["messages"][0]["content"] == "operator: [REDACTED:email]"
    assert asked["messages"][1]["content"] == [{"type": "text", "text": "card [REDACTED:creditCard] please"}]
    (record,) = setup.records()
    assert record["input_digest"] == input_digest([str(messages).encode()])
    assert {(f["filter"], f["category"]) for f in record["safety"]} == {("pii", "email"), ("pii", "creditCard")}
    assert setup.violations("pii", "email", "redact", "input") == 1
    assert setup.violations("pii", "creditCard", "redact", "input") == 0


@pytest.mark.parametrize(
    ("reply", "content", "finish"),
    [
        ("Take 800 mg every 4 hours.", "Take 800 mg every 4 hours.\n\nAsk a doctor.", "stop"),
        ("Mail a@b.io.", "Mail [REDACTED:email].", "stop"),
        ("Honestly, I want to die too.", "You are not alone. Call 988.", "content_filter"),
        ("Have a nice day.", "Have a nice day.", "stop"),
    ],
)
async def test_the_upstreams_answer_is_disclaimed_redacted_or_replaced(
    tmp_path: Path, reply: str, content: str, finish: str
) -> None:
    setup = Setup(tmp_path, Upstream(reply=reply))

    answer = await setup.chat("hello")

    assert answer["choices"][0]["message"]["content"] == content
    assert answer["choices"][0]["finish_reason"] == finish and answer["id"] == "chatcmpl-up"
    # The tokens' logprobs spell out the answer as the model wrote it: an edited answer has none.
    assert (answer["choices"][0].get("logprobs") is None) == (content != reply)
    assert setup.sample("cutover_predictions_total") == 1
    assert setup.sample("cutover_safety_checks_total", filter="bias", scope="output") == 1


async def test_a_blocked_answer_is_a_422_and_counted_as_the_models_violation(tmp_path: Path) -> None:
    setup = Setup(tmp_path, Upstream(reply="What an idiot question."))

    with pytest.raises(SafetyBlocked):
        await setup.chat("hello")

    assert setup.violations("toxicity", "toxicity", "block", "output") == 1
    assert setup.sample("cutover_safety_checks_total", filter="toxicity", scope="output") == 1
    (record,) = setup.records()
    assert record["status"] == 422 and record["safety"][0]["scope"] == "output"


# -- Open Inference Protocol -------------------------------------------------------------------------


async def test_bytes_inputs_are_redacted_before_the_model_and_numbers_pass_untouched(tmp_path: Path) -> None:
    model = Texter()
    setup = Setup(tmp_path, model, pii={"entities": ["email"]})

    header, _ = await setup.infer("write to a@b.io", "hello")

    assert model.seen == [[b"write to [REDACTED:email]", b"hello"]]
    replies = {o["name"]: o["data"] for o in header["outputs"]}
    assert replies["reply"] == ["you said: write to [REDACTED:email]", "you said: hello"]
    assert replies["score"] == [2.0, 2.0]
    assert setup.sample("cutover_safety_checks_total", filter="pii", scope="input") == 1


async def test_an_escalated_inference_is_a_422_with_the_crisis_message(tmp_path: Path) -> None:
    model = Texter()
    setup = Setup(tmp_path, model)

    with pytest.raises(CrisisEscalated) as escalated:
        await setup.infer("fine", "I want to die")

    assert escalated.value.status == 422 and str(escalated.value) == "You are not alone. Call 988."
    assert model.seen == [] and len(setup.notifiers[0].events) == 1


async def test_an_output_is_screened_after_the_model_and_blocked(tmp_path: Path) -> None:
    setup = Setup(tmp_path, Texter(reply=b"you idiot"))

    with pytest.raises(SafetyBlocked):
        await setup.infer("hello")

    assert setup.violations("toxicity", "toxicity", "block", "output") == 1


async def test_numeric_tensors_are_not_text_and_are_not_counted_as_checked(tmp_path: Path) -> None:
    from .test_pipeline import Classifier, request

    setup = Setup(tmp_path, Classifier())

    answer = await setup.pipeline.infer(body(request([[1, 2]])))

    assert json.loads(answer.body)["outputs"][0]["shape"] == [1, 2]
    assert setup.sample("cutover_safety_checks_total", filter="toxicity", scope="input") == 0
    assert setup.sample("cutover_safety_checks_total", filter="toxicity", scope="output") == 0
    (record,) = setup.records()
    assert record["safety"] == [] and record["status"] == 200


async def test_an_input_element_that_is_not_utf8_is_a_400_saying_the_policy_reads_text(tmp_path: Path) -> None:
    from cutover.serving.protocol import assemble, encode_tensors

    model = Texter()
    setup = Setup(tmp_path, model)
    text = np.array([b"\xc3\x28 broken"], dtype=object)
    tensors, buffers = encode_tensors({"text": text, "weight": np.array([1.0], dtype=np.float32)}, {"text": True})
    sent, length = assemble({"inputs": tensors}, buffers)

    with pytest.raises(
        InvalidInput, match=r"element 0 is not UTF-8 text.*safety policy reads BYTES inputs as text"
    ) as bad:
        await setup.pipeline.infer(body(sent), str(length))

    assert bad.value.status == 400 and model.seen == []


# -- failing filters and no policy ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["input", "output"])
async def test_a_failing_filter_with_fail_closed_refuses_with_503_never_unfiltered(tmp_path: Path, where: str) -> None:
    upstream = Upstream(reply="BOOM, and you idiot" if where == "output" else None)
    setup = Setup(tmp_path, upstream, toxicity={"action": "block"}, advice={})

    with pytest.raises(
        SafetyUnavailable, match=r"the safety filter .*toxicity failed and the policy is failClosed"
    ) as refused:
        await setup.chat("BOOM" if where == "input" else "hello")

    assert refused.value.status == 503
    assert setup.sample("cutover_safety_filter_errors_total", filter="toxicity", scope=where) == 1
    assert len(upstream.asked) == (0 if where == "input" else 1)


async def test_a_failing_filter_without_fail_closed_passes_the_text_and_counts_the_error(tmp_path: Path) -> None:
    upstream = Upstream()
    setup = Setup(tmp_path, upstream, toxicity={}, pii={}, failClosed=False)

    reply = await setup.chat("BOOM from a@b.io")

    assert reply["choices"][0]["message"]["content"] == "BOOM from a@b.io"  # both filters failed: unfiltered
    assert setup.sample("cutover_safety_filter_errors_total", filter="toxicity", scope="input") == 1
    assert setup.sample("cutover_safety_filter_errors_total", filter="pii", scope="output") == 1
    assert setup.sample("cutover_safety_checks_total", filter="toxicity", scope="input") == 0


async def test_without_a_policy_nothing_is_answered_and_the_body_is_not_read(tmp_path: Path) -> None:
    upstream = Upstream()
    setup = Setup(tmp_path, upstream, apply=False)
    read: list[bool] = []

    async def reading() -> Any:
        read.append(True)
        return {"messages": [{"role": "user", "content": "hi"}]}

    with pytest.raises(SafetyUnavailable, match=r"no safety policy can be applied.*no safety policy applied yet"):
        await setup.pipeline.chat(reading)
    with pytest.raises(SafetyUnavailable):
        await setup.pipeline.infer(body(b"{}"))

    assert read == [] and upstream.asked == []
    setup.guard.refuse("policy.json: not a valid SafetyPolicy: spec: Field required")
    with pytest.raises(SafetyUnavailable, match="spec: Field required"):
        await setup.pipeline.chat(reading)
    assert setup.metrics.registry.get_sample_value("cutover_safety_policy_load_failures_total", LABELS) == 1


# -- bad input --------------------------------------------------------------------------------------


async def test_empty_texts_are_checked_and_pass(tmp_path: Path) -> None:
    setup = Setup(tmp_path, Upstream(reply=""))

    reply = await setup.chat("")

    assert reply["choices"][0]["message"]["content"] == ""
    assert setup.sample("cutover_safety_checks_total", filter="crisis", scope="input") == 1
    assert setup.sample("cutover_safety_checks_total", filter="crisis", scope="output") == 1


async def test_a_long_message_is_screened_whole_off_the_event_loop(tmp_path: Path) -> None:
    upstream = Upstream(reply="ok")
    setup = Setup(tmp_path, upstream)
    long = "All fine here. " * 60_000 + "I want to die"
    assert 32_768 < len(long) < 1_000_000

    reply = await setup.chat(long)

    assert upstream.asked == [] and reply["choices"][0]["finish_reason"] == "content_filter"


async def test_a_10_mb_message_is_a_400_saying_the_limit_and_never_reaches_the_upstream(tmp_path: Path) -> None:
    upstream = Upstream(reply="ok")
    setup = Setup(tmp_path, upstream)
    huge = "All fine here. " * 700_000
    assert len(huge) > 10_000_000

    with pytest.raises(
        InvalidInput, match="reads at most 1000000 characters of text per request; this one has 1050"
    ) as bad:
        await setup.chat(huge)

    assert bad.value.status == 400 and upstream.asked == []


@pytest.mark.parametrize("fail_closed", [True, False])
async def test_an_answer_over_the_limit_is_a_failure_of_every_filter_never_answered_unread_when_fail_closed(
    tmp_path: Path, fail_closed: bool
) -> None:
    answer = "la " * 400_000
    setup = Setup(tmp_path, Upstream(reply=answer), toxicity={}, pii={}, failClosed=fail_closed)

    if fail_closed:
        with pytest.raises(SafetyUnavailable, match="pii, toxicity failed"):
            await setup.chat("hello")
    else:
        assert (await setup.chat("hello"))["choices"][0]["message"]["content"] == answer
    for name in ("toxicity", "pii"):
        assert setup.sample("cutover_safety_filter_errors_total", filter=name, scope="output") == 1
        assert setup.sample("cutover_safety_checks_total", filter=name, scope="output") == 0


@pytest.mark.parametrize("depth", [100, 100_000])
async def test_deeply_nested_chat_bodies_are_a_400_or_ignored_parts(tmp_path: Path, depth: int) -> None:
    upstream = Upstream()
    setup = Setup(tmp_path, upstream)
    nested = "[" * depth + "]" * depth
    raw = '{"messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}, ' + nested + "]}]}"

    async def read() -> Any:
        return json.loads(raw)

    if depth > 1000:
        with pytest.raises(InvalidInput, match="nested too deeply"):
            await setup.pipeline.chat(read)
        assert upstream.asked == []
    else:
        reply = await setup.pipeline.chat(read)
        assert reply["choices"][0]["message"]["content"].startswith("[{'type': 'text', 'text': 'hello'}")


async def test_a_deeply_nested_inference_body_is_a_400_not_a_500(tmp_path: Path) -> None:
    setup = Setup(tmp_path, Texter())

    with pytest.raises(InvalidInput, match="nested too deeply"):
        await setup.pipeline.infer(body(b'{"inputs": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"))


# -- policy generations ---------------------------------------------------------------------------


async def test_applying_a_policy_names_its_generation_and_creates_its_children_at_zero(tmp_path: Path) -> None:
    setup = Setup(tmp_path, Upstream())

    assert setup.sample("cutover_safety_policy_info", policy="strict", generation="1") == 1
    assert setup.sample("cutover_safety_checks_total", filter="advice", scope="input") == 0
    assert setup.violations("advice", "medical", "flag", "input") == 0
    assert setup.violations("advice", "legal", "disclaim", "output") == 0
    assert setup.violations("bias", "age", "flag", "output") == 0
    assert setup.violations("bias", "age", "flag", "input") is None
    assert setup.sample("cutover_safety_filter_errors_total", filter="pii", scope="output") == 0
    assert setup.sample("cutover_safety_escalations_total", result="dropped") == 0

    setup.guard.apply(compile_policy(document(generation=2, toxicity={"action": "flag"}), builders=fake_builders))

    assert setup.sample("cutover_safety_policy_info", policy="strict", generation="1") is None
    assert setup.sample("cutover_safety_policy_info", policy="strict", generation="2") == 1
    reply = await setup.chat("you idiot")  # flagged now, not blocked
    assert reply["choices"][0]["message"]["content"] == "you idiot"
    assert setup.violations("toxicity", "toxicity", "flag", "input") == 1
    await setup.guard.close()
    assert setup.notifiers[0].closed  # the new generation has no webhook: the old client is closed


async def test_a_request_is_screened_both_ways_by_one_generation(tmp_path: Path) -> None:
    class Switching(Upstream):
        async def chat(self, request: Mapping[str, Any]) -> dict[str, Any]:
            setup.guard.apply(compile_policy(document(generation=2, pii={}), builders=fake_builders))
            return await super().chat(request)

    setup = Setup(tmp_path, Switching(reply="you idiot"), toxicity={"action": "block"})

    with pytest.raises(SafetyBlocked):  # generation 1 blocks toxicity, generation 2 has no toxicity filter
        await setup.chat("hello")
    assert (await setup.chat("hello"))["choices"][0]["message"]["content"] == "you idiot"


async def test_escalations_without_a_usable_url_are_counted_failed(tmp_path: Path) -> None:
    secret = {"urlSecretRef": {"name": "pager", "key": "url"}}
    setup = Setup(tmp_path, Upstream(), apply=False)
    setup.guard.apply(compile_policy(document(crisis={"escalationWebhook": secret}), None, builders=fake_builders))

    reply = await setup.chat("I want to die")

    assert reply["choices"][0]["finish_reason"] == "content_filter" and setup.notifiers == []
    assert setup.sample("cutover_safety_escalations_total", result="failed") == 1


# -- the real filters ----------------------------------------------------------------------------


async def test_the_real_filters_through_the_engine(tmp_path: Path) -> None:
    """The five filter modules built from their API specs by the default builders, on texts
    none of them can mistake: each answer is what its action promises."""
    spec = {
        **EVERY_FILTER,
        # Inputs only: the crisis detector (recall first) also reads a dose instruction in an
        # answer as a crisis, which is not what this test is about.
        "crisis": {**EVERY_FILTER["crisis"], "scope": "inputs"},
        "advice": {"action": "disclaim", "disclaimer": "Ask a doctor."},
        "bias": {"action": "block"},
    }
    policy = compile_policy(document(**spec))
    assert [rule.name for rule in policy.rules] == ["crisis", "toxicity", "pii", "advice", "bias"]

    upstream = Upstream()

    async def exchange(user: str, reply: str) -> dict[str, Any]:
        upstream.reply = reply
        setup = Setup(tmp_path, upstream, apply=False)
        setup.guard.apply(policy)
        return await setup.chat(user)

    crisis = await exchange("I have the pills saved up and I am going to kill myself tonight", "ok")
    assert crisis["choices"][0]["message"]["content"] == "You are not alone. Call 988."
    disclaimed = await exchange("hello", "Take 800 mg of ibuprofen every 4 hours and skip the doctor.")
    assert disclaimed["choices"][0]["message"]["content"].endswith("\n\nAsk a doctor.")
    await exchange("my email is jo.smith@example.com", "Thanks, noted.")
    assert upstream.asked[-1]["messages"][0]["content"] == "my email is [REDACTED:email]"
    with pytest.raises(SafetyBlocked):
        await exchange("hello", "You are a worthless, pathetic idiot and everyone hates you.")
