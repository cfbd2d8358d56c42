"""The chart's ``tracing.otlpEndpoint`` reaches the gateway and, through the operator, every
serving pod, as the flags each command takes; empty, neither traces."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from cutover.operator import cli

from .test_alert_render_chart import CHART, helm


def commands(*values: str) -> dict[str, Any]:
    """The parsed arguments of each container the chart renders, by container name."""
    args = [helm(), "template", "cutover", str(CHART), "--kube-version", "1.36.3"]
    for value in values:
        args += ["--set", value]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    deployments = [doc for doc in yaml.safe_load_all(out) if doc and doc["kind"] == "Deployment"]
    return {
        container["name"]: cli.parser().parse_args(container["args"])
        for doc in deployments
        for container in doc["spec"]["template"]["spec"]["containers"]
    }


def test_the_otlp_endpoint_reaches_the_gateway_and_the_operator_for_serving_pods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)  # the flag's default
    parsed = commands("tracing.otlpEndpoint=http://otel-collector.observability:4318")
    assert parsed["gateway"].otlp_endpoint == "http://otel-collector.observability:4318"
    assert parsed["operator"].serving_otlp_endpoint == "http://otel-collector.observability:4318"
    parsed = commands()
    assert (parsed["gateway"].otlp_endpoint, parsed["operator"].serving_otlp_endpoint) == (None, None)
