"""The chart's optional default AlertRules (values ``defaultAlertRules``): off by default; on, valid
AlertRules from the product brief's thresholds, over series the contract names, each linked to a
section of docs/runbooks.md that exists, each rendering to a PrometheusRule promtool accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cutover.api import contract
from cutover.api.v1alpha1 import AlertRule, seconds
from cutover.operator.alerts.render import rule_group

from ..conftest import REPO
from .test_alert_render import check_rules, target

CHART = REPO / "charts" / "cutover"
RUNBOOKS = REPO / "docs" / "runbooks.md"


def helm() -> str:
    path = REPO / ".tools" / "bin" / "helm"
    found = str(path) if path.exists() else shutil.which("helm")
    if found is None:
        pytest.skip("helm is not built (hack/build-tools builds it)")
    return found


def rendered(*values: str, release: str = "cutover") -> list[dict[str, Any]]:
    """Every object the chart renders as ``release`` in namespace ``payments``, with ``values`` as
    ``--set`` arguments. Raises CalledProcessError when helm refuses them."""
    args = [helm(), "template", release, str(CHART), "--kube-version", "1.36.3", "--namespace", "payments"]
    for value in values:
        args += ["--set", value]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def template(*values: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered(*values) if doc["kind"] == "AlertRule"]


def anchors() -> set[str]:
    """The GitHub anchors of docs/runbooks.md's second-level headings."""
    headings = re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


def test_no_alert_rules_unless_asked() -> None:
    assert template() == []


def test_the_defaults_are_the_briefs_thresholds_and_valid_alert_rules() -> None:
    docs = template("defaultAlertRules.enabled=true")
    rules = {doc["metadata"]["name"].removeprefix("cutover-cutover-"): AlertRule.model_validate(doc) for doc in docs}
    assert sorted(rules) == [
        "crisis-detection",
        "error-rate",
        "latency-p95",
        "no-predictions",
        "out-of-distribution-rate",
        "safety-violation-rate",
    ]

    def limit(name: str) -> tuple[str | None, str, float, float]:
        spec = rules[name].spec
        minutes = spec.for_ * seconds(spec.interval) / 60
        return spec.metric.builtin, spec.condition.operator, spec.condition.threshold, minutes

    assert limit("latency-p95") == (None, ">", 0.5, 5.0)
    assert "histogram_quantile(0.95," in (rules["latency-p95"].spec.metric.query or "")
    assert limit("error-rate") == ("errorRate", ">", 0.01, 5.0)
    assert limit("out-of-distribution-rate")[:3] == ("outOfDistributionRate", ">", 0.05)
    assert limit("safety-violation-rate")[:3] == ("safetyViolationRate", ">", 0.05)
    assert limit("crisis-detection") == (None, ">", 0.0, 0.5), "any crisis, at the first evaluation"
    assert limit("no-predictions")[1:] == ("<=", 0.0, 5.0)
    for rule in rules.values():
        assert rule.metadata.namespace == "payments" and rule.spec.target.selector is not None


def test_queries_read_series_the_contract_names() -> None:
    """A query typed in values.yaml selects only samples some contract series has."""
    samples = {s.sample for s in contract.SERIES} | {s.name + "_bucket" for s in contract.SERIES}
    for doc in template("defaultAlertRules.enabled=true"):
        query = doc["spec"]["metric"].get("query")
        if query:
            names = set(re.findall(r"\b(cutover_[a-z_]+)\{", query))
            assert names and names <= samples, (doc["metadata"]["name"], names - samples)


def test_every_default_links_to_a_runbook_section_that_exists() -> None:
    sections = anchors()
    assert set(contract.RUNBOOK_ANCHORS.values()) <= sections, "the builtins' anchors (notifications link them)"
    for doc in template("defaultAlertRules.enabled=true", "defaultAlertRules.namespaces={a,b}"):
        link = doc["metadata"]["annotations"][contract.ANNOTATION_RUNBOOK_URL]
        page, _, anchor = link.partition("#")
        assert page == contract.RUNBOOKS and anchor in sections, link


def test_the_defaults_render_to_rules_promtool_accepts(tmp_path: Path) -> None:
    targets = [target("gateway"), target("replicas", name="fraud-scorer-b")]
    groups = [rule_group(AlertRule.model_validate(doc), targets) for doc in template("defaultAlertRules.enabled=true")]
    done = check_rules(groups, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
