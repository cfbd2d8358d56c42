"""The chart's PrometheusRule on cutover itself (values ``monitoring.prometheusRule``;
charts/cutover/files/prometheus-rules.yaml): off by default; on, rules promtool accepts, whose
alerts fire and stay quiet as ``prometheus-rules.test.yaml`` says (``promtool test rules``), over
series the operator, the gateway and the serving pods really export, each linked to a section of
docs/runbooks.md that exists."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.utils import floatToGoString

from cutover.api.contract import LATENCY_BUCKETS
from cutover.operator import metrics as operator_metrics  # noqa: F401  (registers the operator's series)
from cutover.serving.gateway.metrics import GatewayMetrics
from cutover.serving.metrics import ServingMetrics

from ..conftest import REPO
from .test_alert_render import promtool
from .test_alert_render_chart import anchors, rendered

UNIT_TESTS = Path(__file__).with_name("prometheus-rules.test.yaml")
TEMPLATE = REPO / "charts" / "cutover" / "templates" / "prometheusrule.yaml"


@functools.cache
def prometheus_rule(*values: str) -> dict[str, Any]:
    """The PrometheusRule the chart renders with the rule switched on and ``values`` set (one
    helm run per set of values; callers do not change it)."""
    docs = [d for d in rendered("monitoring.prometheusRule.enabled=true", *values) if d["kind"] == "PrometheusRule"]
    assert len(docs) == 1
    return docs[0]


def alerts(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


def write_groups(rule: dict[str, Any], path: Path, annotations: bool = True) -> Path:
    """The rule's ``spec`` as a Prometheus rule file (what promtool reads; it refuses the CR)."""
    groups = rule["spec"]["groups"]
    if not annotations:
        groups = [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]} for g in groups
        ]
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


def unit_test(rule: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    write_groups(rule, tmp_path / "prometheus-rules.yaml", annotations=False)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return subprocess.run([promtool(), "test", "rules", UNIT_TESTS.name], cwd=tmp_path, capture_output=True, text=True)


def test_no_prometheus_rule_unless_asked() -> None:
    assert [d for d in rendered() if d["kind"] == "PrometheusRule"] == []


def test_it_carries_the_labels_prometheus_selects_on() -> None:
    labels = prometheus_rule("monitoring.labels.release=monitoring")["metadata"]["labels"]
    assert labels["release"] == "monitoring" and labels["app.kubernetes.io/instance"] == "cutover"


def test_promtool_check_rules_accepts_what_the_chart_renders(tmp_path: Path) -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(write_groups(prometheus_rule(), tmp_path / "rules.yaml"))],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr


def test_every_alert_fires_and_stays_quiet_as_the_unit_tests_say(tmp_path: Path) -> None:
    tested = set(re.findall(r"alertname: (\w+)", UNIT_TESTS.read_text()))
    assert {a["alert"] for a in alerts(prometheus_rule())} == tested, "every alert has a promtool test"
    done = unit_test(prometheus_rule(), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_objectives_come_from_the_values(tmp_path: Path) -> None:
    """The unit tests can fail: at a 50% availability objective the fast burn no longer pages,
    and at a 1 s latency threshold the slow model is within it."""
    loose = prometheus_rule(
        "monitoring.prometheusRule.slo.availability=50", "monitoring.prometheusRule.slo.latency.threshold=1.0"
    )
    objectives = {r["record"]: r for r in loose["spec"]["groups"][0]["rules"]}
    assert objectives["cutover:slo_availability:objective"]["expr"] == "vector(50 / 100)"
    assert objectives["cutover:slo_latency:threshold"]["labels"] == {"le": "1.0"}
    done = unit_test(loose, tmp_path)
    assert done.returncode != 0
    assert "alertname: CutoverAvailabilityBudgetBurn" in done.stdout + done.stderr
    assert "alertname: CutoverLatencyBudgetBurn" in done.stdout + done.stderr


def test_the_latency_threshold_must_be_a_bucket_edge_as_le_writes_it() -> None:
    edges = re.search(r"\$edges := list ((?:\"[^\"]+\" ?)+)", TEMPLATE.read_text())
    assert edges is not None
    assert re.findall(r'"([^"]+)"', edges.group(1)) == [floatToGoString(b) for b in LATENCY_BUCKETS]
    for refused in ("0.3", "1"):  # no edge; 1.0 unquoted reads as 1
        with pytest.raises(subprocess.CalledProcessError) as refusal:
            rendered(
                "monitoring.prometheusRule.enabled=true", f"monitoring.prometheusRule.slo.latency.threshold={refused}"
            )
        assert "is no bucket edge" in refusal.value.stderr
    with pytest.raises(subprocess.CalledProcessError) as refusal:
        rendered("monitoring.prometheusRule.enabled=true", "monitoring.prometheusRule.slo.availability=100")
    assert "between 0 and 100" in refusal.value.stderr


def test_every_alert_says_what_and_where_its_runbook_section_is() -> None:
    sections = anchors()
    for alert in alerts(prometheus_rule()):
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        notes = alert["annotations"]
        assert notes["summary"] and notes["description"], alert["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/runbooks.md" and anchor in sections, (alert["alert"], anchor)
    base = "https://git.example.com/ml/cutover/blob/main/docs/runbooks.md"
    for alert in alerts(prometheus_rule(f"monitoring.prometheusRule.runbooks={base}")):
        assert alert["annotations"]["runbook_url"].startswith(base + "#")


def exported(registry: CollectorRegistry) -> set[str]:
    """The sample names of every family in ``registry``, children or not."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes.get(family.type, ())}


def test_every_series_the_rules_read_is_exported() -> None:
    """A renamed metric fails here: the names the rules select, against the registries of the
    operator (the process-wide one), the gateway and a serving pod with every option."""
    serving = ServingMetrics("ns", "model", "r1", lambda: 0.0, scores_out_of_distribution=True, caches_predictions=True)
    names = exported(REGISTRY) | exported(GatewayMetrics().registry) | exported(serving.registry)
    read = {
        name
        for rule in prometheus_rule()["spec"]["groups"]
        for r in rule["rules"]
        for name in re.findall(r"\b(cutover_[a-z0-9_]+)", r["expr"])
    }
    assert len(read) >= 15
    assert read <= names, sorted(read - names)


def test_the_runbooks_and_the_operations_guide_link_to_sections_that_exist() -> None:
    docs = REPO / "docs"

    def sections(page: Path) -> set[str]:
        headings = re.findall(r"^#{2,3} (.+)$", page.read_text(), re.MULTILINE)
        return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}

    links = [
        (page.name, target, anchor)
        for page in (docs / "runbooks.md", docs / "operations.md")
        for target, anchor in re.findall(r"\]\(([a-z]*\.md)?#([a-z0-9-]+)\)", page.read_text())
    ]
    assert len(links) >= 20
    for page, target, anchor in links:
        assert anchor in sections(docs / (target or page)), (page, target, anchor)
