"""The whole stack end to end, as `make demo` runs it: the real control plane, real Prometheus, the
real operator deciding from Prometheus, the real gateway and one real `cutover serve` process per
revision (hack/runner.py), with steady client traffic through the gateway. Each test asserts what a
user would see, and that every request sent was answered with no gateway-made error."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from cutover.operator.dashboards import ROLES
from cutover.serving import sample_models
from hack.devstack import Stack, Traffic
from tests.support import grafana
from tests.support.kubectl import Kube
from tests.support.waiting import wait_until

from ..conftest import REPO

pytestmark = pytest.mark.cluster
GATEWAY_MADE = {401, 403, 404, 429, 502, 503, 504}
"""Codes only the gateway or a missing route would produce: none may reach a client here."""


@pytest.fixture(scope="module")
def stack(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    running = Stack(workdir, namespace=f"e2e-{uuid.uuid4().hex[:6]}", kubeconfig=kube.kubeconfig)
    try:
        yield running.start()
    finally:
        running.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    made = {
        # ~2% of requests fail in every ordinary version, as real models fail on rare inputs
        "v1": sample_models.onnx_classifier(folder / "v1.onnx", "faulty", seed=0, fail_above=2.054),
        "v2": sample_models.onnx_classifier(folder / "v2.onnx", "faulty", seed=0, fail_above=2.054),
        "bad": sample_models.onnx_classifier(folder / "bad.onnx", "faulty", seed=2, fail_above=1.2816),  # ~10%
        "good": sample_models.onnx_classifier(folder / "good.onnx", "good"),
        "improved": sample_models.onnx_classifier(folder / "improved.onnx", "improved"),
        "shifted": sample_models.onnx_classifier(folder / "shifted.onnx", "shifted"),
    }
    return made


def deployment(stack: Stack, name: str, version: str, model: Path, strategy: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": stack.namespace},
        "spec": {
            "model": {"name": name, "version": version, "format": "onnx", "storageUri": f"file://{model}"},
            "runtime": {"replicas": 1},
            "strategy": strategy,
            "analysis": {
                "interval": "5s",
                "minSamples": 300,
                "minDuration": "15s",
                "metrics": [{"name": "error-rate", "builtin": "errorRate", "critical": True, "passMargin": 1.0}],
                "prometheus": {"address": stack.prometheus_url},
            },
        },
    }


CANARY = {
    "type": "canary",
    "canary": {"steps": [{"setWeight": 25}, {"analysis": {}}, {"setWeight": 50}, {"analysis": {}}]},
}


def until(stack: Stack, name: str, done: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
    """Read the ModelDeployment every second until ``done`` holds; return it. The timeout's
    message has its status."""

    def reached() -> dict[str, Any] | None:
        md = stack.md(name)
        return md if done(md) else None

    found: dict[str, Any] = wait_until(reached, timeout, what, 1, detail=lambda: json.dumps(status(stack.md(name))))
    return found


def answered_by(traffic: Traffic, revision: str, last: int = 50) -> bool:
    """Whether the last ``last`` answers the client got all came from ``revision``."""
    return {r[1] for r in list(traffic.recent)[-last:]} == {revision}


def condition(md: dict[str, Any], kind: str) -> str:
    return next((c["status"] for c in md.get("status", {}).get("conditions", []) if c["type"] == kind), "")


def status(md: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = md.get("status") or {}
    return found


def promoted_over(old: str) -> Callable[[dict[str, Any]], bool]:
    return lambda md: (
        status(md).get("stableRevision") not in (None, old) and status(md).get("candidateRevision") is None
    )


def rolled_back(md: dict[str, Any]) -> bool:
    return condition(md, "RolledBack") == "True"


def weights(md: dict[str, Any]) -> dict[str, int]:
    return {row["revision"]: row["weight"] for row in status(md).get("traffic") or []}


def ready(md: dict[str, Any]) -> bool:
    return condition(md, "Ready") == "True" and status(md).get("stableRevision") is not None


def start_traffic(stack: Stack, name: str, rate: float = 60, users: int = 0) -> Traffic:
    stack.wait_served(name)
    traffic = Traffic(stack.gateway_url, stack.api_key, name, rate=rate, users=users)
    traffic.start()
    return traffic


def dashboards_show_data(stack: Stack, model: str, since: float, titles: dict[str, tuple[str, ...]]) -> None:
    """The chart's dashboards (per dashboard, the panels named ``titles``) show data for ``model``
    from ``since`` on: each panel's queries, variables chosen as a user would, return series from
    the stack's Prometheus, which scrapes what a cluster's would (serving, gateway, operator)."""
    values = {"namespace": stack.namespace, "model": model, "modeldeployment": model, "slo": "99.9"}
    values["__rate_interval"] = "10s"  # Grafana's: four scrape intervals at least (1 s here)
    empty = {
        name: found
        for name, panels in titles.items()
        if (found := grafana.without_data(stack.prometheus, grafana.load(name), panels, values, since))
    }
    assert not empty, json.dumps(empty, indent=1)


SIDE_BY_SIDE = tuple(
    f"{signal}: {role}"
    for signal in ("Requests per second", "5xx ratio", "Latency", "Requests in flight")
    for role in ("stable", "candidate")
)


def nothing_lost(traffic: Traffic) -> None:
    traffic.stop()
    answered = sum(traffic.answered.values())
    assert traffic.lost == 0 and answered == traffic.sent, (traffic.sent, dict(traffic.answered), traffic.lost)
    assert not GATEWAY_MADE & set(traffic.answered), dict(traffic.answered)


def test_canary_promotes_a_good_version_rolls_back_a_bad_one_and_honours_on_call(
    stack: Stack, models: dict[str, Path]
) -> None:
    started = time.time()
    stack.apply(deployment(stack, "canary", "v1", models["v1"], CANARY))
    v1 = status(until(stack, "canary", ready, 120, "v1 Ready"))["stableRevision"]
    traffic = start_traffic(stack, "canary")
    stack.apply(deployment(stack, "canary", "v2", models["v2"], CANARY))
    weights_seen: set[int] = set()

    def promoted(md: dict[str, Any]) -> bool:
        weights_seen.add(status(md).get("canaryWeight") or 0)
        return promoted_over(v1)(md)

    v2 = status(until(stack, "canary", promoted, 300, "v2 promoted"))["stableRevision"]
    assert {25, 50} <= weights_seen, weights_seen
    stack.apply(deployment(stack, "canary", "v3", models["bad"], CANARY))
    md = until(stack, "canary", rolled_back, 300, "the bad version rolled back")
    assert status(md)["stableRevision"] == v2
    assert "error-rate" in status(md)["message"], status(md)["message"]
    evidence = {m["name"]: m for m in status(md)["lastAnalysis"]["metrics"]}["error-rate"]
    assert evidence["decision"] == "fail" and evidence["lower"] >= 1.0
    # on-call takes v1 back with the kubectl plugin (an annotation underneath)
    env = {**os.environ, "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}", "KUBECONFIG": stack.kubeconfig}
    subprocess.run(["kubectl", "cutover", "rollback", "canary", "-n", stack.namespace, "--to", v1], env=env, check=True)
    md = until(stack, "canary", lambda m: status(m).get("stableRevision") == v1, 120, "the on-call rollback")
    assert any(r["action"] == "rollbackTo" for r in status(md)["handledRequests"])
    wait_until(lambda: answered_by(traffic, v1), 30, "the gateway to send traffic to v1 again")
    assert {r[1] for r in list(traffic.recent)[-50:]} == {v1}
    executive = ("Availability", "Requests", "Error budget left", "Models live", "Requests per second by model")
    executive += ("Error budget burn rate by model", "Rollout outcomes", "Verdicts acted on", "Rollouts in flight now")
    operations = ("Phase", "Decisions", "Candidate weight", "Analysis estimates and bounds", *SIDE_BY_SIDE)
    operations += ("Reconciles and errors", "Reconcile duration", "Leaders and watch restarts")
    dashboards_show_data(stack, "canary", started, {"executive": executive, "operations": operations})
    nothing_lost(traffic)


def sampled_truth(traffic: Traffic, model: Path) -> tuple[int, ...]:
    """A true class for each of ``traffic``'s bodies, drawn (seeded) from ``model``'s own
    probabilities: a world that model describes exactly, where it is calibrated and right as
    often as it is confident (about 86% for the sample classifier)."""
    rows = np.array([json.loads(body)["inputs"][0]["data"] for body in traffic.bodies()], dtype=np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"input": rows})[0].astype(np.float64)
    rng = np.random.default_rng(11)
    return tuple(int(rng.choice(len(p), p=p / p.sum())) for p in probabilities)


def test_canary_rolls_back_a_less_accurate_model_on_accuracy_alone(stack: Stack, models: dict[str, Path]) -> None:
    """Clients send the truth of each answer back; a candidate as fast and error-free as stable
    that is right less often ("shifted" agrees with stable's classes on about 70% of rows) is
    rolled back by the accuracy gate while errors and latency have nothing against it."""

    def with_feedback(version: str, model: str) -> dict[str, Any]:
        md = deployment(stack, "accuracy", version, models[model], CANARY)
        md["spec"]["feedback"] = {}
        md["spec"]["analysis"]["metrics"] += [
            {"name": "latency", "builtin": "latency", "latencyThreshold": "100ms", "passMargin": 1.0},
            {"name": "accuracy", "builtin": "accuracy", "critical": True},
        ]
        return md

    started = time.time()
    stack.apply(with_feedback("v1", "good"))
    v1 = status(until(stack, "accuracy", ready, 120, "v1 Ready"))["stableRevision"]
    stack.wait_served("accuracy")
    traffic = Traffic(stack.gateway_url, stack.api_key, "accuracy", rate=60)
    traffic.truth = sampled_truth(traffic, models["good"])
    traffic.start()
    stack.apply(with_feedback("v2", "shifted"))
    md = until(stack, "accuracy", rolled_back, 240, "the less accurate version rolled back")
    assert status(md)["stableRevision"] == v1
    evidence = {m["name"]: m for m in status(md)["lastAnalysis"]["metrics"]}
    # The lower bound is the highest ratio the test rejected (analysis/counts.py, RateRatioTest.bounds), so 1.0 is
    # already "proven worse": a rollback at the first look that rejects ratio 1 shows exactly 1.0.
    assert evidence["accuracy"]["decision"] == "fail" and evidence["accuracy"]["lower"] >= 1.0, evidence
    assert evidence["error-rate"]["decision"] != "fail" and evidence["latency"]["decision"] != "fail", evidence
    assert "critical metric accuracy failed" in status(md)["lastAnalysis"]["reason"]
    panels = tuple(f"{signal}: {role}" for signal in ("Accuracy", "Expected calibration error") for role in ROLES)
    dashboards_show_data(stack, "accuracy", started, {"operations": panels})
    nothing_lost(traffic)
    assert set(traffic.fed_back) == {200}, dict(traffic.fed_back)  # every answer's truth was taken, once
    assert traffic.answered[500] == 0


def test_blue_green_switches_all_traffic_after_the_preview_passes(stack: Stack, models: dict[str, Path]) -> None:
    strategy = {"type": "blueGreen", "blueGreen": {"autoPromotionSeconds": 10, "scaleDownDelaySeconds": 5}}
    stack.apply(deployment(stack, "bluegreen", "v1", models["v1"], strategy))
    v1 = status(until(stack, "bluegreen", ready, 120, "v1 Ready"))["stableRevision"]
    traffic = start_traffic(stack, "bluegreen")
    stack.apply(deployment(stack, "bluegreen", "v2", models["v2"], strategy))
    md = until(stack, "bluegreen", lambda m: status(m).get("candidateRevision") is not None, 60, "the preview")
    preview = [row for row in status(md)["traffic"] if row["revision"] == status(md)["candidateRevision"]]
    assert preview and preview[0]["weight"] == 0, "the preview must take no live traffic"
    v2 = status(until(stack, "bluegreen", promoted_over(v1), 300, "the switch"))["stableRevision"]
    wait_until(lambda: answered_by(traffic, v2), 30, "the gateway to send all traffic to v2")
    assert {r[1] for r in list(traffic.recent)[-50:]} == {v2}
    nothing_lost(traffic)


def test_shadow_promotes_an_agreeing_model_and_rolls_back_a_disagreeing_one(
    stack: Stack, models: dict[str, Path]
) -> None:
    strategy = {"type": "shadow", "shadow": {"mirrorPercent": 100, "minAgreement": 0.95, "duration": "20s"}}
    stack.apply(deployment(stack, "shadow", "v1", models["v1"], strategy))
    v1 = status(until(stack, "shadow", ready, 120, "v1 Ready"))["stableRevision"]
    traffic = start_traffic(stack, "shadow")
    stack.apply(deployment(stack, "shadow", "v2", models["v2"], strategy))
    until(stack, "shadow", promoted_over(v1), 300, "the agreeing model promoted")
    stack.apply(deployment(stack, "shadow", "shifted", models["shifted"], strategy))
    md = until(
        stack, "shadow", lambda m: condition(m, "RolledBack") == "True", 300, "the disagreeing model rolled back"
    )
    assert "agreement" in status(md)["message"], status(md)["message"]
    served = {r[1] for r in list(traffic.recent)}
    assert status(md)["stableRevision"] in served and len(served) <= 2  # the mirror never answered a client
    nothing_lost(traffic)


def test_ab_test_keeps_users_on_their_arm_and_promotes_the_winner(stack: Stack, models: dict[str, Path]) -> None:
    strategy = {
        "type": "abTest",
        "abTest": {
            "assignment": {"by": "hashKey", "name": "X-User-Id"},
            "candidateWeight": 50,
            "duration": "10m",
            "metric": "error-rate",
        },
    }
    stack.apply(deployment(stack, "abtest", "v1", models["bad"], strategy))
    v1 = status(until(stack, "abtest", ready, 120, "A Ready"))["stableRevision"]
    traffic = start_traffic(stack, "abtest", rate=80, users=400)
    stack.apply(deployment(stack, "abtest", "v2", models["v2"], strategy))
    md = until(stack, "abtest", lambda m: status(m).get("candidateRevision") is not None, 60, "the B arm")
    v2 = status(md)["candidateRevision"]
    until(
        stack,
        "abtest",
        lambda m: {r["revision"]: r["weight"] for r in status(m)["traffic"]}.get(v2) == 50,
        60,
        "the split",
    )
    until(stack, "abtest", promoted_over(v1), 300, "the winner promoted")
    # The split as the gateway applied it, from the answers themselves: from B's first answer
    # (nothing reached B before the gateway had the split) to A's last (after the promotion
    # nothing reaches A). Fixed margins around the status reads were wrong whenever the
    # gateway's watch or the status poll ran late on a busy machine.
    answers = [(at, revision, code, user) for at, revision, code, user in list(traffic.recent) if code < 500]
    split_from = min(at for at, revision, _, _ in answers if revision == v2)
    promoted_at = max(at for at, revision, _, _ in answers if revision == v1)
    arms: dict[str, set[str]] = {}
    for at, revision, _, user in answers:
        if split_from <= at <= promoted_at and user:
            arms.setdefault(user, set()).add(revision)
    assert len(arms) > 300, len(arms)
    assert all(len(seen) == 1 for seen in arms.values()), [u for u, seen in arms.items() if len(seen) > 1]
    on_b = sum(1 for seen in arms.values() if seen == {v2})
    assert abs(on_b - len(arms) / 2) <= 4.5 * (len(arms) / 4) ** 0.5, (on_b, len(arms))
    nothing_lost(traffic)


def test_prometheus_outage_freezes_the_rollout_until_it_is_back(stack: Stack, models: dict[str, Path]) -> None:
    stack.apply(deployment(stack, "outage", "v1", models["v1"], CANARY))
    v1 = status(until(stack, "outage", ready, 120, "v1 Ready"))["stableRevision"]
    traffic = start_traffic(stack, "outage")
    stack.apply(deployment(stack, "outage", "v2", models["v2"], CANARY))
    until(stack, "outage", lambda m: (status(m).get("canaryWeight") or 0) == 25, 120, "the first step")
    stack.stop_prometheus()
    try:
        md = until(stack, "outage", lambda m: condition(m, "AnalysisAvailable") == "False", 90, "analysis unavailable")
        frozen = (status(md)["canaryWeight"], status(md)["candidateRevision"], status(md)["stableRevision"])
        for _ in range(20):
            time.sleep(1)
            now = stack.md("outage")
            assert (
                status(now)["canaryWeight"],
                status(now)["candidateRevision"],
                status(now)["stableRevision"],
            ) == frozen
            assert condition(now, "RolledBack") != "True"
    finally:
        stack.start_prometheus()
    until(stack, "outage", promoted_over(v1), 300, "the rollout to resume and finish")
    nothing_lost(traffic)
