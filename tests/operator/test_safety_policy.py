"""The SafetyPolicy controller without a cluster: what it renders, what its status and Events
say, what it keeps when something is wrong, and how serving pods receive the policy."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from cutover.api.contract import SAFETY_ESCALATION_URL_KEY, SAFETY_POLICY_KEY
from cutover.api.v1alpha1 import ModelDeployment, SafetyPolicy
from cutover.operator import builders, safety, safety_handlers
from cutover.operator.kube import ApiError
from cutover.operator.rollout import Workload, revision_of
from cutover.operator.rollout.types import Source
from hack.runner import project, rewrite_paths, volumes_of

from ..cases import load

LOG = logging.getLogger("test")


def policy_body(**spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(load("safetypolicy.yaml"))
    doc["metadata"].update(generation=1, uid="uid-1", resourceVersion="1")
    doc["spec"].update(spec)
    return doc


class FakeKube:
    """The four calls the policy loop makes, on objects kept in memory."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []
        self.statuses: list[dict[str, Any]] = []

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.objects[(kind, namespace, name)]
        except KeyError:
            raise ApiError(404, f"{kind} {name} not found") from None

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(obj)
        self.objects[(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return obj

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, name))
        self.objects.pop((kind, namespace, name), None)

    async def replace_status(self, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(status)
        return {**body, "status": status, "metadata": {**body["metadata"], "resourceVersion": "2"}}


def secret(name: str, **data: str) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"kind": "Secret", "metadata": {"namespace": "support", "name": name}, "data": encoded}


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    posted: list[tuple[str, str, str]] = []
    for kind in ("info", "warn"):
        monkeypatch.setattr(
            safety_handlers.kopf,
            kind,
            lambda body, *, reason, message, kind=kind: posted.append((kind, reason, message)),
        )
    return posted


def run_pass(kube: FakeKube, body: dict[str, Any], deployments: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    ctx = safety_handlers.SafetyContext(kube)  # type: ignore[arg-type]
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    asyncio.run(safety_handlers.reconcile_policy(ctx, key, body, list(deployments), LOG))  # type: ignore[arg-type]
    return kube.statuses[-1] if kube.statuses else {}


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


# ----------------------------------------------------------------------------- rendering


def test_the_rendered_policy_is_the_validated_object_with_its_defaults() -> None:
    body = policy_body()
    rendered = safety.document(SafetyPolicy.model_validate(body))
    assert rendered["metadata"] == {"name": "consumer-chat", "namespace": "support", "generation": 1, "uid": "uid-1"}
    assert (rendered["apiVersion"], rendered["kind"]) == ("cutover.dev/v1alpha1", "SafetyPolicy")
    assert rendered["spec"]["toxicity"]["threshold"] == 0.85 and rendered["spec"]["failClosed"] is True
    assert rendered["spec"]["crisis"]["responseMessage"].startswith("It sounds like"), "defaults are written out"
    assert SafetyPolicy.model_validate(rendered).spec == SafetyPolicy.model_validate(body).spec


def test_the_config_map_is_owned_canonical_json_under_policy_json() -> None:
    policy = SafetyPolicy.model_validate(policy_body())
    cm = safety.config_map(policy, safety.document(policy))
    assert cm["metadata"]["name"] == "cutover-safety-consumer-chat"
    owner = cm["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("SafetyPolicy", "uid-1", True)
    text = cm["data"][SAFETY_POLICY_KEY]
    assert json.loads(text) == safety.document(policy)
    again = safety.config_map(SafetyPolicy.model_validate(json.loads(json.dumps(policy_body()))), json.loads(text))
    assert again == cm, "the same policy renders the same bytes (kubelet then swaps nothing)"


# ----------------------------------------------------------------------------- the loop, against a fake API server


def test_a_valid_policy_is_rendered_its_secret_copied_and_ready(events: list[tuple[str, str, str]]) -> None:
    kube = FakeKube(secret("crisis-escalation", url=" https://pager.example/hook \n"))
    status = run_pass(kube, policy_body(), ["chat-b", "chat-a"])
    kinds = {o["kind"]: o for o in kube.applied}
    assert json.loads(kinds["ConfigMap"]["data"][SAFETY_POLICY_KEY])["metadata"]["generation"] == 1
    copied = kinds["Secret"]
    assert copied["metadata"]["name"] == "cutover-safety-consumer-chat"
    assert base64.b64decode(copied["data"][SAFETY_ESCALATION_URL_KEY]) == b"https://pager.example/hook"
    assert copied["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert (ready(status)["status"], ready(status)["reason"]) == ("True", "Valid")
    assert "crisis, toxicity, pii, advice" in ready(status)["message"]
    assert status["observedGeneration"] == 1 and status["deployments"] == ["chat-a", "chat-b"]
    assert [(kind, reason) for kind, reason, _ in events] == [("info", "Valid")]


def test_a_missing_webhook_secret_is_not_ready_and_keeps_the_last_copy(events: list[tuple[str, str, str]]) -> None:
    kube = FakeKube()
    status = run_pass(kube, policy_body())
    assert [o["kind"] for o in kube.applied] == ["ConfigMap"], "the policy itself is served; no Secret is made up"
    condition = ready(status)
    assert (condition["status"], condition["reason"]) == ("False", "SecretUnavailable")
    assert "crisis.escalationWebhook.urlSecretRef: Secret support/crisis-escalation: not found" in condition["message"]
    assert events and events[0][:2] == ("warn", "SecretUnavailable")

    kube = FakeKube(secret("crisis-escalation", other="x"))
    assert "has no key 'url'" in ready(run_pass(kube, policy_body()))["message"]


def test_a_policy_that_no_longer_uses_a_secret_drops_its_copy_but_never_a_strangers(
    events: list[tuple[str, str, str]],
) -> None:
    crisis = {"action": "escalate", "escalationWebhook": {"url": "https://pager.example/hook"}}
    policy = SafetyPolicy.model_validate(policy_body())
    ours = {**safety.escalation_secret(policy, "https://old.example"), "kind": "Secret"}
    kube = FakeKube(ours)
    status = run_pass(kube, policy_body(crisis=crisis))
    assert kube.deleted == [("Secret", "cutover-safety-consumer-chat")] and ready(status)["status"] == "True"

    stranger = secret("cutover-safety-consumer-chat", url="https://someone.else")
    kube = FakeKube(stranger)
    run_pass(kube, policy_body(crisis=crisis))
    assert kube.deleted == []


def test_a_spec_only_the_operator_rejects_keeps_the_last_rendering(events: list[tuple[str, str, str]]) -> None:
    body = policy_body(toxicity={"threshold": 0.85, "action": "quarantine"})  # past the schema (an older CRD, say)
    kube = FakeKube(secret("crisis-escalation", url="https://pager.example/hook"))
    status = run_pass(kube, body)
    assert kube.applied == [], "pods keep the last good policy"
    assert (ready(status)["status"], ready(status)["reason"]) == ("False", "InvalidSpec")
    assert "toxicity.action" in ready(status)["message"]


def test_an_unchanged_policy_writes_nothing_and_tells_nothing_again(events: list[tuple[str, str, str]]) -> None:
    kube = FakeKube(secret("crisis-escalation", url="https://pager.example/hook"))
    first = run_pass(kube, policy_body())
    again = policy_body()
    again["status"] = first
    kube.statuses.clear()
    run_pass(kube, again)
    assert kube.statuses == [] and len(events) == 1


# ----------------------------------------------------------------------------- what a ModelDeployment is told


def test_readiness_follows_the_policy_controller_for_the_current_generation_only(
    events: list[tuple[str, str, str]],
) -> None:
    body = policy_body()
    assert safety.readiness("support", "consumer-chat", None).reason == "PolicyNotFound"
    pending = safety.readiness("support", "consumer-chat", safety.summarise(body))
    assert (pending.ready, pending.reason) == (None, "PolicyPending")
    kube = FakeKube(secret("crisis-escalation", url="https://pager.example/hook"))
    body["status"] = run_pass(kube, body)
    judged = safety.readiness("support", "consumer-chat", safety.summarise(body))
    assert (judged.ready, judged.reason) == (True, "PolicyReady")
    body["metadata"]["generation"] = 2  # edited since: its Ready speaks of generation 1
    assert safety.readiness("support", "consumer-chat", safety.summarise(body)).reason == "PolicyPending"
    broken = policy_body(toxicity={"threshold": 2})
    invalid = safety.readiness("support", "consumer-chat", safety.summarise(broken))
    assert (invalid.ready, invalid.reason) == (False, "PolicyInvalid") and "toxicity.threshold" in invalid.message


# ----------------------------------------------------------------------------- serving pods


def chat_md(**spec: Any) -> ModelDeployment:
    doc = copy.deepcopy(load("modeldeployment-canary.yaml"))
    doc["metadata"].update(uid="md-uid")
    doc["spec"].update(spec)
    return ModelDeployment.model_validate(doc)


def stable(md: ModelDeployment) -> Workload:
    wire = md.spec.wire()
    return Workload(revision_of(wire["model"], wire["runtime"]), "stable", 1, Source(wire["model"], wire["runtime"]))


def test_serving_pods_mount_the_policy_by_name_only() -> None:
    md = chat_md(safetyPolicyRef={"name": "consumer-chat"})
    pod = builders.deployment(md, stable(md))["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[args.index("--safety-policy") + 1] == "/etc/cutover/safety/policy/policy.json"
    assert args[args.index("--safety-secrets-dir") + 1] == "/etc/cutover/safety/secrets"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["safety-policy"]["configMap"] == {"name": "cutover-safety-consumer-chat", "optional": True}
    assert volumes["safety-secrets"]["secret"] == {"secretName": "cutover-safety-consumer-chat", "optional": True}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/cutover/safety/policy"]["readOnly"] and mounts["/etc/cutover/safety/secrets"]["readOnly"]

    plain = chat_md()
    assert stable(plain).revision == stable(md).revision, "the reference is not part of the revision"
    plain_pod = builders.deployment(plain, stable(plain))["spec"]["template"]["spec"]
    assert "--safety-policy" not in plain_pod["containers"][0]["args"]
    assert not any(v["name"].startswith("safety") for v in plain_pod["volumes"])


def test_the_local_runner_materialises_the_policy_like_kubelet(tmp_path: Path) -> None:
    md = chat_md(safetyPolicyRef={"name": "consumer-chat"})
    deployment = builders.deployment(md, stable(md))
    volumes = volumes_of(deployment, tmp_path)
    args = rewrite_paths(deployment["spec"]["template"]["spec"]["containers"][0]["args"], volumes)
    policy_file = Path(args[args.index("--safety-policy") + 1])
    secrets_dir = Path(args[args.index("--safety-secrets-dir") + 1])
    assert tmp_path in policy_file.parents and tmp_path in secrets_dir.parents
    by_kind = {v.kind: v for v in volumes}
    assert by_kind["ConfigMap"].source == by_kind["Secret"].source == "cutover-safety-consumer-chat"

    assert project(by_kind["ConfigMap"].local, {}) and not policy_file.exists(), "optional: empty until it exists"
    assert project(by_kind["ConfigMap"].local, {SAFETY_POLICY_KEY: b'{"v": 1}'})
    assert policy_file.is_symlink() and policy_file.read_bytes() == b'{"v": 1}'
    first = policy_file.resolve()
    assert not project(by_kind["ConfigMap"].local, {SAFETY_POLICY_KEY: b'{"v": 1}'}), "the same content: no swap"
    assert project(by_kind["ConfigMap"].local, {SAFETY_POLICY_KEY: b'{"v": 2}'})
    assert policy_file.read_bytes() == b'{"v": 2}' and policy_file.resolve() != first and not first.exists()
    assert project(by_kind["ConfigMap"].local, {}) and not policy_file.exists(), "deleted: the volume empties"
