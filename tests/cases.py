"""Invalid resources, each rejected by the pydantic models and by the generated CRD.

Every case starts from a valid file in examples/ and breaks one thing. ``message`` is what a
platform engineer reads: for CEL rules the same text comes from pydantic and from the API
server; for plain schema constraints the two phrase it differently, so ``server`` overrides.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DELETE = object()


@dataclass(frozen=True)
class Case:
    id: str
    example: str
    patch: dict[str, Any]
    message: str
    server: str | None = None

    @property
    def server_message(self) -> str:
        return self.server or self.message

    def document(self) -> dict[str, Any]:
        doc = copy.deepcopy(load(self.example))
        for path, value in self.patch.items():
            *parents, last = path.split(".")
            node: Any = doc
            for key in parents:
                node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
            if value is DELETE:
                del node[last]
            elif isinstance(node, list):
                node[int(last)] = value
            else:
                node[last] = value
        return doc


def load(example: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / example).read_text())
    return doc


CANARY = "modeldeployment-canary.yaml"
GPU = "modeldeployment-gpu-mig.yaml"
SHADOW = "modeldeployment-shadow.yaml"
AB = "modeldeployment-abtest.yaml"
BG = "modeldeployment-bluegreen.yaml"
SP = "safetypolicy.yaml"
AR = "alertrule.yaml"

CASES = [
    # A name the CRD accepts as any object's (253 characters, dots, a digit first) but that its
    # Services cannot be named after: <name>-<revision>-baseline is a DNS-1035 label of <= 63.
    Case("name-too-long", CANARY, {"metadata.name": "m" * 44}, "at most 43 characters", server="Too long"),
    Case("name-with-a-dot", CANARY, {"metadata.name": "fraud.v2"}, "should match pattern", server="should match"),
    Case(
        "name-begins-with-a-digit", CANARY, {"metadata.name": "2fraud"}, "should match pattern", server="should match"
    ),
    Case(
        "strategy-block-missing",
        CANARY,
        {"spec.strategy.canary": DELETE},
        "strategy.canary must be set exactly when strategy.type is canary",
    ),
    Case(
        "strategy-two-blocks",
        CANARY,
        {"spec.strategy.blueGreen": {}},
        "strategy.blueGreen must be set exactly when strategy.type is blueGreen",
    ),
    Case(
        "strategy-unknown-type",
        CANARY,
        {"spec.strategy.type": "rolling"},
        "Input should be 'canary', 'blueGreen', 'shadow' or 'abTest'",
        server='Unsupported value: "rolling"',
    ),
    Case(
        "step-two-actions",
        CANARY,
        {"spec.strategy.canary.steps.0.pause": {"duration": "1m"}},
        "each canary step sets exactly one of setWeight, pause or analysis",
    ),
    Case(
        "step-no-action",
        CANARY,
        {"spec.strategy.canary.steps.0": {}},
        "each canary step sets exactly one of setWeight, pause or analysis",
    ),
    Case(
        "weights-decrease",
        CANARY,
        {"spec.strategy.canary.steps.4.setWeight": 10},
        "canary setWeight values must not decrease from one step to the next",
    ),
    Case(
        "weight-over-100",
        CANARY,
        {"spec.strategy.canary.steps.4.setWeight": 150},
        "less than or equal to 100",
        server="should be less than or equal to 100",
    ),
    Case(
        "no-steps",
        CANARY,
        {"spec.strategy.canary.steps": []},
        "at least 1 item",
        server="should have at least 1 items",
    ),
    Case(
        "baseline-weight-over-50",
        GPU,
        {"spec.strategy.canary.steps.2.setWeight": 60},
        "with baseline pods the candidate and the baseline take equal shares, so setWeight may be at most 50",
    ),
    Case(
        "mig-without-gpu",
        GPU,
        {"spec.runtime.gpu.count": 0},
        "a MIG profile requires a GPU: set gpu.count to at least 1",
    ),
    Case(
        "mig-profile-malformed",
        GPU,
        {"spec.runtime.gpu.migProfile": "1g-10gb"},
        "should match pattern",
        server="should match",
    ),
    Case(
        "autoscaling-min-over-max",
        GPU,
        {"spec.runtime.autoscaling.minReplicas": 8},
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    ),
    Case(
        "toleration-exists-with-value",
        GPU,
        {"spec.runtime.tolerations.0.operator": "Exists"},
        "a toleration with operator Exists must not set value",
    ),
    Case("alpha-half", CANARY, {"spec.analysis.alpha": 0.5}, "less than 0.5", server="should be less than 0.5"),
    Case("alpha-zero", CANARY, {"spec.analysis.alpha": 0}, "greater than 0", server="should be greater than 0"),
    Case(
        "duration-in-words",
        CANARY,
        {"spec.analysis.interval": "30 seconds"},
        "should match pattern",
        server="should match",
    ),
    Case(
        "duration-beyond-any-clock",
        CANARY,
        {"spec.analysis.postPromotion.duration": "90000000h"},
        "should match pattern",
        server="should match",
    ),
    Case(
        "min-duration-below-interval",
        CANARY,
        {"spec.analysis.minDuration": "10s"},
        "analysis.minDuration must be at least one analysis.interval",
    ),
    Case(
        "onnx-without-storage",
        CANARY,
        {"spec.model.storageUri": DELETE},
        "storageUri is required for formats onnx, pytorch and tensorflow",
    ),
    Case(
        "tensorflow-without-storage",
        CANARY,
        {"spec.model.format": "tensorflow", "spec.model.storageUri": DELETE},
        "storageUri is required for formats onnx, pytorch and tensorflow",
    ),
    Case(
        "tensorflow-over-http",
        SHADOW,
        {"spec.model.format": "tensorflow"},
        "format tensorflow serves a SavedModel directory, which has no single checksum",
    ),
    Case(
        "tensorflow-with-checksum",
        CANARY,
        {"spec.model.format": "tensorflow", "spec.model.checksum": "sha256:" + "0" * 64},
        "format tensorflow serves a SavedModel directory, which has no single checksum",
    ),
    Case(
        "llm-without-upstream",
        AB,
        {"spec.model.upstream": DELETE},
        "upstream is required for formats triton and llm",
    ),
    Case(
        "cache-for-llm",
        AB,
        {"spec.runtime.cache": {"maxEntries": 1000}},
        "runtime.cache cannot be used with format llm",
    ),
    Case("cache-ttl-zero", GPU, {"spec.runtime.cache.ttl": "0s"}, "cache.ttl must be longer than 0s"),
    Case(
        "explain-timeout-too-long",
        GPU,
        {"spec.runtime.explain.timeout": "10m"},
        "explain.timeout must be longer than 0s and at most 5m",
    ),
    Case(
        "explain-sample-rate-for-llm",
        AB,
        {"spec.runtime.explain": {"sampleRate": 0.1}},
        "runtime.explain.sampleRate needs a model the pod runs itself",
    ),
    Case(
        "explain-sample-rate-while-off",
        GPU,
        {"spec.runtime.explain": {"enabled": False, "sampleRate": 0.1}},
        "explain.sampleRate needs explain.enabled",
    ),
    Case(
        "attribution-shift-without-sampling",
        CANARY,
        {"spec.analysis.metrics.0": {"name": "reasons", "builtin": "attributionShift", "thresholdRange": {"max": 0.2}}},
        "builtin attributionShift compares the rows each revision explains in the background",
    ),
    Case(
        "attribution-shift-without-limit",
        CANARY,
        {
            "spec.analysis.metrics.0": {"name": "reasons", "builtin": "attributionShift"},
            "spec.runtime.explain": {"sampleRate": 0.1},
        },
        "builtin attributionShift is judged against a limit",
    ),
    Case(
        "explain-sample-rate-above-one",
        GPU,
        {"spec.runtime.explain.sampleRate": 1.5},
        "less than or equal to 1",
        server="should be less than or equal to 1",
    ),
    Case(
        "cache-without-entries",
        GPU,
        {"spec.runtime.cache.maxEntries": 0},
        "greater than or equal to 1",
        server="should be greater than or equal to 1",
    ),
    Case(
        "http-without-checksum",
        SHADOW,
        {"spec.model.checksum": DELETE},
        "an http(s) storageUri needs a checksum (sha256:<hex>) so a changed file is never served",
    ),
    Case(
        "model-name-uppercase",
        CANARY,
        {"spec.model.name": "Fraud_Scorer"},
        "should match pattern",
        server="should match",
    ),
    Case(
        "ood-input-unknown",
        CANARY,
        {"spec.model.outOfDistribution.input": "pixels"},
        "outOfDistribution.input must name one of model.inputs",
    ),
    Case(
        "input-range-inverted",
        CANARY,
        {"spec.model.inputs.0.range": {"min": 5, "max": -5}},
        "range.min must not exceed range.max",
    ),
    Case(
        "metric-builtin-and-query",
        CANARY,
        {"spec.analysis.metrics.0.prometheus": {"events": "sum(x)", "total": "sum(y)"}},
        "a metric sets exactly one of builtin or prometheus",
    ),
    Case(
        "latency-without-threshold",
        CANARY,
        {"spec.analysis.metrics.1.latencyThreshold": DELETE},
        "latencyThreshold is required for builtin latency and only allowed there",
    ),
    Case(
        "latency-threshold-not-a-bucket-edge",
        CANARY,
        {"spec.analysis.metrics.1.latencyThreshold": "300ms"},
        "latencyThreshold must be a bucket edge of the latency histograms: 1ms, 5ms, 10ms, 25ms, 50ms, 100ms, "
        "250ms, 500ms, 1s, 2500ms, 5s, 10s, 30s",
    ),
    Case(
        "metric-names-repeat",
        CANARY,
        {"spec.analysis.metrics.1.name": "error-rate"},
        "analysis metric names must be unique",
    ),
    Case(
        "threshold-range-inverted",
        CANARY,
        {"spec.analysis.metrics.0.thresholdRange": {"min": 0.2, "max": 0.1}},
        "thresholdRange.min must not exceed thresholdRange.max",
    ),
    Case(
        "abtest-metric-unknown",
        AB,
        {"spec.strategy.abTest.metric": "conversion"},
        "strategy.abTest.metric must name one of analysis.metrics",
    ),
    Case(
        "abtest-weight-100",
        AB,
        {"spec.strategy.abTest.candidateWeight": 100},
        "less than or equal to 99",
        server="should be less than or equal to 99",
    ),
    Case(
        "replicas-provider-shadow",
        SHADOW,
        {"spec.traffic.provider": "replicas"},
        "traffic.provider replicas can neither mirror nor pin clients",
    ),
    Case(
        "replicas-provider-canary-baseline",
        CANARY,
        {"spec.traffic.provider": "replicas", "spec.strategy.canary.baseline": True},
        "canary baseline pods need routed traffic",
    ),
    Case(
        "gatewayapi-without-routes",
        SHADOW,
        {"spec.traffic.provider": "gatewayAPI"},
        "traffic.gatewayAPI must be set exactly when traffic.provider is gatewayAPI",
    ),
    Case(
        "gatewayapi-hash-key",
        AB,
        {"spec.traffic": {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "web"}]}}},
        "gatewayAPI routes cannot hash a key",
    ),
    Case(
        "bluegreen-delay-without-auto",
        BG,
        {"spec.strategy.blueGreen.autoPromotionEnabled": False},
        "autoPromotionSeconds has no effect when autoPromotionEnabled is false",
    ),
    Case(
        "policy-without-filters",
        SP,
        {"spec": {"failClosed": True}},
        "a SafetyPolicy needs at least one filter: crisis, toxicity, pii, advice or bias",
    ),
    Case(
        "bias-category-repeated",
        SP,
        {"spec.bias.categories": ["gender", "age", "gender"]},
        "bias categories must not repeat",
    ),
    Case(
        "bias-category-unknown",
        SP,
        {"spec.bias.categories": ["gender", "height"]},
        "Input should be 'raceEthnicity'",
        server='Unsupported value: "height"',
    ),
    Case(
        "bias-threshold-negative",
        SP,
        {"spec.bias.threshold": -0.1},
        "greater than or equal to 0",
        server="should be greater than or equal to 0",
    ),
    Case(
        "crisis-escalate-nowhere",
        SP,
        {"spec.crisis.escalationWebhook": DELETE},
        "crisis action escalate needs an escalationWebhook to escalate to",
    ),
    Case(
        "webhook-url-and-secret",
        SP,
        {"spec.crisis.escalationWebhook.url": "https://pager.example.com/hook"},
        "a webhook sets exactly one of url or urlSecretRef",
    ),
    Case(
        "notification-url-and-secret",
        AR,
        {"spec.notifications.1.urlSecretRef": {"name": "hooks", "key": "incident"}},
        "a webhook sets exactly one of url or urlSecretRef",
    ),
    Case(
        "toxicity-threshold-over-1",
        SP,
        {"spec.toxicity.threshold": 1.5},
        "less than or equal to 1",
        server="should be less than or equal to 1",
    ),
    Case(
        "alert-target-both",
        AR,
        {"spec.target.name": "fraud-scorer"},
        "target sets exactly one of name or selector",
    ),
    Case(
        "alert-selector-empty",
        AR,
        {"spec.target.selector": {"matchLabels": {}}},
        "a selector needs at least one of matchLabels or matchExpressions",
    ),
    Case(
        "alert-metric-neither",
        AR,
        {"spec.metric.builtin": DELETE},
        "metric sets exactly one of builtin or query",
    ),
    Case(
        "alert-repeat-max-below-interval",
        AR,
        {"spec.repeat.maxInterval": "1m"},
        "repeat.maxInterval must be at least repeat.interval",
    ),
    Case(
        "maintenance-window-mixed",
        AR,
        {"spec.maintenanceWindows.0.start": "2026-12-01T00:00:00Z"},
        "a maintenance window is either start and end, or schedule and duration",
    ),
    Case(
        "maintenance-window-backwards",
        AR,
        {"spec.maintenanceWindows.0": {"start": "2026-12-01T04:00:00Z", "end": "2026-12-01T02:00:00Z"}},
        "a maintenance window must end after it starts",
    ),
    Case(
        "alert-relative-fallback",
        AR,
        {"spec.action": "fallback"},
        "an alert relative to stable compares a rollout's candidate",
    ),
    Case(
        "alert-for-zero",
        AR,
        {"spec.for": 0},
        "greater than or equal to 1",
        server="should be greater than or equal to 1",
    ),
    Case(
        "accuracy-without-feedback",
        CANARY,
        {"spec.analysis.metrics.2": {"name": "accuracy", "builtin": "accuracy"}},
        "builtin accuracy and calibrationError read ground-truth feedback: set spec.feedback",
    ),
    Case(
        "calibration-without-limit",
        CANARY,
        {"spec.feedback": {}, "spec.analysis.metrics.2": {"name": "ece", "builtin": "calibrationError"}},
        "builtin calibrationError is judged against a limit: set thresholdRange.max",
    ),
    Case(
        "feedback-without-gateway",
        CANARY,
        {"spec.feedback": {}, "spec.traffic": {"provider": "replicas"}},
        "spec.feedback needs traffic.provider gateway",
    ),
    Case(
        "accuracy-of-a-shadow",
        SHADOW,
        {"spec.feedback": {}, "spec.analysis.metrics": [{"name": "accuracy", "builtin": "accuracy"}]},
        "a shadow candidate's answers never reach clients",
    ),
]
