"""Generate CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema; the API server wants a *structural* OpenAPI v3 schema: every node
typed, no ``$ref``, no ``additionalProperties: false`` beside ``properties``, no ``type`` inside
``anyOf`` (except the int-or-string form), ``exclusiveMinimum`` as a boolean. :func:`structural`
performs that translation; :func:`crd` wraps a kind's schema with names, printer columns and
the status subresource.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .v1alpha1 import (
    AlertRuleSpec,
    AlertRuleStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    SafetyPolicySpec,
    SafetyPolicyStatus,
)
from .v1alpha1.base import DURATION_PATTERN, GROUP, VERSION
from .v1alpha1.modeldeployment import NAME_SCHEMA

_DROPPED_KEYS = {"title", "$defs", "discriminator"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline every ``$ref`` (pydantic may put a description beside one)."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in _DROPPED_KEYS}

    # Optional[X] is anyOf [X, null]: the field is simply not required.
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union of {len(branches)} types structurally: {branches}")
        return _structural({**branches[0], **node})
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[flag] = node[bound]
            node[bound] = True
    if "description" in node:
        node["description"] = " ".join(node["description"].split())
    if node.get("pattern") == DURATION_PATTERN:
        node["description"] = node.get("description", "") + " A duration such as 30s, 5m, 1h30m or 250ms."
    if node.get("type") == "object" and "properties" in node:
        node.pop("additionalProperties", None)
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
    if "default" in node:
        # The API server applies these defaults, so they must be valid wire values: unset
        # optional fields are left out, and empty containers add nothing.
        node["default"] = _without_none(node["default"])
        if node["default"] in (None, [], {}) and "properties" not in node:
            del node["default"]
    if "properties" in node:
        node["properties"] = {name: _structural(sub) for name, sub in node["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _structural(node[key])
    return node


def structural(model: type[BaseModel]) -> dict[str, Any]:
    """The model's structural OpenAPI v3 schema, as a CRD's openAPIV3Schema expects."""
    schema = model.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
    defs = schema.pop("$defs", {})
    out: dict[str, Any] = _structural(_resolve(schema, defs))
    return out


@dataclass(frozen=True)
class Column:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: tuple[Column, ...] = field(default=())
    name_schema: dict[str, Any] | None = None
    """What ``metadata.name`` must be, when the kind's children are named after it."""

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _ready(kind: str) -> Column:
    return Column("Ready", '.status.conditions[?(@.type=="Ready")].status', description=f"Whether the {kind} is ready")


AGE = Column("Age", ".metadata.creationTimestamp", "date")

KINDS: tuple[Kind, ...] = (
    Kind(
        kind="ModelDeployment",
        plural="modeldeployments",
        short_names=("md",),
        spec=ModelDeploymentSpec,
        status=ModelDeploymentStatus,
        description="A model served behind one endpoint and rolled out safely by cutover: canary, "
        "blue/green, shadow or A/B, promoted or rolled back by sequential analysis.",
        columns=(
            _ready("ModelDeployment"),
            Column("Phase", ".status.phase", description="Rollout phase"),
            Column("Stable", ".status.stableRevision", description="Revision serving live traffic"),
            Column("Candidate", ".status.candidateRevision", description="Revision being rolled out"),
            Column("Weight", ".status.canaryWeight", "integer", "Percent of traffic on the candidate"),
            AGE,
            Column("Strategy", ".spec.strategy.type", priority=1, description="Rollout strategy"),
            Column("Model", ".spec.model.name", priority=1, description="Model name"),
            Column("Version", ".spec.model.version", priority=1, description="Desired model version"),
            Column("Step", ".status.currentStepIndex", "integer", "Canary step in progress", priority=1),
            Column("Verdict", ".status.lastAnalysis.verdict", priority=1, description="Last analysis verdict"),
            Column(
                "Replicas", ".status.autoscaling.desiredReplicas", "integer", "Pods the autoscaler decided", priority=1
            ),
            Column("Message", ".status.message", priority=1, description="What is happening"),
        ),
        name_schema=NAME_SCHEMA,
    ),
    Kind(
        kind="SafetyPolicy",
        plural="safetypolicies",
        short_names=("sp",),
        spec=SafetyPolicySpec,
        status=SafetyPolicyStatus,
        description="Content filters applied on the serving path (crisis detection, toxicity, PII, "
        "unauthorised advice), exported as metrics and usable as promotion gates.",
        columns=(
            _ready("SafetyPolicy"),
            Column("Deployments", ".status.deployments", description="ModelDeployments that reference the policy"),
            Column("Crisis", ".spec.crisis.action", description="Crisis action"),
            Column("Toxicity", ".spec.toxicity.action", description="Toxicity action"),
            Column("PII", ".spec.pii.action", description="PII action"),
            AGE,
            Column("Advice", ".spec.advice.action", priority=1, description="Advice action"),
            Column("Bias", ".spec.bias.action", priority=1, description="Bias action"),
            Column(
                "Reason",
                '.status.conditions[?(@.type=="Ready")].reason',
                priority=1,
                description="Why the policy is (not) ready",
            ),
        ),
    ),
    Kind(
        kind="AlertRule",
        plural="alertrules",
        short_names=("ar",),
        spec=AlertRuleSpec,
        status=AlertRuleStatus,
        description="An alert bound to ModelDeployments with notifications and an action, evaluated "
        "by cutover itself and rendered as a PrometheusRule where that CRD exists.",
        columns=(
            Column("State", ".status.state", description="Inactive, Pending, Firing or Silenced"),
            Column("Firing", ".status.firing", "integer", "Instances firing"),
            Column("Severity", ".spec.severity", description="Severity"),
            Column("Action", ".spec.action", description="What cutover does when it fires"),
            AGE,
            Column("Target", ".spec.target.name", priority=1, description="Target ModelDeployment"),
            Column("Metric", ".spec.metric.builtin", priority=1, description="Builtin metric"),
            Column("Fired", ".status.firedAt", "date", "When it last fired", priority=1),
        ),
    ),
)


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name, "labels": {"app.kubernetes.io/part-of": "cutover"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["cutover"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.wire() for c in kind.columns],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "cutover.dev/v1alpha1"},
                                "kind": {"type": "string", "description": kind.kind},
                                "metadata": {"type": "object"}
                                | ({"properties": {"name": kind.name_schema}} if kind.name_schema else {}),
                                "spec": structural(kind.spec),
                                "status": structural(kind.status),
                            },
                        }
                    },
                }
            ],
        },
    }


def render(kind: Kind) -> str:
    header = "# Generated by `cutover crds` from cutover.api.v1alpha1; do not edit.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=120)


def write(directory: Path) -> list[Path]:
    """Write one YAML file per kind into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in KINDS:
        path = directory / f"{GROUP}_{kind.plural}.yaml"
        path.write_text(render(kind))
        paths.append(path)
    return paths
