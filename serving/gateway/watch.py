"""Keeps the gateway's routes and keys current from the Kubernetes API: ModelDeployments (their
status.traffic) and Secrets labelled ``cutover.dev/api-key=true``, listed then watched, so a
change of the traffic table or a revoked key takes effect as soon as the watch delivers it.

``--backends FILE`` (development only: the local runner) maps ``namespace/service`` to a URL,
re-read whenever the file changes; a Service it does not list has no ready endpoint yet and gets
no traffic. Without it a Service is ``http://service.namespace.svc:SERVING_PORT`` (cutover.api.contract).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

from ..kube import Credentials, Kube, Watcher
from .app import Gateway
from .keys import KEY_LABEL

log = logging.getLogger("cutover.gateway")


RESOURCES = {"md": "modeldeployments", "keys": "secrets"}
"""The resource each kind of watch follows, as ``cutover_gateway_watch_restarts_total`` names it."""


def _paths(namespaces: list[str]) -> list[tuple[str | None, str, str]]:
    scopes: list[str | None] = list(namespaces) or [None]
    out: list[tuple[str | None, str, str]] = []
    for namespace in scopes:
        where = f"/namespaces/{namespace}" if namespace else ""
        out.append((namespace, "md", f"/apis/cutover.dev/v1alpha1{where}/modeldeployments"))
        out.append((namespace, "keys", f"/api/v1{where}/secrets"))
    return out


async def _follow(gateway: Gateway, watcher: Watcher, namespace: str | None, kind: str) -> None:
    async for event, obj in watcher.events():
        if kind == "md":
            if event == "SYNC":
                gateway.replace_deployments(obj, namespace)
            else:
                gateway.update_deployment(obj, deleted=event == "DELETED")
        elif event == "SYNC":
            gateway.keys.replace(obj, namespace)
        elif event == "DELETED":
            gateway.keys.remove(obj)
        else:
            gateway.keys.update(obj)
        if event == "SYNC":
            gateway.unlisted.discard((kind, namespace))


async def watch(gateway: Gateway, credentials: Credentials, namespaces: list[str]) -> None:
    """Run the watches until cancelled."""
    gateway.unlisted = {(kind, namespace) for namespace, kind, _ in _paths(namespaces)}
    # One long-lived connection per watch: the number of watches bounds them, not the pool.
    async with Kube(credentials, connections=0) as kube:
        tasks = []
        for namespace, kind, path in _paths(namespaces):
            params = {"labelSelector": f"{KEY_LABEL}=true"} if kind == "keys" else {}
            watcher = kube.watch(path, functools.partial(gateway.metrics.watch_restarted, RESOURCES[kind]), **params)
            tasks.append(asyncio.create_task(_follow(gateway, watcher, namespace, kind)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()


def _listed(mapping: dict[str, str]) -> Callable[[str, str], str | None]:
    """A resolver over a ``namespace/service`` -> URL map."""
    return lambda namespace, service: mapping.get(f"{namespace}/{service}")


async def follow_backends(gateway: Gateway, path: Path, interval: float = 0.2) -> None:
    """Development: re-read the namespace/service -> URL map whenever the file changes."""
    seen: float | None = None
    while True:
        try:
            mtime = path.stat().st_mtime
            if mtime != seen:
                mapping: dict[str, str] = json.loads(path.read_text() or "{}")
                # Only what the file lists is routable: it is the list of ready endpoints.
                gateway.set_resolver(_listed(mapping))
                seen = mtime
        except (OSError, ValueError) as error:
            log.warning("backends file %s: %s", path, error)
        await asyncio.sleep(interval)
