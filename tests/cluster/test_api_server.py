"""The generated CRDs on a real API server: accepted, examples admitted, invalid specs refused
with the CEL message, and readable through kubectl."""

from __future__ import annotations

import pytest

from tests.support.kubectl import Kube

from ..cases import CASES, EXAMPLES, Case, load

pytestmark = pytest.mark.cluster
EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def test_crds_are_established(kube: Kube) -> None:
    for plural in ("modeldeployments", "safetypolicies", "alertrules"):
        crd = kube.json("get", "crd", f"{plural}.cutover.dev")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_is_admitted(kube: Kube, namespace: str, name: str) -> None:
    doc = load(name)
    doc["metadata"].pop("namespace")
    kube.apply(doc, namespace=namespace)
    stored = kube.json("get", f"{doc['kind'].lower()}.cutover.dev", doc["metadata"]["name"], "-n", namespace)
    # Nothing the user wrote was pruned; the server only added defaults.
    assert set(doc["spec"]) <= set(stored["spec"])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_spec_is_refused_with_its_message(kube: Kube, namespace: str, case: Case) -> None:
    doc = case.document()
    doc["metadata"].pop("namespace")
    done = kube.apply(doc, namespace=namespace, check=False, dry_run=True)
    assert done.returncode != 0, f"the API server admitted {case.id}"
    assert case.server_message in done.stderr


def test_model_name_cannot_change(kube: Kube, namespace: str) -> None:
    doc = load("modeldeployment-canary.yaml")
    doc["metadata"].pop("namespace")
    kube.apply(doc, namespace=namespace)
    doc["spec"]["model"]["name"] = "another-model"
    done = kube.apply(doc, namespace=namespace, check=False)
    assert done.returncode != 0
    assert "model.name cannot change" in done.stderr


def test_defaults_are_filled_in_by_the_server(kube: Kube, namespace: str) -> None:
    doc = load("modeldeployment-shadow.yaml")
    doc["metadata"].pop("namespace")
    kube.apply(doc, namespace=namespace)
    spec = kube.json("get", "md", doc["metadata"]["name"], "-n", namespace)["spec"]
    assert spec["analysis"]["alpha"] == 0.01
    assert spec["analysis"]["metrics"][0]["builtin"] == "errorRate"
    assert spec["progressDeadlineSeconds"] == 3600


def test_kubectl_explain_reads_the_field_docs(kube: Kube) -> None:
    out = kube.run("explain", "modeldeployment.spec.strategy").stdout
    assert "How a new revision replaces the stable one." in out
    assert "surge" in out and "blueGreen" in out


def test_short_names_category_and_columns(kube: Kube, namespace: str) -> None:
    for name in ("modeldeployment-canary.yaml", "safetypolicy.yaml", "alertrule.yaml"):
        doc = load(name)
        doc["metadata"].pop("namespace")
        kube.apply(doc, namespace=namespace)
    listing = kube.run("get", "cutover", "-n", namespace).stdout
    assert "modeldeployment.cutover.dev/fraud-scorer" in listing
    assert "safetypolicy.cutover.dev/consumer-chat" in listing
    assert "alertrule.cutover.dev/risk-models-error-regression" in listing
    header = kube.run("get", "md", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert header[:7] == ["NAME", "READY", "PHASE", "STABLE", "CANDIDATE", "WEIGHT", "AGE"]
    assert "VERDICT" in header
