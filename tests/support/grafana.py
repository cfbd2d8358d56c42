"""Reading the Grafana dashboards the chart ships (charts/cutover/dashboards/*.json) as Grafana
would run them: each panel's PromQL with the dashboard's variables put in."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "charts" / "cutover" / "dashboards"

GRAFANA = {"__rate_interval": "1m", "__range": "1h", "__interval": "30s"}
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
