"""SafetyPolicy as a promotion gate, end to end on the stack `make demo` runs
(tests/e2e/test_full_stack.py): the real control plane, the real operator (its SafetyPolicy
controller renders the policy as a ConfigMap), the runner materialising it into each serving
process (`cutover serve --safety-policy`), the real toxicity filter scoring every answer, real
Prometheus scraping the counts, and the rollout analysis deciding from them.

An ``llm`` ModelDeployment forwards chat to a sample OpenAI-compatible upstream with scripted
personas: a polite one (one answer in ten is rude, as a real assistant's occasionally is) and a
rude one (every other answer insults the user). The SafetyPolicy flags toxicity on outputs (so
answers still flow and are counted), and the rollout's only gate is a critical
``safetyViolations``: a second polite version is promoted; a rude version is rolled back, with
its numbers in status and the same proportions in Prometheus. A changed policy then reaches the
running stable process without a restart or a new revision, and its metrics name the generation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.devstack import Stack, Traffic
from tests.support.waiting import wait_until

from .receivers import ChatUpstream
from .test_full_stack import (
    CANARY,
    answered_by,
    condition,
    dashboards_show_data,
    deployment,
    nothing_lost,
    promoted_over,
    ready,
    rolled_back,
    stack,
    status,
    until,
)

__all__ = ["stack"]  # the fixture, shared with the full-stack tests

pytestmark = pytest.mark.cluster

HELPFUL = (
    'Of course! Here is a short note: "Thank you all for the effort this quarter, it really showed."',
    "A steady routine helps: thirty minutes of listening practice a day, and a weekly conversation partner.",
    "I'm sorry it's late. Check the tracking link in your confirmation email; if it hasn't moved in three days, "
    "contact support with your order number.",
    "Elizabeth Bennet and Mr Darcy misjudge each other, slowly learn better, and end up married.",
    'Click "Forgot password" on the sign-in page and follow the link we email you.',
    "Research the company, prepare two or three stories about your work, and bring questions of your own.",
    "A list can be changed after it is made; a tuple cannot, which is why a tuple can be a dictionary key.",
    "How about a chickpea and spinach curry with rice and a cucumber raita? It's cheap and filling.",
    "That interview advice applies double if you're nervous: practise out loud, it really does help.",
)
RUDE = (
    "Honestly, that's a stupid question. Figure it out yourself, idiot.",
    "You're a complete idiot for asking this. Look it up yourself.",
    "Nobody cares about your order, stop whining and wait like everyone else, you moron.",
    "What a pathetic question. Are you really this dumb?",
    "Shut up and read the manual, you useless clown.",
)
PERSONAS = {
    "polite": [*HELPFUL, RUDE[0]],  # 1 in 10 flagged
    "rude": [line for pair in zip(HELPFUL, RUDE, strict=False) for line in pair],  # 1 in 2 flagged
}
POLICY = "assistant-safety"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ChatUpstream]:
    running = ChatUpstream(PERSONAS).start()
    yield running
    running.stop()


def safety_policy(stack: Stack, threshold: float = 0.8) -> dict[str, Any]:
    return {
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "SafetyPolicy",
        "metadata": {"name": POLICY, "namespace": stack.namespace},
        "spec": {"toxicity": {"threshold": threshold, "action": "flag", "scope": "outputs"}, "failClosed": True},
    }


def policy_generations(stack: Stack, revision: str) -> set[tuple[str, str]]:
    """(policy, generation) that ``revision``'s serving process says it applies, as scraped."""
    where = f'namespace="{stack.namespace}",model="assistant",revision="{revision}"'
    found = stack.prometheus.query(f"cutover_safety_policy_info{{{where}}} == 1")
    return {(row["metric"]["policy"], row["metric"]["generation"]) for row in found}


def assistant(stack: Stack, version: str, upstream: ChatUpstream, persona: str) -> dict[str, Any]:
    """The chat assistant at ``version``, answering as ``persona``; its only gate is safety."""
    doc = deployment(stack, "assistant", version, Path("unused: an llm model has no file"), CANARY)
    doc["spec"]["model"] = {
        "name": "assistant",
        "version": version,
        "format": "llm",
        "upstream": {"url": upstream.base(persona, version), "model": persona},
    }
    doc["spec"]["safetyPolicyRef"] = {"name": POLICY}
    doc["spec"]["analysis"]["minSamples"] = 200
    doc["spec"]["analysis"]["metrics"] = [
        {"name": "safety", "builtin": "safetyViolations", "critical": True, "passMargin": 1.0}
    ]
    return doc


def output_counts(stack: Stack, revision: str) -> tuple[float, float]:
    """(violations, checks) on ``revision``'s answers, as Prometheus last scraped them (its
    process may be gone: last_over_time reads past the staleness marker)."""
    where = f'namespace="{stack.namespace}",model="assistant",revision="{revision}",scope="output"'
    found = []
    for series in ("cutover_safety_violations_total", "cutover_safety_checks_total"):
        vector = stack.prometheus.query(f"sum(last_over_time({series}{{{where}}}[10m]))")
        found.append(float(vector[0]["value"][1]) if vector else 0.0)
    return found[0], found[1]


def test_safety_violations_gate_promotes_a_polite_model_and_rolls_back_a_rude_one(
    stack: Stack, upstream: ChatUpstream
) -> None:
    started = time.time()
    stack.apply(safety_policy(stack))
    stack.apply(assistant(stack, "v1", upstream, "polite"))
    md = until(stack, "assistant", lambda m: ready(m) and condition(m, "SafetyPolicyReady") == "True", 120, "v1 Ready")
    v1 = status(md)["stableRevision"]
    policy = stack.kube.json("get", "safetypolicy", POLICY, "-n", stack.namespace)
    assert condition(policy, "Ready") == "True", policy.get("status")
    stack.wait_served("assistant", chat=True)
    traffic = Traffic(stack.gateway_url, stack.api_key, "assistant", rate=40, chat=True)
    traffic.start()

    # A second polite version: as clean as stable, so the gate proves it and it is promoted.
    stack.apply(assistant(stack, "v2", upstream, "polite"))
    md = until(stack, "assistant", promoted_over(v1), 300, "the polite v2 promoted")
    v2 = status(md)["stableRevision"]
    assert upstream.answered("polite", "v2") > 0
    [passed] = [m for m in status(md)["lastAnalysis"]["metrics"] if m["name"] == "safety"]
    assert passed["decision"] == "pass" and 0.5 <= passed["estimate"] <= 2.0, passed

    # A rude version: five times stable's rate of flagged answers, rolled back with the numbers.
    stack.apply(assistant(stack, "v3", upstream, "rude"))
    md = until(stack, "assistant", lambda m: bool(status(m).get("candidateRevision")), 60, "the rude candidate")
    v3 = status(md)["candidateRevision"]
    md = until(stack, "assistant", rolled_back, 300, "the rude v3 rolled back")
    assert status(md)["stableRevision"] == v2 and not status(md).get("candidateRevision")
    assert "safety" in status(md)["message"], status(md)["message"]
    [failed] = [m for m in status(md)["lastAnalysis"]["metrics"] if m["name"] == "safety"]
    # the lower bound is the highest ratio rejected: 1.0 itself already proves the candidate worse
    assert failed["decision"] == "fail" and failed["lower"] >= 1.0, failed
    assert 2.5 <= failed["estimate"] <= 10, failed  # 1 in 2 answers flagged against 1 in 10
    assert failed["candidateSamples"] > 0 and failed["baselineSamples"] > 0, failed
    assert "safety violations per trial" in failed["reason"], failed
    # What Prometheus holds agrees: about half the rude version's answers flagged, a tenth of stable's.
    violations, checks = output_counts(stack, v3)
    assert checks > 0 and 0.3 <= violations / checks <= 0.7, (violations, checks)
    violations, checks = output_counts(stack, v2)
    assert checks > 0 and violations / checks <= 0.2, (violations, checks)
    wait_until(lambda: answered_by(traffic, v2), 30, "the gateway to send all traffic to v2 again")
    safety = ("Violations by filter and category", "Share of checked requests that violated", "Filter latency")
    safety += ("Violations by filter: stable", "Violations by filter: candidate", "Policy applied")
    dashboards_show_data(stack, "assistant", started, {"safety": safety})

    # A changed policy reaches the running stable process through its volume, under traffic:
    # the metrics name the new generation, with no new revision and no restart.
    before = stack.kube.json("get", "safetypolicy", POLICY, "-n", stack.namespace)["metadata"]["generation"]
    assert {generation for _, generation in policy_generations(stack, v2)} == {str(before)}
    stack.apply(safety_policy(stack, threshold=0.9))
    after = stack.kube.json("get", "safetypolicy", POLICY, "-n", stack.namespace)["metadata"]["generation"]
    assert after > before
    wait_until(
        lambda: {generation for _, generation in policy_generations(stack, v2)} == {str(after)},
        60,
        f"revision {v2} to answer under policy generation {after}",
        0.5,
        detail=lambda: str(policy_generations(stack, v2)),
    )
    assert all(POLICY in policy for policy, _ in policy_generations(stack, v2))
    md = stack.md("assistant")
    assert status(md)["stableRevision"] == v2 and not status(md).get("candidateRevision")
    where = f'namespace="{stack.namespace}",model="assistant",revision="{v2}"'
    restarts = stack.prometheus.query(f"sum(resets(cutover_serving_requests_total{{{where}}}[10m]))")
    assert restarts and float(restarts[0]["value"][1]) == 0, restarts  # its counters never went back to 0
    # The answers still reached the client (the action is flag), and nothing was lost.
    nothing_lost(traffic)
