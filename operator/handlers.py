"""kopf handlers for ModelDeployment: thin, level-based, idempotent.

One daemon per ModelDeployment runs the reconcile loop: read the object and its Deployments,
ask the verdict source, call the pure state machine, apply the children, write status, post
events. It runs every few seconds during a rollout and every 30 s at rest, and at once when the
ModelDeployment or one of its Deployments changes. A missed event or an operator restart only
means the next pass does the same work: all state lives in the object's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from cutover.api.v1alpha1 import GROUP, REQUEST_ANNOTATIONS, VERSION, ModelDeployment
from cutover.api.v1alpha1.modeldeployment import ModelDeploymentStatus

from . import builders, gpu, metrics
from .kube import ApiError, Kube
from .rollout import Capacity, Inputs, Plan, Request, pending_requests, reconcile
from .verdicts import VerdictSource

PLURAL = "modeldeployments"
ROLLING_INTERVAL = 2.0
RESTING_INTERVAL = 30.0
CHILD_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"))


@dataclass
class Context:
    """Shared clients and per-object wake-ups, created at startup and kept in kopf's memo."""

    kube: Kube
    verdicts: VerdictSource
    pokes: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    gateway_api: bool = False
    clock: Callable[[], float] = time.time

    def poke(self, namespace: str, name: str) -> None:
        event = self.pokes.get((namespace, name))
        if event is not None:
            event.set()


def annotation_writer(body: dict[str, Any], key: str) -> str:
    """Who last wrote an annotation: the field manager that owns it in managedFields."""
    wanted = f"f:{key}"
    for entry in body.get("metadata", {}).get("managedFields", []) or []:
        annotations = (entry.get("fieldsV1") or {}).get("f:metadata", {}).get("f:annotations", {})
        if wanted in annotations:
            return str(entry.get("manager", ""))
    return ""


async def _capacity(kube: Kube, md: ModelDeployment) -> Capacity | None:
    runtime = md.spec.wire()["runtime"]
    resource = builders.gpu_resource(runtime)
    if resource is None:
        return None
    nodes = await kube.list("v1", "Node")
    pods = await kube.list("v1", "Pod", field_selector="status.phase!=Succeeded,status.phase!=Failed")
    name, count = resource
    spec_gpu = md.spec.runtime.gpu
    assert spec_gpu is not None
    return gpu.free_pods(nodes, pods, name, count, spec_gpu.product, spec_gpu.min_memory_mib)


async def _invalid(ctx: Context, body: dict[str, Any], error: ValidationError, logger: logging.Logger) -> None:
    """A spec only the operator can find wrong: say so in status and an event, once."""
    message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())[:2000]
    old = body.get("status") or {}
    if old.get("phase") == "Failed" and old.get("message") == message:
        return
    now = datetime.now(UTC).isoformat()
    condition = {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "message": message,
        "lastTransitionTime": now,
        "observedGeneration": body["metadata"].get("generation"),
    }
    status = {
        **old,
        "phase": "Failed",
        "message": message,
        "conditions": [condition],
        "observedGeneration": body["metadata"].get("generation"),
    }
    await ctx.kube.replace_status(body, status)
    kopf.warn(body, reason="InvalidSpec", message=message)
    logger.warning("invalid spec: %s", message)


async def reconcile_once(ctx: Context, namespace: str, name: str, logger: logging.Logger) -> float:
    """One pass of the reconcile loop; returns the seconds until the next one."""
    started = time.monotonic()
    kube = ctx.kube
    body = await kube.get(f"{GROUP}/{VERSION}", "ModelDeployment", namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return RESTING_INTERVAL
    try:
        md = ModelDeployment.model_validate(body)
    except ValidationError as err:
        await _invalid(ctx, body, err, logger)
        return RESTING_INTERVAL
    now = ctx.clock()
    deployments = await kube.list("apps/v1", "Deployment", namespace, label_selector=f"{builders.LABEL_MODEL}={name}")
    ready = {
        d["metadata"]["labels"][builders.LABEL_REVISION]: int(d.get("status", {}).get("readyReplicas", 0) or 0)
        for d in deployments
    }
    status = md.status or ModelDeploymentStatus()
    annotations = md.metadata.annotations
    requests = tuple(
        Request(r.action, r.id, annotation_writer(body, REQUEST_ANNOTATIONS[r.action]))
        for r in pending_requests(annotations, status.handled_requests)
    )
    capacity = await _capacity(kube, md)
    analysis = await ctx.verdicts.current(md, now)
    plan = reconcile(Inputs(md, ready, datetime.fromtimestamp(now, UTC), analysis, requests, capacity))
    await _apply(ctx, md, plan, deployments)
    new_status = plan.status.wire()
    if new_status != (body.get("status") or {}):
        await kube.replace_status(body, new_status)
    for event in plan.events:
        (kopf.info if event.type == "Normal" else kopf.warn)(body, reason=event.reason, message=event.message)
    metrics.observe(md, plan, analysis, time.monotonic() - started)
    return ROLLING_INTERVAL if plan.status.candidate_revision or plan.status.phase != "Healthy" else RESTING_INTERVAL


async def _apply(ctx: Context, md: ModelDeployment, plan: Plan, deployments: list[dict[str, Any]]) -> None:
    """Apply every child of the plan; delete our children of revisions the plan no longer has."""
    kube = ctx.kube
    wanted = builders.children(md, plan.workloads, list(plan.status.traffic))
    for child in wanted:
        if child["kind"] == "HTTPRoute" and not ctx.gateway_api:
            continue
        await kube.apply(child)
    keep = {(c["kind"], c["metadata"]["name"]) for c in wanted}
    namespace, name = md.metadata.namespace, md.metadata.name
    selector = f"{builders.LABEL_MODEL}={name},{builders.LABEL_REVISION}"
    for api_version, kind in CHILD_KINDS:
        existing = (
            deployments
            if kind == "Deployment"
            else await kube.list(api_version, kind, namespace, label_selector=selector)
        )
        for obj in existing:
            if (kind, obj["metadata"]["name"]) not in keep and _owned_by(obj, md):
                await kube.delete(api_version, kind, namespace, obj["metadata"]["name"])


def _owned_by(obj: dict[str, Any], md: ModelDeployment) -> bool:
    return any(ref.get("uid") == md.metadata.uid for ref in obj["metadata"].get("ownerReferences", []))


# ----------------------------------------------------------------------------- registration


def register(registry: kopf.OperatorRegistry) -> None:
    """Attach the handlers to a registry (a fresh one per operator run)."""

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10.0)
    async def modeldeployment_loop(
        stopped: kopf.DaemonStopped, namespace: str, name: str, memo: kopf.Memo, logger: logging.Logger, **_: Any
    ) -> None:
        ctx: Context = memo.ctx
        wake = ctx.pokes.setdefault((namespace, name), asyncio.Event())
        try:
            while not stopped:
                wake.clear()
                try:
                    delay = await reconcile_once(ctx, namespace, name, logger)
                except ApiError as err:
                    # 409: someone wrote the object since we read it; re-read and go again.
                    delay = 0.5 if err.status == 409 else 5.0
                    metrics.RECONCILE_ERRORS.labels("ModelDeployment").inc()
                    logger.warning("reconcile failed: %s", err)
                except Exception:
                    metrics.RECONCILE_ERRORS.labels("ModelDeployment").inc()
                    logger.exception("reconcile failed")
                    delay = 10.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=delay)
        finally:
            ctx.pokes.pop((namespace, name), None)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def modeldeployment_changed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
        memo.ctx.poke(namespace, name)

    @kopf.on.event("apps", "v1", "deployments", registry=registry, labels={builders.LABEL_MODEL: kopf.PRESENT})
    def child_changed(namespace: str, labels: dict[str, str], memo: kopf.Memo, **_: Any) -> None:
        memo.ctx.poke(namespace, labels[builders.LABEL_MODEL])
