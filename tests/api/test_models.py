"""The API models and the CRDs generated from them, without a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from cutover.api import crd
from cutover.api.v1alpha1 import AlertRule, ModelDeployment, SafetyPolicy, seconds

from ..cases import CASES, EXAMPLES, Case, load

REPO = Path(__file__).resolve().parents[2]
MODELS = {"ModelDeployment": ModelDeployment, "SafetyPolicy": SafetyPolicy, "AlertRule": AlertRule}
EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def schema_of(kind: str) -> dict[str, Any]:
    definition = next(crd.crd(k) for k in crd.KINDS if k.kind == kind)
    schema: dict[str, Any] = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_every_kind_and_strategy_has_an_example() -> None:
    docs = [load(name) for name in EXAMPLE_FILES]
    assert {d["kind"] for d in docs} == set(MODELS)
    strategies = {d["spec"]["strategy"]["type"] for d in docs if d["kind"] == "ModelDeployment"}
    assert strategies == {"canary", "blueGreen", "shadow", "abTest"}
    assert any(
        d["spec"].get("runtime", {}).get("gpu", {}).get("migProfile") for d in docs if d["kind"] == "ModelDeployment"
    )


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_validates_through_models_and_schema(name: str) -> None:
    doc = load(name)
    parsed = MODELS[doc["kind"]].model_validate(doc)
    assert parsed.metadata.name == doc["metadata"]["name"]
    jsonschema.Draft4Validator(schema_of(doc["kind"])).validate(doc)
    # What the operator writes back parses again to the same object.
    assert type(parsed).model_validate(parsed.wire()) == parsed


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_spec_rejected_by_models(case: Case) -> None:
    doc = case.document()
    with pytest.raises(ValidationError) as err:
        MODELS[doc["kind"]].model_validate(doc)
    assert case.message in str(err.value)


def test_at_least_twenty_distinct_invalid_specs() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 20


SCHEMA_CASES = [c for c in CASES if c.server is not None]


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=[c.id for c in SCHEMA_CASES])
def test_schema_constraint_rejected_by_generated_schema(case: Case) -> None:
    """Constraints that are plain OpenAPI (not CEL) are checked offline here, and by the API
    server in tests/cluster."""
    doc = case.document()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema_of(doc["kind"])).validate(doc)


def test_every_rule_is_in_the_crd_as_cel() -> None:
    from cutover.api.v1alpha1.base import ApiModel

    def subclasses(cls: type) -> list[type]:
        return [s for c in cls.__subclasses__() for s in (c, *subclasses(c))]

    def cel(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [v["rule"] for v in node.get("x-kubernetes-validations", [])]
            return own + [r for v in node.values() for r in cel(v)]
        if isinstance(node, list):
            return [r for v in node for r in cel(v)]
        return []

    in_crds = {r for k in crd.KINDS for r in cel(crd.crd(k))}
    rules = [r for cls in subclasses(ApiModel) for r in cls.__dict__.get("rules", ())]
    assert len(rules) >= 30
    assert {r.cel for r in rules} <= in_crds
    # Inherited rules are emitted too: a Notification is a Webhook and obeys its rule.
    notification = crd.structural(crd.KINDS[2].spec)["properties"]["notifications"]["items"]
    assert "has(self.url) != has(self.urlSecretRef)" in [v["rule"] for v in notification["x-kubernetes-validations"]]


def test_committed_crds_match_the_models() -> None:
    for kind in crd.KINDS:
        path = REPO / "crds" / f"cutover.dev_{kind.plural}.yaml"
        assert path.read_text() == crd.render(kind), f"{path} is stale: run `make crds`"
        chart = REPO / "charts" / "cutover" / "crds" / path.name
        assert chart.read_text() == crd.render(kind), f"{chart} is stale: run `make crds`"


def test_crd_is_structural() -> None:
    """Every schema node has a type (the API server rejects the CRD otherwise)."""

    def walk(node: dict[str, Any], path: str) -> list[str]:
        bad = []
        special = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        if "type" not in node and not special:
            bad.append(path)
        if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
            bad.append(path + " (anyOf)")
        for name, sub in node.get("properties", {}).items():
            bad += walk(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                bad += walk(node[key], f"{path}[{key}]")
        return bad

    for kind in crd.KINDS:
        assert walk(schema_of(kind.kind), kind.kind) == []


def test_crd_names_columns_and_status() -> None:
    md = crd.crd(crd.KINDS[0])
    names = md["spec"]["names"]
    assert names["shortNames"] == ["md"] and names["categories"] == ["cutover"]
    version = md["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Phase", "Stable", "Candidate", "Weight", "Age"} <= {
        n for n, c in columns.items() if "priority" not in c
    }
    assert columns["Verdict"]["priority"] == 1
    assert [k.short_names for k in crd.KINDS] == [("md",), ("sp",), ("ar",)]


def test_field_docs_become_descriptions() -> None:
    strategy = schema_of("ModelDeployment")["properties"]["spec"]["properties"]["strategy"]
    assert strategy["description"] == "How a new revision replaces the stable one."
    assert "exactly the block" in strategy["properties"]["type"]["description"]
    interval = schema_of("ModelDeployment")["properties"]["spec"]["properties"]["analysis"]["properties"]["interval"]
    assert interval["description"].startswith("How often metrics are read") and "30s, 5m" in interval["description"]


def test_defaults_are_applied_like_the_api_server() -> None:
    md = ModelDeployment.model_validate(load("modeldeployment-shadow.yaml"))
    assert md.spec.analysis.alpha == 0.01
    assert [m.builtin for m in md.spec.analysis.metrics] == ["errorRate"]
    assert md.spec.traffic.provider == "gateway"
    spec = schema_of("ModelDeployment")["properties"]["spec"]["properties"]
    assert spec["traffic"]["default"] == {"provider": "gateway"}
    assert spec["analysis"]["default"]["metrics"][0]["builtin"] == "errorRate"


def test_model_name_is_immutable() -> None:
    old = ModelDeployment.model_validate(load("modeldeployment-canary.yaml")).spec
    renamed = old.model_copy(update={"model": old.model.model_copy(update={"name": "other"})})
    assert renamed.transition_errors(old) == [
        "model.name cannot change: it is the endpoint clients call; create a new ModelDeployment for a different model"
    ]
    bumped = old.model_copy(update={"model": old.model.model_copy(update={"version": "v2"})})
    assert bumped.transition_errors(old) == []


@pytest.mark.parametrize(("text", "expected"), [("30s", 30), ("1h30m", 5400), ("250ms", 0.25), ("2m5s", 125)])
def test_durations(text: str, expected: float) -> None:
    assert seconds(text) == expected


def test_duration_in_words_is_refused() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        seconds("five minutes")


def test_wire_form_is_camel_case() -> None:
    md = ModelDeployment.model_validate(load("modeldeployment-canary.yaml"))
    wire = md.wire()
    assert "storageUri" in wire["spec"]["model"] and "storage_uri" not in wire["spec"]["model"]
    assert wire["spec"]["progressDeadlineSeconds"] == 3600
    assert AlertRule.model_validate(load("alertrule.yaml")).wire()["spec"]["for"] == 3
