"""Regressions found by running the AlertRule loop on a real control plane
(tests/cluster/test_alerts.py), each pinned here without a cluster."""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import httpx
import kopf
import pytest

from cutover.operator.alerts import notify
from cutover.operator.alerts.handlers import AlertContext, RuleKey, reread
from cutover.operator.alerts.render import prometheus_rule
from cutover.operator.kube import ApiError, Kube, path

from .test_alert_render import NAMESPACE, every_rule, target
from .test_loop_memory import StatusServer


def test_the_client_knows_the_path_of_every_kind_the_alert_loop_writes() -> None:
    # The loop writes the AlertRule's status and applies the rendered PrometheusRule; the client
    # raised KeyError for both kinds, so no evaluation ever finished.
    rule = every_rule()[0]
    rendered = prometheus_rule(rule, [target()])
    name = rendered["metadata"]["name"]
    assert path(rendered["apiVersion"], rendered["kind"], NAMESPACE, name) == (
        f"/apis/monitoring.coreos.com/v1/namespaces/{NAMESPACE}/prometheusrules/{name}"
    )
    assert path(rule.api_version, rule.kind, NAMESPACE, "r") == (
        f"/apis/cutover.dev/v1alpha1/namespaces/{NAMESPACE}/alertrules/r"
    )


CREATED = {
    "kind": "AlertRule",
    "metadata": {"name": "r", "namespace": NAMESPACE, "uid": "u1", "resourceVersion": "10"},
    "status": {},
}
"""A rule as created: no status yet."""


def test_status_writes_go_on_while_the_watch_lags_several_writes_behind() -> None:
    # On a real control plane kopf's view of a rule evaluated every second stayed at a version
    # two writes old for seconds; every evaluation then wrote from it and got a 409.
    created = copy.deepcopy(CREATED)
    server = StatusServer(created)
    ctx = AlertContext(cast(Kube, server), cast(httpx.AsyncClient, None), cast(notify.Notifier, None))
    key = (NAMESPACE, "r")
    watch = kopf.Body(cast(kopf.RawBody, copy.deepcopy(created)))  # never updated: the watch lags
    for second in range(4):
        obj = ctx.loops.latest(key, watch)
        asyncio.run(_write_status(ctx, key, obj, {"evaluatedAt": second}))
    assert server.writes == 4 and server.body["status"] == {"evaluatedAt": 3}
    # once the watch catches up, its body is the freshest again
    caught_up = kopf.Body(cast(kopf.RawBody, copy.deepcopy(server.body)))
    assert ctx.loops.latest(key, caught_up)["metadata"]["resourceVersion"] == "14" and key not in ctx.loops.writes


def test_a_write_that_meets_a_409_starts_the_next_one_from_the_server() -> None:
    created = copy.deepcopy(CREATED)
    server = StatusServer(created)
    server.body["metadata"]["resourceVersion"] = "11"  # someone else wrote it
    ctx = AlertContext(cast(Kube, server), cast(httpx.AsyncClient, None), cast(notify.Notifier, None))
    key = (NAMESPACE, "r")
    watch = kopf.Body(cast(kopf.RawBody, copy.deepcopy(created)))
    with pytest.raises(ApiError):
        asyncio.run(_write_status(ctx, key, ctx.loops.latest(key, watch), {"evaluatedAt": 0}))
    asyncio.run(reread(ctx, key, watch))
    asyncio.run(_write_status(ctx, key, ctx.loops.latest(key, watch), {"evaluatedAt": 1}))
    assert server.body["status"] == {"evaluatedAt": 1}


async def _write_status(ctx: AlertContext, key: RuleKey, obj: dict[str, Any], status: dict[str, Any]) -> None:
    ctx.loops.remember(key, obj, await ctx.kube.replace_status(obj, status))
