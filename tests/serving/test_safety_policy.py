"""The SafetyPolicy engine without a server: compiling a policy object, one decision per screening
(block > escalate > redact > disclaim > flag), what each filter reads, edits to the texts, filter
failures, where the texts of chat bodies and tensors are, and `cutover safety check`."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cutover.operator import cli
from cutover.serving.errors import InvalidInput
from cutover.serving.safety import policy as policy_module
from cutover.serving.safety.base import Direction, FilterName, Finding
from cutover.serving.safety.check import check
from cutover.serving.safety.policy import Policy, PolicyError, Rule, compile_policy
from cutover.serving.safety.texts import chat_request_texts, chat_response_texts, tensor_texts

from . import safety_fakes
from .safety_fakes import fake_builders

WEBHOOK = {"url": "http://127.0.0.1:9/escalate"}


def document(generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "SafetyPolicy",
        "metadata": {"name": "strict", "namespace": "shop", "generation": generation, "uid": "u-1"},
        "spec": spec,
    }


EVERY_FILTER = {
    "crisis": {"escalationWebhook": WEBHOOK, "responseMessage": "You are not alone. Call 988."},
    "toxicity": {"action": "block"},
    "pii": {"entities": ["email", "creditCard"]},
    "advice": {"action": "disclaim", "domains": ["medical", "legal"], "scope": "both", "disclaimer": "Ask a doctor."},
    "bias": {"action": "flag"},
    "blockMessage": "Not under this policy.",
}


def compiled(**spec: Any) -> Policy:
    return compile_policy(document(**spec), builders=fake_builders)


def test_a_policy_object_compiles_to_rules_in_filter_order_with_its_identity_and_messages() -> None:
    policy = compiled(**EVERY_FILTER)

    assert (policy.name, policy.namespace, policy.generation, policy.uid) == ("strict", "shop", 1, "u-1")
    assert [rule.name for rule in policy.rules] == ["crisis", "toxicity", "pii", "advice", "bias"]
    assert [rule.name for rule in policy.rules_for("output")] == ["crisis", "toxicity", "pii", "advice", "bias"]
    assert [rule.name for rule in policy.rules_for("input")] == ["crisis", "toxicity", "pii", "advice"]
    assert policy.block_message == "Not under this policy." and policy.fail_closed
    assert policy.crisis_message == "You are not alone. Call 988." and policy.disclaimer == "Ask a doctor."
    assert policy.escalation_url == WEBHOOK["url"] and not policy.escalation_url_from_secret
    assert policy.rules[2].categories == ("email", "creditCard")


def test_a_disabled_filter_is_not_built_and_a_secret_url_comes_from_the_caller() -> None:
    safety_fakes.BUILT.clear()
    secret = {"urlSecretRef": {"name": "pager", "key": "url"}, "timeoutSeconds": 3}
    policy = compile_policy(
        document(crisis={"escalationWebhook": secret}, toxicity={"enabled": False}),
        "https://pager.example/hook\n",
        builders=fake_builders,
    )

    assert safety_fakes.BUILT == ["crisis"]
    assert policy.escalation_url == "https://pager.example/hook" and policy.escalation_url_from_secret
    assert policy.escalation_timeout == 3.0
    missing = compile_policy(document(crisis={"escalationWebhook": secret}), None, builders=fake_builders)
    assert missing.escalation_url is None


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ("not an object", "not a valid SafetyPolicy"),
        (document(), "needs at least one filter"),
        (document(toxicity={"threshold": 2}), "spec.toxicity.threshold"),
        (document(crisis={}), "crisis action escalate needs an escalationWebhook"),
        ({**document(pii={}), "kind": "ModelDeployment"}, "kind"),
    ],
)
def test_an_invalid_policy_object_is_a_policy_error_with_the_reason(doc: Any, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        compile_policy(doc, builders=fake_builders)


def test_a_filter_missing_from_the_build_or_refusing_its_spec_is_a_policy_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(PolicyError, match="the bias filter is not available in this build: No module named"):
        compile_policy(document(bias={}), builders={**fake_builders, "bias": "cutover.serving.safety.nothing"})

    def refuse(spec: Any) -> Any:
        raise ValueError("entity address needs a gazetteer")

    monkeypatch.setattr(safety_fakes, "detector", refuse)
    with pytest.raises(PolicyError, match="the pii filter cannot be built: ValueError: entity address needs"):
        compiled(pii={})


def test_the_builders_are_the_filter_modules_of_this_package() -> None:
    assert {
        name: f"cutover.serving.safety.{name}" for name in ("crisis", "toxicity", "pii", "advice", "bias")
    } == policy_module.BUILDERS


@pytest.mark.parametrize(
    ("text", "decision"),
    [
        ("good morning", "pass"),
        ("you idiot, I want to die", "block"),  # toxicity blocks before crisis escalates
        ("I want to die, mail me at a@b.io", "escalate"),
        ("mail me at a@b.io and sue them", "redact"),
        ("people from there are all lazy", "flag"),
    ],
)
def test_one_decision_per_screening_the_strongest_action_found(text: str, decision: str) -> None:
    assert compiled(**EVERY_FILTER).screen("output", [text]).decision == decision


def test_redaction_and_disclaimer_both_apply_to_an_output_and_the_texts_come_back_edited() -> None:
    policy = compiled(**EVERY_FILTER)

    screening = policy.screen("output", ["Take 800 mg now and mail a@b.io", "nothing here"])

    assert screening.decision == "redact" and screening.changed
    assert screening.texts == ("Take 800 mg now and mail [REDACTED:email]\n\nAsk a doctor.", "nothing here")
    assert [hit.record() for hit in screening.hits] == [
        {"filter": "pii", "category": "email", "action": "redact", "score": 1.0, "scope": "output"},
        {"filter": "advice", "category": "medical", "action": "disclaim", "score": 0.92, "scope": "output"},
    ]


def test_disclaim_on_an_input_flags_and_appends_nothing() -> None:
    screening = compiled(**EVERY_FILTER).screen("input", ["should I take 800 mg?"])

    assert screening.decision == "flag" and not screening.changed
    assert [(hit.filter, hit.action) for hit in screening.hits] == [("advice", "flag")]


def test_block_and_escalate_leave_the_texts_to_the_caller_who_replaces_the_answer() -> None:
    screening = compiled(**EVERY_FILTER).screen("input", ["I want to die, a@b.io"])

    assert screening.decision == "escalate" and screening.texts == ("I want to die, a@b.io",)
    assert not screening.changed


def test_classifiers_read_the_classified_texts_and_pii_reads_every_text() -> None:
    policy = compiled(**EVERY_FILTER)

    screening = policy.screen("input", ["earlier: you idiot", "mail a@b.io"], classified=["hello there"])

    assert screening.decision == "redact"  # the old insult is not read; the email anywhere is
    assert screening.texts == ("earlier: you idiot", "mail [REDACTED:email]")
    assert set(screening.checked) == {"crisis", "toxicity", "pii", "advice"}
    nothing = policy.screen("input", ["a@b.io"], classified=[])
    assert nothing.checked == ("pii",)  # the classifiers read nothing: not checked


def test_one_violation_per_filter_the_category_with_the_highest_score() -> None:
    screening = compiled(**EVERY_FILTER).screen("output", ["I want to die", "I will hurt myself and shoot them"])

    assert {(h.category, h.score) for h in screening.hits} == {
        ("suicidalIdeation", 0.97),
        ("selfHarm", 0.9),
        ("violence", 0.85),
    }
    assert [(v.filter, v.category) for v in screening.violations()] == [("crisis", "suicidalIdeation")]


def test_a_failing_filter_is_reported_and_the_others_still_apply() -> None:
    screening = compiled(**EVERY_FILTER).screen("output", ["BOOM a@b.io"])

    assert {f.filter for f in screening.failures} == {"crisis", "toxicity", "pii", "advice", "bias"}
    assert "RuntimeError: crisis detector exploded" in screening.failures[0].error
    assert screening.checked == () and screening.decision == "pass"


class Broken:
    """A PII detector that returns ``finding`` whatever it reads."""

    name: FilterName = "pii"

    def __init__(self, finding: Finding) -> None:
        self.finding = finding

    def scan(self, text: str, direction: Direction) -> list[Finding]:
        return [self.finding]


@pytest.mark.parametrize(
    ("finding", "message"),
    [
        (Finding("pii", "email", 1.5, ((0, 1),)), "score 1.5, not in"),
        (Finding("pii", "email", float("nan"), ((0, 1),)), "score nan"),
        (Finding("pii", "email", 1.0, ((0, 99),)), r"span \(0, 99\) outside its text"),
        (Finding("pii", "email", 1.0, ((3, 3),)), r"span \(3, 3\)"),
    ],
)
def test_a_finding_that_is_not_one_is_a_filter_failure_never_a_partial_redaction(
    finding: Finding, message: str
) -> None:
    policy = compiled(pii={})
    broken = dataclasses.replace(policy, rules=(Rule(Broken(finding), "redact", policy.rules[0].directions, ()),))

    screening = broken.screen("output", ["a@b.io is mine"])

    assert len(screening.failures) == 1 and screening.failures[0].error.startswith("ValueError")
    assert re.search(message, screening.failures[0].error)
    assert screening.texts == ("a@b.io is mine",) and screening.decision == "pass"


def test_overlapping_spans_merge_into_one_token() -> None:
    from cutover.serving.safety.policy import _edit

    assert (
        _edit("card 4111 1111 and", [(5, 14, "creditCard"), (10, 14, "phone")], None)
        == "card [REDACTED:creditCard] and"
    )
    assert _edit("", [], "Ask a doctor.") == "Ask a doctor."


# -- where the texts are --------------------------------------------------------------------------


def test_a_chat_requests_texts_are_every_message_and_the_classifiers_read_the_last_user_message() -> None:
    request = {
        "messages": [
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": "old question"},
            {"role": "assistant", "content": None},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "first part"},
                    {"type": "image_url", "image_url": {"url": "http://x"}},
                    {"type": "text", "text": "second part"},
                ],
            },
            {"role": "tool", "content": [{"type": "text", "text": {"nested": ["deep"]}}]},
        ],
        "temperature": 0,
    }
    original = json.loads(json.dumps(request))

    texts = chat_request_texts(request)
    edited = texts.put(["be kind", "old question", "FIRST", "second part"])

    assert texts.texts == ("be kind", "old question", "first part", "second part")
    assert texts.classified == ("first part\nsecond part",)
    assert edited["messages"][3]["content"][0] == {"type": "text", "text": "FIRST"}
    assert edited["messages"][3]["content"][1] == request["messages"][3]["content"][1]
    assert edited["temperature"] == 0 and request == original  # the client's body is not changed


def test_a_chat_request_without_a_user_message_gives_the_classifiers_nothing() -> None:
    texts = chat_request_texts({"messages": [{"role": "system", "content": "hi"}]})

    assert texts.texts == ("hi",) and texts.classified == ()


def test_a_chat_responses_texts_are_every_choices_content() -> None:
    response = {
        "id": "c1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "one"}},
            {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": []}},
            {"index": 2, "message": {"role": "assistant", "content": [{"type": "text", "text": "three"}]}},
            "not a choice",
        ],
    }

    texts = chat_response_texts(response)

    assert texts.texts == ("one", "three") and texts.classified is None
    edited = texts.put(["ONE", "three"])
    assert edited["choices"][0]["message"]["content"] == "ONE" and response["choices"][0]["message"]["content"] == "one"
    assert chat_response_texts({"choices": "garbage"}).texts == ()


def test_tensor_texts_are_the_elements_of_bytes_tensors_only() -> None:
    text = np.array([[b"hello", "caf\u00e9".encode()], [b"", b"x"]], dtype=object)
    numbers = np.array([1.0, 2.0], dtype=np.float32)

    texts = tensor_texts({"numbers": numbers, "text": text}, "input")
    edited = texts.put(["HELLO", "caf\u00e9", "", "x"])

    assert texts.texts == ("hello", "caf\u00e9", "", "x")
    assert edited["numbers"] is numbers and edited["text"].shape == (2, 2)
    assert edited["text"][0, 0] == b"HELLO" and text[0, 0] == b"hello"
    assert tensor_texts({"numbers": numbers}, "input").texts == ()


def test_an_input_element_that_is_not_utf8_is_invalid_input_and_an_output_one_is_still_read() -> None:
    bad = np.array([b"fine", b"\xff\xfe oops"], dtype=object)

    with pytest.raises(InvalidInput, match=r"input 'text' element 1 is not UTF-8 text .*reads BYTES inputs as text"):
        tensor_texts({"text": bad}, "input")
    assert tensor_texts({"text": bad}, "output").texts == ("fine", "\ufffd\ufffd oops")


def test_str_elements_stay_str_when_edited() -> None:
    texts = tensor_texts({"out": np.array(["a@b.io"], dtype=object)}, "output")

    assert texts.put(["[REDACTED:email]"])["out"][0] == "[REDACTED:email]"


# -- cutover safety check -------------------------------------------------------------------------


def test_check_answers_the_text_as_it_would_be_answered() -> None:
    policy = compiled(**EVERY_FILTER)

    assert check(policy, "hello") == {
        "text": "hello",
        "scope": "input",
        "decision": "pass",
        "findings": [],
        "answer": "hello",
        "errors": [],
    }
    assert check(policy, "you idiot")["answer"] == "Not under this policy."
    assert check(policy, "I want to die", "output")["answer"] == "You are not alone. Call 988."
    assert check(policy, "take 800 mg", "output")["answer"] == "take 800 mg\n\nAsk a doctor."
    failed = check(policy, "BOOM")
    assert failed["decision"] == "unavailable" and failed["answer"] is None and len(failed["errors"]) == 4
    with pytest.raises(ValueError, match="scope must be input or output"):
        check(policy, "x", "both")


def test_the_cli_reads_json_lines_and_writes_one_line_per_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in fake_builders:
        monkeypatch.setitem(policy_module.BUILDERS, name, fake_builders[name])  # type: ignore[index]
    manifest = tmp_path / "policy.yaml"
    manifest.write_text(
        "apiVersion: cutover.dev/v1alpha1\nkind: SafetyPolicy\nmetadata: {name: strict}\n"
        "spec:\n  toxicity: {action: flag}\n  pii: {}\n"
    )
    lines = [
        {"text": "you idiot"},
        {"text": "write to a@b.io", "scope": "output"},
        "not an object",
        {"text": "fine", "scope": "sideways"},
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(json.dumps(line) for line in lines) + "\n\n"))

    code = cli.main(["safety", "check", "--policy", str(manifest)])

    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # two lines were not {text, scope} objects
    assert out[0]["decision"] == "flag" and out[0]["findings"][0] == {
        "filter": "toxicity",
        "category": "toxicity",
        "score": 0.95,
        "action": "flag",
    }
    assert out[1]["answer"] == "write to [REDACTED:email]" and out[1]["scope"] == "output"
    assert out[2]["line"] == 3 and "expected an object" in out[2]["error"]
    assert out[3]["line"] == 4 and "scope must be input or output" in out[3]["error"]


def test_the_cli_refuses_an_invalid_policy_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "policy.json"
    manifest.write_text(json.dumps(document(toxicity={"threshold": 7})))

    assert cli.main(["safety", "check", "--policy", str(manifest)]) == 2
    assert "spec.toxicity.threshold" in capsys.readouterr().err
    assert cli.main(["safety", "check", "--policy", str(tmp_path / "absent.json")]) == 2
    assert "cannot read the safety policy" in capsys.readouterr().err
