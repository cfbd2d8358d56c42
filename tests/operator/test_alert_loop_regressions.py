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
from cutover.operator.alerts.handlers import AlertContext, RuleKey, latest, remember, reread
from cutover.operator.alerts.render import prometheus_rule
from cutover.operator.kube import ApiError, Kube, path

from .test_alert_render import NAMESPACE, every_rule, target


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


class StatusServer:
    """The API server's side of status writes: a resourceVersion that moves on every write, and
    a 409 for a write from any other version (what the real one does)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = copy.deepcopy(body)
        self.writes = 0

    async def replace_status(self, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        if body["metadata"]["resourceVersion"] != self.body["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified")
        self.writes += 1
        self.body = {**self.body, "status": status}
        self.body["metadata"] = {
            **self.body["metadata"],
            "resourceVersion": str(int(body["metadata"]["resourceVersion"]) + 1),
        }
        return copy.deepcopy(self.body)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.body)


def test_status_writes_go_on_while_the_watch_lags_several_writes_behind() -> None:
    # On a real control plane kopf's view of a rule evaluated every second stayed at a version
    # two writes old for seconds; every evaluation then wrote from it and got a 409.
    created = {"metadata": {"name": "r", "namespace": NAMESPACE, "uid": "u1", "resourceVersion": "10"}, "status": {}}
    server = StatusServer(created)
    ctx = AlertContext(cast(Kube, server), cast(httpx.AsyncClient, None), cast(notify.Notifier, None))
    key = (NAMESPACE, "r")
    watch = kopf.Body(cast(kopf.RawBody, copy.deepcopy(created)))  # never updated: the watch lags
    for second in range(4):
        obj = latest(ctx, key, watch)
        asyncio.run(_write_status(ctx, key, obj, {"evaluatedAt": second}))
    assert server.writes == 4 and server.body["status"] == {"evaluatedAt": 3}
    # once the watch catches up, its body is the freshest again
    caught_up = kopf.Body(cast(kopf.RawBody, copy.deepcopy(server.body)))
    assert latest(ctx, key, caught_up)["metadata"]["resourceVersion"] == "14" and key not in ctx.written


def test_a_write_that_meets_a_409_starts_the_next_one_from_the_server() -> None:
    created = {"metadata": {"name": "r", "namespace": NAMESPACE, "uid": "u1", "resourceVersion": "10"}, "status": {}}
    server = StatusServer(created)
    server.body["metadata"]["resourceVersion"] = "11"  # someone else wrote it
    ctx = AlertContext(cast(Kube, server), cast(httpx.AsyncClient, None), cast(notify.Notifier, None))
    key = (NAMESPACE, "r")
    watch = kopf.Body(cast(kopf.RawBody, copy.deepcopy(created)))
    with pytest.raises(ApiError):
        asyncio.run(_write_status(ctx, key, latest(ctx, key, watch), {"evaluatedAt": 0}))
    asyncio.run(reread(ctx, key, watch))
    asyncio.run(_write_status(ctx, key, latest(ctx, key, watch), {"evaluatedAt": 1}))
    assert server.body["status"] == {"evaluatedAt": 1}


async def _write_status(ctx: AlertContext, key: RuleKey, obj: dict[str, Any], status: dict[str, Any]) -> None:
    remember(ctx, key, obj, await ctx.kube.replace_status(obj, status))
