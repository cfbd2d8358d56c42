"""The Grafana dashboards (operator/dashboards.py, shipped by the chart as ConfigMaps for the Grafana
sidecar): the committed JSON is exactly what ``make dashboards`` writes, every panel's PromQL
parses (promtool, with the variables put in as Grafana would), reads only series that cutover
exports, and lays out on Grafana's 24-column grid; the chart ships one ConfigMap per dashboard
only when asked, labelled for the sidecar."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from cutover.api import contract
from cutover.operator import (
    dashboards,
    metrics,  # noqa: F401  (registers the operator's families in REGISTRY)
)
from tests.analysis.test_contract import registries
from tests.support.grafana import DASHBOARDS, expressions, instantiate, load, panels

from .test_alert_render import check_rules
from .test_alert_render_chart import rendered

VALUES = {"namespace": "payments", "model": "fraud-scorer", "modeldeployment": "fraud-scorer", "slo": "99.9"}
"""One choice for each dashboard variable."""
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def test_the_committed_dashboards_are_what_make_dashboards_writes() -> None:
    assert sorted(path.name for path in DASHBOARDS.iterdir()) == sorted(
        f"{name}.json" for name in dashboards.DASHBOARDS
    )
    for name in dashboards.DASHBOARDS:
        committed = (DASHBOARDS / f"{name}.json").read_text()
        assert committed == dashboards.render(name), (
            f"charts/cutover/dashboards/{name}.json is stale: run `make dashboards`"
        )


def rule_groups() -> list[dict[str, Any]]:
    """Each dashboard's queries, variables put in, as a rule group promtool parses."""
    return [
        {
            "name": name,
            "rules": [
                {"record": f"cutover_dashboard:{name}:{i}", "expr": instantiate(expr, VALUES)}
                for i, (_, expr) in enumerate(expressions(load(name)))
            ],
        }
        for name in dashboards.DASHBOARDS
    ]


def test_every_panel_query_parses(tmp_path: Path) -> None:
    groups = rule_groups()
    assert all(len(group["rules"]) > 10 for group in groups), [len(group["rules"]) for group in groups]
    done = check_rules(groups, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_panel_query_that_does_not_parse_fails_the_check(tmp_path: Path) -> None:
    groups = rule_groups()
    broken = groups[1]["rules"][-1]
    broken["expr"] = "sum(" + broken["expr"]  # a parenthesis never closed
    done = check_rules(groups, tmp_path)
    assert done.returncode != 0 and broken["record"] in done.stdout + done.stderr


def exported(registry: CollectorRegistry) -> set[str]:
    """The sample names a query can select in ``registry``."""
    return {family.name + suffix for family in registry.collect() for suffix in SUFFIXES.get(family.type, ("",))}


def test_every_series_a_panel_reads_is_exported() -> None:
    """A dashboard typed with a name nothing exports shows "No data" for good: every cutover_*
    series a panel reads is registered by serving, the gateway or the operator (whose metrics
    module registers its families in the default registry)."""
    names = exported(REGISTRY).union(*(exported(registry) for registry in registries().values()))
    read = {
        name
        for dashboard in dashboards.DASHBOARDS
        for _, expr in expressions(load(dashboard))
        for name in re.findall(r"\b(?:cutover_[a-z_]+|DCGM_[A-Z_]+)\b(?!\s*\()", expr)
    }
    assert contract.GPU_UTILIZATION in read  # NVIDIA's exporter's, not cutover's
    assert read - {contract.GPU_UTILIZATION} - names == set()


def test_panels_tile_the_grid_and_read_the_chosen_datasource_and_variables() -> None:
    for name in dashboards.DASHBOARDS:
        dashboard = load(name)
        every = dashboard["panels"]
        assert [panel["id"] for panel in every] == list(range(1, len(every) + 1))
        cells = [
            {(x, y) for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
             for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])}
            for p in every
        ]  # fmt: skip
        assert all(0 <= x < 24 for cell in cells for x, _ in cell), name
        assert all(not a & b for a, b in itertools.combinations(cells, 2)), f"{name}: panels overlap"
        titles = [panel["title"] for panel in panels(dashboard)]
        assert len(titles) == len(set(titles)), f"{name}: panels share a title"
        variables = {variable["name"] for variable in dashboard["templating"]["list"]}
        used = set()
        for panel in panels(dashboard):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["description"], panel["title"]
            assert panel["type"] == "table" or panel["fieldConfig"]["defaults"]["unit"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], panel["title"]
                used |= set(re.findall(r"\$(\w+)", target["expr"]))
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                used |= set(re.findall(r"\$(\w+)", variable["query"]["query"]))
        assert used - {"__rate_interval", "__range", "1"} == variables - {"datasource"}, name


def test_stable_and_candidate_sit_side_by_side() -> None:
    for name in ("operations", "safety"):
        by_title = {panel["title"]: panel for panel in panels(load(name))}
        pairs = [(title, title.replace(": stable", ": candidate")) for title in by_title if title.endswith(": stable")]
        assert pairs, name
        for stable, candidate in pairs:
            left, right = by_title[stable]["gridPos"], by_title[candidate]["gridPos"]
            assert (left["x"], right["x"], left["y"]) == (0, 12, right["y"]), stable
            assert all('role="stable"' in t["expr"] for t in by_title[stable]["targets"]), stable
            assert all('role="candidate"' in t["expr"] for t in by_title[candidate]["targets"]), candidate


def configmaps(*values: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered(*values) if doc["kind"] == "ConfigMap" and "dashboard" in doc["metadata"]["name"]]


def test_the_chart_ships_no_dashboards_unless_asked() -> None:
    assert configmaps() == []


def test_the_chart_ships_each_dashboard_as_a_configmap_for_the_grafana_sidecar() -> None:
    shipped = configmaps("monitoring.dashboards.enabled=true")
    assert [doc["metadata"]["name"] for doc in shipped] == [
        f"cutover-cutover-dashboard-{name}" for name in sorted(dashboards.DASHBOARDS)
    ]
    for doc in shipped:
        meta = doc["metadata"]
        assert meta["namespace"] == "payments" and meta["labels"]["grafana_dashboard"] == "1"
        assert meta["annotations"] == {"k8s-sidecar-target-directory": "cutover"}
        [(key, text)] = doc["data"].items()
        assert text == (DASHBOARDS / key).read_text(), key  # byte for byte what make dashboards wrote
    [doc, *_] = configmaps(
        "monitoring.dashboards.enabled=true",
        "monitoring.dashboards.namespace=grafana",
        "monitoring.dashboards.label=dashboards",
        "monitoring.dashboards.labelValue=cutover",
        "monitoring.dashboards.folder=",
    )
    meta = doc["metadata"]
    assert (meta["namespace"], meta["labels"]["dashboards"], meta.get("annotations")) == ("grafana", "cutover", None)
    assert "grafana_dashboard" not in meta["labels"]
