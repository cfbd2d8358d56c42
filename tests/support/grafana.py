"""Reading the Grafana dashboards the chart ships (charts/cutover/dashboards/*.json) as Grafana
would run them: each panel's PromQL with the dashboard's variables put in."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .prometheus import Prometheus

DASHBOARDS = Path(__file__).resolve().parents[2] / "charts" / "cutover" / "dashboards"

GRAFANA = {"__rate_interval": "1m", "__range": "1h"}
"""Grafana's own variables, as Grafana would give them for a short time range."""
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def load(name: str) -> dict[str, Any]:
    """The committed dashboard ``name`` (executive, operations or safety)."""
    found: dict[str, Any] = json.loads((DASHBOARDS / f"{name}.json").read_text())
    return found


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too (rows themselves excluded)."""
    for panel in dashboard.get("panels", []):
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def expressions(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def instantiate(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with every ``$name`` / ``${name}`` replaced by ``values`` or Grafana's own
    (``$__rate_interval`` and friends). Raises KeyError for a variable given no value. The
    ``$1`` of a ``label_replace`` replacement is PromQL's, not a variable, and stays."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name.isdigit():
            return match.group(0)
        return {**GRAFANA, **values}[name]

    return VARIABLE.sub(value, expr)


def without_data(
    prometheus: Prometheus, dashboard: Mapping[str, Any], titles: Iterable[str], values: Mapping[str, str], start: float
) -> dict[str, list[str]]:
    """Among the panels named ``titles``, those Grafana would show as "No data" over the time
    from ``start`` to now: none of their queries (variables put in from ``values``) returns a
    series. Raises KeyError for a title no panel has."""
    by_title = {panel["title"]: panel for panel in panels(dashboard)}
    end = time.time()
    found = {}
    for title in titles:
        queries = [instantiate(target["expr"], values) for target in by_title[title]["targets"]]
        if not any(prometheus.query_range(query, start, end, 5) for query in queries):
            found[title] = queries
    return found
