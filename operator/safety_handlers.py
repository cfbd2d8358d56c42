"""kopf handlers for SafetyPolicy: one thin loop per policy, like the ModelDeployment loop.

A pass validates the policy, renders its ConfigMap, copies its crisis webhook's Secret (when
it names one), writes status (Ready, observedGeneration, the ModelDeployments that reference
it) and posts an Event when Ready changes; the decisions are in :mod:`.safety`. It runs when the
policy's spec changes, when a ModelDeployment starts or stops referencing it, and every
``RESTING_INTERVAL`` seconds, which also repairs a rendered object someone edited or deleted and
copies a rotated webhook Secret. The Secret is read by name at each pass, never watched: a
watch would need the right to list every Secret of the namespace (docs/access.md).

The ModelDeployment side is in :mod:`.handlers`: it reads each policy's readiness from the
``safety_policies`` index and is poked when a policy changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from cutover.api.v1alpha1 import GROUP, VERSION, SafetyPolicy

from . import handlers, lifecycle, metrics, safety
from .kube import ApiError, Kube
from .secrets import SecretUnavailable, secret_text

PLURAL = "safetypolicies"
RESTING_INTERVAL = 30.0

PolicyKey = tuple[str, str]
"""A SafetyPolicy's (namespace, name)."""


@dataclass
class SafetyContext:
    """The shared client and what this process keeps per policy (dropped by :meth:`forget`)."""

    kube: Kube
    loops: lifecycle.LoopMemory = field(default_factory=lifecycle.LoopMemory)
    """Per policy: the event that wakes its loop, and our status writes the watch has not echoed."""
    applied: dict[PolicyKey, dict[str, lifecycle.Applied]] = field(default_factory=dict)
    """Per policy: digest of the ConfigMap / Secret last applied (by kind), and when."""
    references: dict[PolicyKey, str] = field(default_factory=dict)
    """Per ModelDeployment (namespace, name): the policy its spec referenced when last seen."""
    clock: Callable[[], float] = time.time

    def forget(self, key: PolicyKey, wake: asyncio.Event) -> None:
        """Drop what is kept about a policy whose loop ended (unless a new loop owns the name)."""
        if self.loops.forget(key, wake):
            self.applied.pop(key, None)


async def _apply(ctx: SafetyContext, key: PolicyKey, obj: dict[str, Any]) -> None:
    """Server-side apply ``obj`` unless this process applied the same lately (``lifecycle.apply_due``)."""
    applied = ctx.applied.setdefault(key, {})
    wanted, now = lifecycle.digest(obj), time.monotonic()
    if not lifecycle.apply_due(applied.get(obj["kind"]), wanted, now, f"{key[0]}/{obj['kind']}/{key[1]}"):
        return
    await ctx.kube.apply(obj)
    applied[obj["kind"]] = (wanted, now)


async def _drop_copied_secret(ctx: SafetyContext, key: PolicyKey, policy: SafetyPolicy) -> None:
    """Delete the Secret an earlier generation copied the webhook URL into (ours only)."""
    applied = ctx.applied.setdefault(key, {})
    if applied.get("Secret") == ("", 0.0):
        return  # already known to be absent
    name = safety.object_name(key[1])
    try:
        current = await ctx.kube.get("v1", "Secret", key[0], name)
    except ApiError as err:
        if err.status != 404:
            raise
    else:
        if safety.owned_by(current, policy.metadata.uid):
            await ctx.kube.delete("v1", "Secret", key[0], name)
    applied["Secret"] = ("", 0.0)


async def reconcile_policy(
    ctx: SafetyContext, key: PolicyKey, body: kopf.Body, deployments: list[str], logger: logging.Logger
) -> float:
    """One pass over one SafetyPolicy; returns the seconds until the next one."""
    obj = ctx.loops.latest(key, body)
    meta = obj.get("metadata", {})
    if meta.get("deletionTimestamp"):
        return RESTING_INTERVAL
    policy: SafetyPolicy | None = None
    invalid = ""
    try:
        policy = SafetyPolicy.model_validate(obj)
    except ValidationError as err:
        invalid = safety.validation_message(err)
    secret_problem: str | None = None
    if policy is not None:
        await _apply(ctx, key, safety.config_map(policy, safety.document(policy)))
        ref = safety.escalation_ref(policy)
        if ref is None:
            await _drop_copied_secret(ctx, key, policy)
        else:
            try:
                url = await secret_text(ctx.kube, key[0], ref, "crisis.escalationWebhook.urlSecretRef")
            except SecretUnavailable as err:
                secret_problem = str(err)
            else:
                await _apply(ctx, key, safety.escalation_secret(policy, url))
    assessment = safety.assess(policy, invalid, secret_problem)
    old = obj.get("status") or {}
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    new = safety.status(old, assessment, meta.get("generation"), deployments, now)
    if new != old:
        ctx.loops.remember(key, obj, await ctx.kube.replace_status(obj, new))
    before = next((c for c in old.get("conditions") or [] if c.get("type") == safety.READY), None)
    told = (before.get("status"), before.get("reason"), before.get("message")) if before else None
    if told != ("True" if assessment.ready else "False", assessment.reason, assessment.message):
        post = kopf.info if assessment.ready else kopf.warn
        post(cast(kopf.Body, obj), reason=assessment.reason, message=assessment.message)
        if not assessment.ready:
            logger.warning("SafetyPolicy not ready: %s", assessment.message)
    return RESTING_INTERVAL


def reference_of(spec: Mapping[str, Any]) -> str | None:
    """The SafetyPolicy a ModelDeployment's wire spec references, if any."""
    ref = spec.get("safetyPolicyRef") or {}
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return str(name) if name else None


# ----------------------------------------------------------------------------- registration


def register(registry: kopf.OperatorRegistry, shard: lifecycle.Shard | None = None) -> None:
    """Attach the SafetyPolicy handlers to a registry; they find their :class:`SafetyContext` at
    ``memo.safety`` (set at startup), and the ``policy_references`` index (which
    ModelDeployments reference each policy). The ModelDeployment handlers register the
    ``safety_policies`` index they read."""

    @kopf.index(GROUP, VERSION, "modeldeployments", id="policy_references", registry=registry)
    async def policy_references(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[PolicyKey, str]:
        policy = reference_of(spec)
        return {(namespace or "", policy): name} if policy else {}

    @lifecycle.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10.0, shard=shard)
    async def safetypolicy_loop(
        stopped: lifecycle.Stopped,
        namespace: str,
        name: str,
        body: kopf.Body,
        memo: kopf.Memo,
        policy_references: kopf.Index[PolicyKey, str],
        logger: logging.Logger,
        **_: Any,
    ) -> None:
        ctx: SafetyContext = memo.safety
        key = (namespace, name)

        async def one_pass() -> float:
            delay = await reconcile_policy(ctx, key, body, list(policy_references.get(key, [])), logger)
            metrics.RECONCILES.labels("SafetyPolicy").inc()
            return delay

        await lifecycle.serve(
            ctx.loops,
            key,
            stopped,
            one_pass,
            what="SafetyPolicy",
            gone=lambda: handlers.gone(ctx.kube, "SafetyPolicy", body),
            forget=lambda wake: ctx.forget(key, wake),
            failed=lambda reason: metrics.RECONCILE_ERRORS.labels("SafetyPolicy").inc(),
            log=logger,
        )

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="safetypolicy_changed")
    async def safetypolicy_changed(
        namespace: str | None,
        name: str,
        body: kopf.Body,
        memo: kopf.Memo,
        **kwargs: Any,
    ) -> None:
        key = (namespace or "", name)
        references: kopf.Index[PolicyKey, str] = kwargs["policy_references"]  # kopf passes every index
        ctx: SafetyContext | None = getattr(memo, "safety", None)
        if ctx is not None and (body.get("status") or {}).get("observedGeneration") != body.get("metadata", {}).get(
            "generation"
        ):
            ctx.loops.poke(*key)  # a spec change; our own status writes come back as events too
        # Its ModelDeployments read its readiness (a status change included) from the index.
        md_ctx = getattr(memo, "ctx", None)
        if md_ctx is not None:
            for deployment in references.get(key, []):
                md_ctx.loops.poke(key[0], deployment)

    @kopf.on.event(GROUP, VERSION, "modeldeployments", registry=registry, id="safety_reference_changed")
    async def safety_reference_changed(
        type: str | None, namespace: str | None, name: str, spec: kopf.Spec, memo: kopf.Memo, **_: Any
    ) -> None:
        ctx: SafetyContext | None = getattr(memo, "safety", None)
        if ctx is None:
            return
        md = (namespace or "", name)
        now = None if type == "DELETED" else reference_of(spec)
        before = ctx.references.get(md)
        if now == before:
            return
        if now is None:
            ctx.references.pop(md, None)
        else:
            ctx.references[md] = now
        for policy in (before, now):
            if policy is not None:
                ctx.loops.poke(md[0], policy)
