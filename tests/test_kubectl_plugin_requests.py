"""`kubectl cutover` actions: every request is written with a fresh id (rollback --to included,
so asking for the same revision twice is two requests), and the plugin says what the operator
did with it, or that it is still pending."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from cutover.api.v1alpha1 import REQUEST_ANNOTATIONS
from cutover.operator import kubectl_plugin
from cutover.operator.kubectl_plugin import (
    PENDING,
    handled_request,
    outcome,
    request_id,
    rollback_to_value,
    wait_for_handled,
)

COMMANDS = {
    "promote": ["promote"],
    "full": ["promote", "--full"],
    "abort": ["abort"],
    "pause": ["pause"],
    "resume": ["resume"],
    "retry": ["retry"],
    "rollback": ["rollback"],
    "rollbackTo": ["rollback", "--to", "abc123"],
}


class Kubectl:
    """Stands in for the kubectl binary: records annotate commands, answers get with ``body``."""

    def __init__(self) -> None:
        self.annotations: list[tuple[str, str]] = []
        self.body: dict[str, Any] = {"metadata": {"name": "fraud"}, "status": {}}

    def __call__(self, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if "annotate" in cmd:
            key, _, value = cmd[-1].partition("=")
            self.annotations.append((key, value))
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 0, json.dumps(self.body), "")


@pytest.fixture
def kubectl(monkeypatch: pytest.MonkeyPatch) -> Iterator[Kubectl]:
    fake = Kubectl()
    monkeypatch.setattr(subprocess, "run", fake)
    yield fake


def test_every_action_writes_a_fresh_request_each_time(kubectl: Kubectl) -> None:
    for words in COMMANDS.values():
        for _ in range(2):
            assert kubectl_plugin.main([*words, "fraud", "--wait", "0"]) == PENDING
    values: dict[str, list[str]] = {}
    for key, value in kubectl.annotations:
        values.setdefault(key, []).append(value)
    assert set(values) == set(REQUEST_ANNOTATIONS.values())
    for key, written in values.items():
        assert len(set(written)) == len(written), f"{key}: a repeated request is written identically: {written}"
    # rollback --to: the target before the first "@", a fresh id after it.
    to = values[REQUEST_ANNOTATIONS["rollbackTo"]]
    assert all(v.startswith("abc123@rollbackTo-") for v in to), to
    assert all(v.startswith("full-") for v in values[REQUEST_ANNOTATIONS["promote"]][2:])


def test_the_plugin_prints_what_the_operator_did(
    kubectl: Kubectl, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def answered(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        done = kubectl(cmd, **kwargs)
        if "annotate" in cmd:  # the operator answers at once
            value = cmd[-1].partition("=")[2]
            kubectl.body["status"]["handledRequests"] = [
                {"action": "rollbackTo", "id": value, "by": "kubectl-annotate", "at": "2026-11-30T10:00:00Z",
                 "result": "rolled back to abc123"},
            ]  # fmt: skip
        return done

    monkeypatch.setattr(subprocess, "run", answered)
    assert kubectl_plugin.main(["rollback", "--to", "abc123", "fraud"]) == 0
    printed = capsys.readouterr().out
    assert "rollbackTo of fraud: rolled back to abc123 (handled at 2026-11-30T10:00:00Z)" in printed


def test_a_handled_request_is_found_by_action_and_id() -> None:
    entry = {"action": "rollbackTo", "id": "abc@rollbackTo-1", "result": "rolled back to abc"}
    body = {"status": {"handledRequests": [{"action": "rollback", "id": "abc@rollbackTo-1"}, entry]}}
    assert handled_request(body, "rollbackTo", "abc@rollbackTo-1") == entry
    only_id = {"status": {"handledRequests": [{**entry, "id": "rollbackTo-1"}]}}
    assert handled_request(only_id, "rollbackTo", "abc@rollbackTo-1") is not None
    assert handled_request(body, "rollbackTo", "abc@rollbackTo-2") is None
    assert handled_request({}, "pause", "pause-1") is None
    pruned = {"status": {"lastHandledRequests": {"pause": "pause-1"}}}
    assert handled_request(pruned, "pause", "pause-1") is not None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_wait_ends_at_the_answer_or_at_the_timeout() -> None:
    clock = Clock()
    answer = {"action": "pause", "id": "pause-1", "result": "rollout paused"}
    bodies = iter([{}, {}, {"status": {"handledRequests": [answer]}}])
    found = wait_for_handled(lambda: next(bodies), "pause", "pause-1", 20, clock=clock, sleep=clock.sleep)
    assert found == answer and clock.now == 1.0
    reads = 0

    def never() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {}

    clock = Clock()
    assert wait_for_handled(never, "pause", "pause-1", 20, clock=clock, sleep=clock.sleep) is None
    assert clock.now == 20 and reads == 41


def test_the_outcome_says_done_refused_or_pending() -> None:
    done = outcome("fraud", "pause", "pause-1", {"result": "rollout paused", "at": "T"}, 20)
    assert done == ("pause of fraud: rollout paused (handled at T)", 0)
    refused = outcome("fraud", "resume", "resume-1", {"result": "ignored: the rollout is not paused"}, 20)
    assert refused[1] == 1 and "ignored: the rollout is not paused" in refused[0]
    message, code = outcome("fraud", "abort", "abort-1", None, 20)
    assert code == PENDING and "pending" in message and "kubectl cutover history fraud" in message


@pytest.mark.parametrize("revision", ["", " ", "abc123@x", "abc 123", "-abc", "abc-", "r\n1", "a" * 64, "ré"])
def test_rollback_to_a_malformed_revision_is_refused_and_writes_nothing(
    kubectl: Kubectl, capsys: pytest.CaptureFixture[str], revision: str
) -> None:
    """`rollback --to ""` once did a plain rollback, and "a@b" rolled back to "a"."""
    with pytest.raises(SystemExit) as exit_:
        kubectl_plugin.main(["rollback", "fraud", f"--to={revision}", "--wait", "0"])
    assert exit_.value.code == 2
    assert "is not a revision name" in capsys.readouterr().err
    assert kubectl.annotations == []
    with pytest.raises(ValueError, match="not a revision name"):
        rollback_to_value(revision)


def test_request_ids_carry_at_least_48_random_bits() -> None:
    """Six hex digits (24 bits) collided within a second: 20,000 ids held 8 duplicates."""
    ids = [request_id("promote") for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i.rsplit("-", 1)[1]) >= 12 for i in ids)
