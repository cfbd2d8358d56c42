"""kopf handlers for ModelDeployment: thin, level-based, idempotent.

One daemon per ModelDeployment runs the reconcile loop: read the object and its Deployments,
ask the verdict source, call the pure state machine, apply the children, write status, post
events. It runs every few seconds during a rollout and every 30 s at rest, and at once when the
ModelDeployment or one of its Deployments changes. A missed event or an operator restart only
means the next pass does the same work: all state lives in the object's status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from cutover.api.contract import LABEL_MODEL, LABEL_REVISION
from cutover.api.v1alpha1 import GROUP, REQUEST_ANNOTATIONS, VERSION, ModelDeployment

from . import builders, gpu, lifecycle, metrics, pods, safety
from .kube import ApiError, Kube
from .lifecycle import LoopMemory, ObjectKey
from .rollout import (
    AlertAction,
    AnalysisInput,
    Capacity,
    Inputs,
    Plan,
    Request,
    WatchInput,
    autoscaling,
    comparison,
    reasons,
    reconcile,
    requests_in,
)
from .rollout import status as rollout_status
from .rollout.autoscaling import Load
from .verdicts import VerdictSource

PLURAL = "modeldeployments"
ROLLING_INTERVAL = 2.0
RESTING_INTERVAL = 30.0
HANDOVER_MANAGER = "cutover-handover"
"""Field manager that keeps a Deployment's replicas while the operator lets go of them."""


@dataclass(frozen=True)
class Child:
    """What the Deployment index keeps of one of our Deployments."""

    name: str
    revision: str
    ready: int
    owner: str
    wanted: int = 0
    """spec.replicas: pods the Deployment is asked for."""


def child_of(
    name: str, labels: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any], meta: Mapping[str, Any]
) -> Child:
    """What a pass reads of one of our Deployments (its name, labels, spec, status, metadata)."""
    owner = next((r.get("uid", "") for r in meta.get("ownerReferences", []) if r.get("kind") == "ModelDeployment"), "")
    return Child(
        name,
        labels.get(LABEL_REVISION, ""),
        int(status.get("readyReplicas") or 0),
        owner,
        int(spec.get("replicas") or 0),
    )


@dataclass
class SeenChildren:
    """Per Deployment of ours (namespace, name): the :class:`Child` its last watch event gave,
    so that only an event that changes what a pass reads wakes the ModelDeployment's loop. The
    controller writes a Deployment's status several times while its pods start (observed
    generation, replicas, conditions, then ready replicas); each woke a pass that found nothing
    new but the last."""

    seen: dict[tuple[str, str], Child] = field(default_factory=dict)

    def changed(self, event: str | None, namespace: str, name: str, child: Child) -> bool:
        """Record one watch event of a Deployment (DELETED forgets it); whether it changed what a
        pass reads of it (a deletion does)."""
        key = (namespace, name)
        if event == "DELETED":
            self.seen.pop(key, None)
            return True
        if self.seen.get(key) == child:
            return False
        self.seen[key] = child
        return True


@dataclass
class Context:
    """Shared clients and what this process keeps per object, created at startup and kept in
    kopf's memo. Everything kept per object is dropped by :meth:`forget` when its loop ends."""

    kube: Kube
    verdicts: VerdictSource
    loops: LoopMemory = field(default_factory=LoopMemory)
    """Per object: the event that wakes its loop, and our status writes the watch has not echoed."""
    applied: dict[ObjectKey, dict[tuple[str, str], lifecycle.Applied]] = field(default_factory=dict)
    """Per object: what this process last applied of its children, by (kind, name): digest and when."""
    gateway_api: bool = False
    clock: Callable[[], float] = time.time
    serving_otlp_endpoint: str | None = None
    """Where serving pods export their spans (``builders.deployment``); None: they do not trace."""
    serving_ingress: list[dict[str, Any]] | None = None
    """Who may connect to serving pods (``builders.network_policy``); None: no NetworkPolicy."""
    gpus: gpu.GpuView = field(default_factory=gpu.GpuView)
    """The cluster's GPU nodes and GPU pods, watched, for every GPU ModelDeployment's preflight."""
    children: SeenChildren = field(default_factory=SeenChildren)

    def forget(self, key: ObjectKey, uid: str, wake: asyncio.Event) -> None:
        """Drop everything kept about one object whose loop ended (the object is gone, or the
        operator stops), the verdict source's runs included. What is kept by name is left alone
        when its wake-up event is no longer ``wake``: the object was created again under the
        same name and the new loop owns it."""
        self.verdicts.drop(uid)
        if self.loops.forget(key, wake):
            self.applied.pop(key, None)
            metrics.forget(*key)


def annotation_writer(body: dict[str, Any], key: str) -> str:
    """Who last wrote an annotation: the field manager that owns it in managedFields."""
    wanted = f"f:{key}"
    for entry in body.get("metadata", {}).get("managedFields", []) or []:
        annotations = (entry.get("fieldsV1") or {}).get("f:metadata", {}).get("f:annotations", {})
        if wanted in annotations:
            return str(entry.get("manager", ""))
    return ""


async def _capacity(ctx: Context, md: ModelDeployment) -> Capacity | None:
    # The candidate's own pods are what the answer is about: counting them as used would make a
    # placed candidate look short of GPUs on the next pass.
    candidate = md.status.candidate_revision if md.status else None
    mine = (md.metadata.namespace or "", md.metadata.name or "", candidate) if candidate else None
    return await ctx.gpus.preflight(ctx.kube, md.spec.wire()["runtime"], mine)


async def _invalid(
    ctx: Context, key: ObjectKey, body: dict[str, Any], error: ValidationError, logger: logging.Logger
) -> None:
    """A spec only the operator can find wrong: say so in status and an event, once."""
    message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())[:2000]
    old = body.get("status") or {}
    if old.get("phase") == "Failed" and old.get("message") == message:
        return
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    status = rollout_status.invalid(old, body["metadata"].get("generation"), message, now)
    ctx.loops.remember(key, body, await ctx.kube.replace_status(body, status))
    kopf.warn(cast(kopf.Body, body), reason=reasons.INVALID_SPEC, message=message)
    logger.warning("invalid spec: %s", message)


def firing_actions(
    namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[ObjectKey, tuple[AlertAction, ...]]:
    """What one AlertRule (its wire spec and status) asks of the ModelDeployments it fires for:
    per target (namespace, name), one :class:`AlertAction` per instance in state Firing. Empty
    for a rule whose action is none, and for instances that are pending, silenced by a
    maintenance window or resolved; malformed instances are skipped."""
    action = spec.get("action", "none")
    if action not in ("pause", "rollback", "fallback"):
        return {}
    condition = spec.get("condition") or {}
    metric = (spec.get("metric") or {}).get("builtin") or "query"
    relative = " x stable" if condition.get("relativeTo") == "stable" else ""
    out: dict[ObjectKey, list[AlertAction]] = {}
    for instance in status.get("instances") or []:
        target, revision, fired = instance.get("target", ""), instance.get("revision"), instance.get("firedAt")
        if instance.get("state") != "Firing" or "/" not in target or not revision or not fired:
            continue
        try:
            fired_at = datetime.fromisoformat(str(fired).replace("Z", "+00:00"))
        except ValueError:
            continue
        value = instance.get("value")
        shown = f"{value:.4g}" if isinstance(value, int | float) else "?"
        reason = f"{metric} {shown}{relative} {condition.get('operator', '>')} {condition.get('threshold')}"
        target_namespace, target_name = target.split("/", 1)
        if target_namespace != namespace:
            continue  # a rule acts only in its own namespace
        out.setdefault((target_namespace, target_name), []).append(
            AlertAction(name, action, str(revision), fired_at, reason)
        )
    return {key: tuple(actions) for key, actions in out.items()}


async def reconcile_once(
    ctx: Context,
    body: kopf.Body,
    children: list[Child],
    logger: logging.Logger,
    alerts: tuple[AlertAction, ...] = (),
    policy: Callable[[str, str], safety.PolicySummary | None] = lambda namespace, name: None,
    hpa_targets: Collection[str] = (),
) -> float:
    """One pass of the reconcile loop; returns the seconds until the next one. ``alerts``: the
    firing AlertRules that act on this object; ``policy``: the SafetyPolicy of a (namespace,
    name), None when there is none (what ``safetyPolicyRef`` names is looked up in it);
    ``hpa_targets``: the Deployments in its namespace that an HPA scales."""
    started = time.monotonic()
    kube = ctx.kube
    meta = body.get("metadata", {})
    key = (meta.get("namespace", ""), meta.get("name", ""))
    obj = ctx.loops.latest(key, body)
    if obj["metadata"].get("deletionTimestamp"):
        return RESTING_INTERVAL
    try:
        md = ModelDeployment.model_validate(obj)
    except ValidationError as err:
        await _invalid(ctx, key, obj, err, logger)
        return RESTING_INTERVAL
    now = ctx.clock()
    ready = {child.revision: child.ready for child in children}
    requests = tuple(
        Request(r.action, r.id, annotation_writer(obj, REQUEST_ANNOTATIONS[r.action]))
        for r in requests_in(md.metadata.annotations)
    )
    capacity = await _capacity(ctx, md)
    analysis = await _analysis(ctx, md, now, logger)
    watch = await _watch(ctx, md, now, logger)
    problems = await _pod_problems(kube, md, logger) if any(c.ready < c.wanted for c in children) else {}
    at = datetime.fromtimestamp(now, UTC)
    ref = md.spec.safety_policy_ref
    namespace = md.metadata.namespace or ""
    held = safety.readiness(namespace, ref.name, policy(namespace, ref.name)) if ref is not None else None
    external = tuple(sorted(c.name for c in children if c.name in hpa_targets))
    load = await _load(ctx, md, children, at, logger) if not external else None
    plan = reconcile(Inputs(md, ready, at, analysis, requests, capacity, problems, watch, alerts, held, load, external))
    await _apply(ctx, md, plan, children)
    new_status = plan.status.wire()
    if new_status != (obj.get("status") or {}):
        ctx.loops.remember(key, obj, await kube.replace_status(obj, new_status))
    for event in plan.events:
        post = kopf.info if event.type == "Normal" else kopf.warn
        post(cast(kopf.Body, obj), reason=event.reason, message=event.message)
    metrics.observe(md, plan, analysis, time.monotonic() - started)
    if plan.status.candidate_revision or plan.status.phase != "Healthy":
        return ROLLING_INTERVAL
    return autoscaling.SYNC_SECONDS if plan.status.autoscaling is not None else RESTING_INTERVAL


async def _analysis(ctx: Context, md: ModelDeployment, now: float, logger: logging.Logger) -> AnalysisInput | None:
    """The verdict source's answer; when it fails, an ``unavailable`` verdict (weights frozen)
    so that the rest of the pass, on-call requests first, still runs."""
    try:
        return await ctx.verdicts.current(md, now)
    except Exception as err:
        metrics.RECONCILE_ERRORS.labels("ModelDeployment").inc()
        logger.exception("analysis failed")
        judged = comparison(md.spec, md.status)
        if judged is None:
            return None
        reason = f"analysis failed: {type(err).__name__}: {err}"[:500]
        return AnalysisInput(judged, "unavailable", reason, md.spec.analysis.consecutive_error_limit)


async def _load(
    ctx: Context, md: ModelDeployment, children: list[Child], at: datetime, logger: logging.Logger
) -> Load | None:
    """What the autoscaler reads in this pass: the load on the revisions that take live
    traffic (stable when the table is empty), when runtime.autoscaling is set, the operator
    scales the model and a sync period has passed; None otherwise. A failure reads as no
    metric (the count is held)."""
    stored = md.status
    if md.spec.runtime.autoscaling is None or stored is None or autoscaling.scaled_by(md) is not None:
        return None
    if not autoscaling.due(stored.autoscaling, at):
        return None
    live = [row.revision for row in stored.traffic if row.weight > 0] or [stored.stable_revision or ""]
    pods = sum(c.ready for c in children if c.revision in live)
    try:
        return await ctx.verdicts.load(md, live, pods, at.timestamp())
    except Exception as err:
        metrics.RECONCILE_ERRORS.labels("ModelDeployment").inc()
        logger.exception("reading the autoscaler's metrics failed")
        return Load({}, pods, f"{type(err).__name__}: {err}"[:300])


async def _watch(ctx: Context, md: ModelDeployment, now: float, logger: logging.Logger) -> WatchInput | None:
    """The post-promotion watch's finding; a failure is logged and counts as no finding."""
    try:
        return await ctx.verdicts.watch(md, now)
    except Exception:
        metrics.RECONCILE_ERRORS.labels("ModelDeployment").inc()
        logger.exception("post-promotion watch failed")
        return None


async def _pod_problems(kube: Kube, md: ModelDeployment, logger: logging.Logger) -> dict[str, pods.PodProblem]:
    """Why the pods of a revision that is short of ready pods are not ready (best effort: a
    failed list only leaves the status less precise)."""
    try:
        items = await kube.list("v1", "Pod", md.metadata.namespace, label_selector=f"{LABEL_MODEL}={md.metadata.name}")
    except ApiError as err:
        logger.warning("could not list pods: %s", err)
        return {}
    return pods.problems(items)


async def gone(kube: Kube, kind: str, body: kopf.Body) -> bool:
    """Whether the object of ``kind`` (one of ours) a loop serves no longer exists (deleted, or
    recreated under the same name with another uid) while no watch event said so."""
    meta = body.get("metadata", {})
    try:
        current = await kube.get(f"{GROUP}/{VERSION}", kind, meta.get("namespace"), meta["name"])
    except ApiError as err:
        return err.status == 404
    return bool(current.get("metadata", {}).get("uid") != meta.get("uid"))


async def _apply(ctx: Context, md: ModelDeployment, plan: Plan, children: list[Child]) -> None:
    """Apply every child of the plan; delete the children of revisions the plan no longer has.

    A child identical to what this process applied lately is not sent again (at rest that is
    most passes); after its re-apply interval (``lifecycle.apply_due``) it is, which also
    repairs children someone edited or deleted by hand."""
    kube = ctx.kube
    namespace = md.metadata.namespace
    applied = ctx.applied.setdefault((namespace or "", md.metadata.name or ""), {})
    now = time.monotonic()
    unowned = (
        {builders.child_name(md, w.revision) for w in plan.workloads}
        if autoscaling.scaled_by(md) is not None
        else set(plan.status.scaled_externally)
    )
    traffic = list(plan.status.traffic)
    live = {c.name: c.wanted for c in children}
    due: list[tuple[tuple[str, str], str, dict[str, Any]]] = []
    for child in builders.children(
        md, plan.workloads, traffic, ctx.serving_otlp_endpoint, unowned, ctx.serving_ingress
    ):
        if child["kind"] == "HTTPRoute" and not ctx.gateway_api:
            continue
        key = (child["kind"], child["metadata"]["name"])
        body = lifecycle.digest(child)
        if lifecycle.apply_due(applied.get(key), body, now, f"{namespace}/{key[0]}/{key[1]}"):
            due.append((key, body, child))

    async def send(key: tuple[str, str], digest: str, child: dict[str, Any]) -> None:
        if key[1] in unowned and key[1] in live:
            await _hand_over_replicas(kube, child, live[key[1]])
        await _apply_child(kube, child)
        applied[key] = (digest, now)

    # All at once, each waiting on the API server alone: one after the other, a new
    # ModelDeployment's pass waited for its two Services' cluster IPs (seconds each on a busy
    # control plane) one after the other, and its Deployment for both.
    for sent in await asyncio.gather(*(send(*args) for args in due), return_exceptions=True):
        if isinstance(sent, BaseException):
            raise sent
    wanted = {w.revision for w in plan.workloads}
    for old in children:
        if old.revision in wanted or old.owner != md.metadata.uid:
            continue
        # The Deployment goes last: while it exists, the next pass still sees the revision.
        for api_version, kind in (("v1", "Service"), ("policy/v1", "PodDisruptionBudget"), ("apps/v1", "Deployment")):
            await kube.delete(api_version, kind, namespace, old.name)
            applied.pop((kind, old.name), None)


async def _apply_child(kube: Kube, child: dict[str, Any]) -> None:
    """Server-side apply one child. A Service whose cluster IP the child changes (the stable
    fallback Service, headless since this release, had one before) cannot be changed in place:
    the API server refuses ``spec.clusterIP`` once set, so it is deleted and created again. Its
    clients are the model's own pods' fallback links, which resolve the name on their next
    connection."""
    try:
        await kube.apply(child)
    except ApiError as err:
        if not (child["kind"] == "Service" and err.status == 422 and "spec.clusterIP" in str(err)):
            raise
        meta = child["metadata"]
        logging.getLogger("cutover.operator").info(
            "recreating Service %s/%s: its cluster IP cannot change in place", meta["namespace"], meta["name"]
        )
        await kube.delete("v1", "Service", meta["namespace"], meta["name"])
        await kube.apply(child)


async def _hand_over_replicas(kube: Kube, deployment: dict[str, Any], replicas: int) -> None:
    """Before the operator applies a Deployment without ``spec.replicas`` (another scaler owns
    it), a second field manager claims the count it has now: otherwise the API server would
    reset a field its only manager dropped to its default, 1 pod, until the HPA notices. This
    is the handover the Kubernetes docs give (Server-Side Apply, "Transferring ownership")."""
    meta = deployment["metadata"]
    claim = {
        "apiVersion": deployment["apiVersion"],
        "kind": deployment["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": replicas},
    }
    await kube.apply(claim, field_manager=HANDOVER_MANAGER)


# ----------------------------------------------------------------------------- registration


def register(registry: kopf.OperatorRegistry, shard: lifecycle.Shard | None = None) -> None:
    """Attach the handlers to a registry (a fresh one per operator run). With ``shard``, only
    that shard's ModelDeployments get a loop; the indices still see every object, so an
    AlertRule or SafetyPolicy served by another shard still acts on this shard's objects."""

    @kopf.index(
        "apps",
        "v1",
        "deployments",
        id="deployments_by_model",
        registry=registry,
        labels={LABEL_MODEL: kopf.PRESENT},
    )
    async def deployments_by_model(
        namespace: str | None,
        name: str,
        labels: Mapping[str, str],
        spec: kopf.Spec,
        status: kopf.Status,
        meta: kopf.Meta,
        **_: Any,
    ) -> dict[tuple[str, str], Child]:
        return {(namespace or "", labels[LABEL_MODEL]): child_of(name, labels, spec, status, meta)}

    @kopf.index("autoscaling", "v2", "horizontalpodautoscalers", id="hpa_targets", registry=registry)
    async def hpa_targets(namespace: str | None, spec: kopf.Spec, **_: Any) -> dict[str, str]:
        # KEDA makes one HPA per ScaledObject, so this finds KEDA too.
        target = spec.get("scaleTargetRef") or {}
        if target.get("kind") != "Deployment" or not target.get("name"):
            return {}
        return {namespace or "": str(target["name"])}

    @kopf.index(GROUP, VERSION, "alertrules", id="alert_actions", registry=registry)
    async def alert_actions(
        namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
    ) -> dict[ObjectKey, tuple[AlertAction, ...]]:
        return firing_actions(namespace or "", name, spec, status)

    @kopf.index(GROUP, VERSION, "safetypolicies", id="safety_policies", registry=registry)
    async def safety_policies(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[ObjectKey, safety.PolicySummary]:
        return {(namespace or "", name): safety.summarise(body)}

    @kopf.on.event(GROUP, VERSION, "alertrules", registry=registry)
    async def alertrule_changed(
        namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, memo: kopf.Memo, **_: Any
    ) -> None:
        for target_namespace, target in firing_actions(namespace or "", name, spec, status):
            memo.ctx.loops.poke(target_namespace, target)

    @lifecycle.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10.0, shard=shard)
    async def modeldeployment_loop(
        stopped: lifecycle.Stopped,
        namespace: str,
        name: str,
        body: kopf.Body,
        memo: kopf.Memo,
        deployments_by_model: kopf.Index[tuple[str, str], Child],
        alert_actions: kopf.Index[ObjectKey, tuple[AlertAction, ...]],
        safety_policies: kopf.Index[ObjectKey, safety.PolicySummary],
        hpa_targets: kopf.Index[str, str],
        logger: logging.Logger,
        **_: Any,
    ) -> None:
        ctx: Context = memo.ctx
        key = (namespace, name)
        uid = str(body.get("metadata", {}).get("uid", ""))

        def policy(policy_namespace: str, policy_name: str) -> safety.PolicySummary | None:
            return next(iter(safety_policies.get((policy_namespace, policy_name), [])), None)

        async def one_pass() -> float:
            children = list(deployments_by_model.get(key, []))
            alerts = tuple(a for actions in alert_actions.get(key, []) for a in actions)
            scaled = set(hpa_targets.get(namespace, []))
            return await reconcile_once(ctx, body, children, logger, alerts, policy, scaled)

        await lifecycle.serve(
            ctx.loops,
            key,
            stopped,
            one_pass,
            what="ModelDeployment",
            gone=lambda: gone(ctx.kube, "ModelDeployment", body),
            forget=lambda wake: ctx.forget(key, uid, wake),
            failed=lambda reason: metrics.RECONCILE_ERRORS.labels("ModelDeployment").inc(),
            log=logger,
        )

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def modeldeployment_changed(
        namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
    ) -> None:
        if memo.ctx.loops.observed((namespace or "", name), body):
            memo.ctx.loops.poke(namespace or "", name)

    @kopf.on.event("apps", "v1", "deployments", registry=registry, labels={LABEL_MODEL: kopf.PRESENT})
    async def child_changed(
        type: str | None,
        namespace: str | None,
        name: str,
        labels: Mapping[str, str],
        spec: kopf.Spec,
        status: kopf.Status,
        meta: kopf.Meta,
        memo: kopf.Memo,
        **_: Any,
    ) -> None:
        if memo.ctx.children.changed(type, namespace or "", name, child_of(name, labels, spec, status, meta)):
            memo.ctx.loops.poke(namespace or "", labels[LABEL_MODEL])
