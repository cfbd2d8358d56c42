"""Faults from the field (issue 12) that only show with a real scheduler and API server."""

from __future__ import annotations

import copy

import kopf
import pytest

from cutover.operator import handlers
from cutover.operator.kube import Kube as ApiClient
from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from ..cases import load
from .operator_support import Operator
from .test_operator import deploy_v1, fast_canary, md, new_version

pytestmark = pytest.mark.cluster


def test_a_missing_volume_claim_is_reported_with_the_schedulers_words(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    doc = copy.deepcopy(load("modeldeployment-canary.yaml"))  # pvc://models/..., and no such claim here
    doc["metadata"].pop("namespace")
    kube.apply(doc, namespace=namespace)

    def reported() -> dict[str, object] | None:
        status = md(kube, namespace, "fraud-scorer").get("status", {})
        return status if 'persistentvolumeclaim "models" not found' in status.get("message", "") else None

    status = wait_until(reported, timeout=90, what="the missing claim in status")
    assert status["phase"] == "Pending"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Unschedulable"
    events = kube.json("get", "events", "-n", namespace, "--field-selector", "reason=PodsNotReady")["items"]
    assert len(events) == 1 and "persistentvolumeclaim" in events[0]["message"]


def test_a_failing_verdict_source_does_not_stop_an_on_call_abort(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    doc = fast_canary()
    deploy_v1(kube, namespace, doc)
    new_version(kube, namespace, doc, "v2")
    wait_until(lambda: md(kube, namespace, "ranker")["status"].get("candidateRevision"), what="the rollout to start")
    # A verdict source that raises on every pass (here: a verdict file without a verdict).
    (operator.verdicts / f"{namespace}_ranker.json").write_text('{"reason": "no verdict key"}')
    body = wait_until(
        lambda: (
            (b := md(kube, namespace, "ranker"))["status"].get("lastAnalysis") is None
            and "analysis failed" in b["status"].get("message", "")
            and b
        ),
        what="the failure in status",
    )
    assert body["status"]["phase"] == "Progressing"
    kube.run("annotate", "md/ranker", "-n", namespace, "cutover.dev/abort=abort-1")
    body = wait_until(
        lambda: (b := md(kube, namespace, "ranker"))["status"]["phase"] == "RolledBack" and b, what="the abort"
    )
    assert body["status"]["handledRequests"][0]["id"] == "abort-1"


async def test_a_loop_whose_object_vanished_unseen_knows_it_is_gone(
    kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deletion during a watch outage reaches no loop as an event; a 404 makes the loop look."""
    doc = fast_canary()
    kube.apply(doc, namespace=namespace)
    body = kopf.Body(kube.json("get", "md", "ranker", "-n", namespace))
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    client = ApiClient.from_connection(kopf.login_with_kubeconfig(settings=kopf.OperatorSettings()))
    try:
        assert not await handlers.gone(client, "ModelDeployment", body)
        kube.run("delete", "md", "ranker", "-n", namespace, "--wait")
        assert await handlers.gone(client, "ModelDeployment", body)
        kube.apply(doc, namespace=namespace)  # the same name again: another object
        assert await handlers.gone(client, "ModelDeployment", body)
    finally:
        await client.close()
