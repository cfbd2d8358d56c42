"""SafetyPolicy on the real control plane: the operator renders the example policy as a
ConfigMap, copies its crisis webhook's Secret (again when the Secret is rotated), reports Ready
and the ModelDeployments that reference it, and a changed policy reaches the serving pods
through the ConfigMap without a new revision; a ModelDeployment whose policy is missing gets
SafetyPolicyReady False PolicyNotFound and its rollout holds until the policy exists."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from ..cases import load
from .operator_support import Operator
from .test_operator import condition, deploy_v1, fast_canary, md, new_version

pytestmark = pytest.mark.cluster

PAGER = "https://pager.example/hook"


def policy_doc(**spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(load("safetypolicy.yaml"))
    doc["metadata"].pop("namespace")
    doc["spec"].update(spec)
    return doc


def webhook_secret(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "crisis-escalation"},
        "stringData": {"url": url},
    }


def get(kube: Kube, namespace: str, *what: str) -> dict[str, Any] | None:
    done = kube.run("get", *what, "-n", namespace, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def rendered(kube: Kube, namespace: str) -> dict[str, Any] | None:
    cm = get(kube, namespace, "configmap", "cutover-safety-consumer-chat")
    return json.loads(cm["data"]["policy.json"]) if cm else None


def copied_url(kube: Kube, namespace: str) -> str | None:
    secret = get(kube, namespace, "secret", "cutover-safety-consumer-chat")
    return base64.b64decode(secret["data"]["escalation-url"]).decode() if secret else None


def test_policy_is_rendered_copied_reported_and_changed_without_a_new_revision(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    kube.apply(webhook_secret(PAGER), policy_doc(), namespace=namespace)
    doc = fast_canary("chat", safetyPolicyRef={"name": "consumer-chat"})
    stable = deploy_v1(kube, namespace, doc)

    policy = wait_until(
        lambda: (
            (sp := kube.json("get", "sp", "consumer-chat", "-n", namespace)).get("status", {}).get("deployments")
            == ["chat"]
            and sp
        ),
        what="the policy to list its ModelDeployment",
    )
    ready = condition(policy, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Valid") and policy["status"]["observedGeneration"] == 1
    cm = kube.json("get", "configmap", "cutover-safety-consumer-chat", "-n", namespace)
    assert cm["metadata"]["ownerReferences"][0]["uid"] == policy["metadata"]["uid"]
    served = json.loads(cm["data"]["policy.json"])
    assert served["metadata"]["generation"] == 1 and served["spec"]["toxicity"]["threshold"] == 0.85
    assert copied_url(kube, namespace) == PAGER

    body = md(kube, namespace, "chat")
    assert condition(body, "SafetyPolicyReady")["status"] == "True"
    deployment = kube.json("get", "deployment", f"chat-{stable}", "-n", namespace)
    template = deployment["spec"]["template"]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["safety-policy"]["configMap"]["name"] == "cutover-safety-consumer-chat"
    assert "--safety-policy" in template["spec"]["containers"][0]["args"]

    # A changed policy: a new rendering, the same revision and the same pod template.
    changed = policy_doc()
    changed["spec"]["toxicity"]["threshold"] = 0.9
    kube.apply(changed, namespace=namespace)
    wait_until(
        lambda: (r := rendered(kube, namespace)) is not None and r["metadata"]["generation"] == 2,
        what="the changed policy rendered",
    )
    assert rendered(kube, namespace)["spec"]["toxicity"]["threshold"] == 0.9  # type: ignore[index]
    operator.wait_passes()
    after = md(kube, namespace, "chat")
    assert after["status"]["stableRevision"] == stable and not after["status"].get("candidateRevision")
    assert kube.json("get", "deployment", f"chat-{stable}", "-n", namespace)["spec"]["template"] == template

    # The webhook Secret rotated: the copy follows.
    kube.apply(webhook_secret("https://pager.example/rotated"), namespace=namespace)
    wait_until(lambda: copied_url(kube, namespace) == "https://pager.example/rotated", what="the rotated URL copied")

    # The policy deleted: its objects go with it, the ModelDeployment is told.
    kube.run("delete", "sp", "consumer-chat", "-n", namespace)
    wait_until(
        lambda: condition(md(kube, namespace, "chat"), "SafetyPolicyReady").get("reason") == "PolicyNotFound",
        what="SafetyPolicyReady False PolicyNotFound",
    )
    wait_until(lambda: rendered(kube, namespace) is None, what="the ConfigMap garbage-collected")


def test_missing_policy_holds_the_rollout_until_it_exists(kube: Kube, namespace: str, operator: Operator) -> None:
    doc = fast_canary("chat", safetyPolicyRef={"name": "consumer-chat"})
    stable = deploy_v1(kube, namespace, doc)  # the first revision is deployed: serving itself fails closed
    body = md(kube, namespace, "chat")
    ready = condition(body, "SafetyPolicyReady")
    assert (ready["status"], ready["reason"]) == ("False", "PolicyNotFound")
    assert f"SafetyPolicy {namespace}/consumer-chat not found" in ready["message"]

    new_version(kube, namespace, doc, "v2")
    wait_until(
        lambda: condition(md(kube, namespace, "chat"), "Progressing").get("reason") == "SafetyPolicyNotReady",
        what="the rollout waiting for the policy",
    )
    operator.wait_passes()
    held = md(kube, namespace, "chat")
    assert held["status"]["stableRevision"] == stable and not held["status"].get("candidateRevision")
    assert "waits for the SafetyPolicy" in held["status"]["message"]
    events = kube.json("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=chat")["items"]
    assert [e for e in events if e["reason"] == "SafetyPolicyNotReady" and e["type"] == "Warning"]

    kube.apply(webhook_secret(PAGER), policy_doc(), namespace=namespace)
    started = wait_until(
        lambda: (b := md(kube, namespace, "chat"))["status"].get("candidateRevision") and b,
        what="the rollout to start once the policy is ready",
    )
    assert condition(started, "SafetyPolicyReady")["status"] == "True"
