"""The chart's ``gateway.feedback`` reaches the gateway as its flags, and ``clientIPAffinity``
pins each client address to one gateway replica (the feedback store is per replica)."""

from __future__ import annotations

from typing import Any

from .test_alert_render_chart import rendered
from .test_chart_tracing import commands


def gateway_service(*values: str) -> dict[str, Any]:
    [service] = [d for d in rendered(*values) if d["kind"] == "Service" and d["metadata"]["name"].endswith("gateway")]
    return service


def test_the_feedback_store_settings_reach_the_gateway() -> None:
    gateway = commands("gateway.feedback.windowSeconds=86400", "gateway.feedback.maxAnswers=1000000")["gateway"]
    assert (gateway.feedback_window, gateway.feedback_max_answers) == (86400, 1_000_000)
    defaults = commands()["gateway"]
    assert (defaults.feedback_window, defaults.feedback_max_answers) == (3600, 100_000)


def test_client_ip_affinity_keeps_a_clients_feedback_on_the_replica_that_answered_it() -> None:
    assert "sessionAffinity" not in gateway_service()["spec"]
    assert gateway_service("gateway.feedback.clientIPAffinity=true")["spec"]["sessionAffinity"] == "ClientIP"
