"""`kubectl cutover` actions on the real control plane: a repeated `rollback --to` of the same
revision is a new request each time, and the plugin prints the operator's answer (from
status.handledRequests) or says the request is pending. First with a scripted operator that
answers as the real one records, then with the real operator (A -> B -> A -> B -> A)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator

import pytest

from cutover.api.v1alpha1 import REQUEST_ANNOTATIONS
from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from .operator_support import Operator
from .test_operator import deploy_v1, fast_canary, md, new_version

pytestmark = pytest.mark.cluster


def plugin(kube: Kube, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl cutover ...` as an on-call engineer types it: kubectl finds the plugin on PATH."""
    env = {**os.environ, "KUBECONFIG": kube.kubeconfig}
    return subprocess.run(
        ["kubectl", "cutover", "-n", namespace, *args], env=env, capture_output=True, text=True, timeout=120
    )


class ScriptedOperator:
    """Answers every new on-call request as the operator records it: one handledRequests entry
    (action, id = the annotation's value, by, at, result) and lastHandledRequests per action."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.1):
            body = md(self.kube, self.namespace, self.name)
            annotations = body["metadata"].get("annotations") or {}
            status = body.get("status") or {}
            last = dict(status.get("lastHandledRequests") or {})
            handled = list(status.get("handledRequests") or [])
            for action, key in REQUEST_ANNOTATIONS.items():
                value = annotations.get(key)
                if value is None or last.get(action) == value:
                    continue
                last[action] = value
                result = f"rolled back to {value.split('@', 1)[0]}" if action == "rollbackTo" else f"{action} done"
                entry = {"action": action, "id": value, "by": "kubectl-annotate", "at": "2026-11-30T10:00:00Z"}
                handled.insert(0, {**entry, "result": result})
            if handled != (status.get("handledRequests") or []):
                patch = {"status": {"handledRequests": handled, "lastHandledRequests": last}}
                self.kube.run(
                    "patch", "md", self.name, "-n", self.namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(patch),
                )  # fmt: skip


@pytest.fixture
def ranker(kube: Kube, namespace: str) -> Iterator[str]:
    doc = fast_canary()
    kube.apply(doc, namespace=namespace)
    yield doc["metadata"]["name"]


def test_rollback_to_the_same_revision_twice_is_two_requests_each_answered(
    kube: Kube, namespace: str, ranker: str
) -> None:
    scripted = ScriptedOperator(kube, namespace, ranker)
    scripted.thread.start()
    try:
        values = []
        for _ in range(2):
            done = plugin(kube, namespace, "rollback", "--to", "aaaaaaaaaa", ranker)
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"rollbackTo of {ranker}: rolled back to aaaaaaaaaa" in done.stdout, done.stdout
            values.append(md(kube, namespace, ranker)["metadata"]["annotations"][REQUEST_ANNOTATIONS["rollbackTo"]])
        assert values[0] != values[1] and all(v.startswith("aaaaaaaaaa@rollbackTo-") for v in values), values
        handled = md(kube, namespace, ranker)["status"]["handledRequests"]
        assert [h["id"] for h in handled if h["action"] == "rollbackTo"] == values[::-1]
    finally:
        scripted.stop.set()
        scripted.thread.join(10)


def test_a_request_nobody_handles_is_reported_pending(kube: Kube, namespace: str, ranker: str) -> None:
    done = plugin(kube, namespace, "pause", ranker, "--wait", "1")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "pending" in done.stdout and f"kubectl cutover history {ranker}" in done.stdout
    written = md(kube, namespace, ranker)["metadata"]["annotations"][REQUEST_ANNOTATIONS["pause"]]
    assert written.startswith("pause-") and written in done.stdout


def test_the_real_operator_answers_a_repeated_rollback_to(kube: Kube, namespace: str, operator: Operator) -> None:
    """A -> B -> A -> C -> A: the second `rollback --to A` once wrote the annotation's value
    unchanged, so nothing happened while the plugin said "requested"."""
    doc = fast_canary()
    first = deploy_v1(kube, namespace, doc)
    operator.verdict("ranker", "promote")

    def promoted(version: str) -> str:
        before = md(kube, namespace, "ranker")["status"]["stableRevision"]
        new_version(kube, namespace, doc, version)
        body = wait_until(
            lambda: (
                (b := md(kube, namespace, "ranker"))["status"].get("stableRevision") != before
                and not b["status"].get("candidateRevision")
                and b
            ),
            what=f"{version} promoted",
        )
        revision: str = body["status"]["stableRevision"]
        return revision

    def rollback_to(revision: str) -> str:
        done = plugin(kube, namespace, "rollback", "--to", revision, "ranker")
        wait_until(
            lambda: md(kube, namespace, "ranker")["status"]["stableRevision"] == revision,
            timeout=20,
            what=f"the rollback to {revision}",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    promoted("v2")
    printed = [rollback_to(first)]
    promoted("v3")
    printed.append(rollback_to(first))
    for out in printed:
        assert f"rollbackTo of ranker: rolled back to {first}" in out, out
    handled = [h for h in md(kube, namespace, "ranker")["status"]["handledRequests"] if h["action"] == "rollbackTo"]
    assert len(handled) == 2 and handled[0]["id"] != handled[1]["id"]
