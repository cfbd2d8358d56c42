"""The chart's ``tracing.otlpEndpoint`` reaches the gateway and, through the operator, every
serving pod, as the flags each command takes; empty, neither traces."""

from __future__ import annotations

from typing import Any

import pytest

from cutover.operator import cli

from .test_alert_render_chart import rendered


def commands(*values: str) -> dict[str, Any]:
    """The parsed arguments of each container the chart renders, by container name."""
    return {
        container["name"]: cli.parser().parse_args(container["args"])
        for doc in rendered(*values)
        if doc["kind"] == "Deployment"
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
