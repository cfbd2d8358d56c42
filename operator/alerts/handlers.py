"""kopf handlers for AlertRule: one thin loop per rule, like the ModelDeployment loop.

Every ``spec.interval`` (and at once when the rule changes) a pass reads the rule, finds its
target ModelDeployments, measures each live revision (evaluator.py, through the target's own
Prometheus and bearer token), steps the instances (instances.py) unless a maintenance window
silences them (windows.py), plans and delivers notifications (notify.py), renders and applies
the PrometheusRule where that CRD exists (render.py), writes status and posts Events
(status.py). Actions are not taken here: the ModelDeployment loop reads the Firing instances
from this rule's status (handlers.firing_actions) and acts through its state machine.

Nothing a rule holds can stop the operator or another rule: every problem becomes a condition
and an Event on the rule, and an unexpected error ends only this pass (logged, counted, retried).
The instances live in status, so an operator restart resumes them; what notify.py remembers
between evaluations is kept per rule in memory (a restart re-announces a group that still
fires, under the same dedupe key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import kopf
from pydantic import ValidationError

from cutover.analysis import PrometheusProvider
from cutover.api.v1alpha1 import GROUP, VERSION, AlertRule, Condition, ModelDeployment, seconds
from cutover.api.v1alpha1.alertrule import AlertRuleStatus
from cutover.api.v1alpha1.base import LabelSelector

from .. import handlers, lifecycle, metrics
from ..kube import ApiError, Kube
from ..secrets import SecretUnavailable, secret_text
from . import notify, render, windows
from .evaluator import Evaluation, Problem, PrometheusUnavailable, evaluate, live_revisions
from .instances import Instance, Observation, advance
from .status import INVALID_WINDOW, STALLED, TARGET_NOT_FOUND, Delivered, Event, decide, restore

PLURAL = "alertrules"
ERROR_DELAY = 10.0

RuleKey = tuple[str, str]
"""An AlertRule's (namespace, name)."""


@dataclass
class AlertContext:
    """Shared clients and what this process keeps per rule (dropped by :meth:`forget`)."""

    kube: Kube
    http: httpx.AsyncClient
    notifier: notify.Notifier
    prometheus_rules: bool = False
    """Whether the PrometheusRule CRD (monitoring.coreos.com/v1) exists in the cluster."""
    loops: lifecycle.LoopMemory = field(default_factory=lifecycle.LoopMemory)
    """Per rule: the event that wakes its loop, and our status writes the watch has not echoed."""
    instances: dict[RuleKey, list[Instance]] = field(default_factory=dict)
    """Per rule: the instances after its last evaluation (the status may lag behind our write)."""
    memory: dict[RuleKey, notify.NotifyMemory] = field(default_factory=dict)
    applied: dict[RuleKey, lifecycle.Applied] = field(default_factory=dict)
    """Per rule: digest of the PrometheusRule last applied, and when."""
    clock: Callable[[], float] = time.time

    def forget(self, key: RuleKey, wake: asyncio.Event) -> None:
        """Drop what is kept about a rule whose loop ended (unless a new loop owns the name)."""
        if self.loops.forget(key, wake):
            for kept in (self.instances, self.memory, self.applied):
                kept.pop(key, None)
            self.notifier.forget("/".join(key))
            metrics.forget_alert(*key)


def selector_text(selector: LabelSelector) -> str:
    """A label selector in the API's query syntax (``team=risk,tier in (a,b),!legacy``)."""
    parts = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for expression in selector.match_expressions:
        values = ",".join(expression.values)
        parts.append(
            {
                "In": f"{expression.key} in ({values})",
                "NotIn": f"{expression.key} notin ({values})",
                "Exists": expression.key,
                "DoesNotExist": f"!{expression.key}",
            }[expression.operator]
        )
    return ",".join(parts)


async def targets(kube: Kube, rule: AlertRule) -> tuple[list[ModelDeployment], list[Problem]]:
    """The ModelDeployments ``rule`` watches (in its namespace), and what is wrong with finding them."""
    namespace = rule.metadata.namespace
    if rule.spec.target.name is not None:
        try:
            bodies = [await kube.get(f"{GROUP}/{VERSION}", "ModelDeployment", namespace, rule.spec.target.name)]
        except ApiError as err:
            if err.status != 404:
                raise
            return [], [Problem(TARGET_NOT_FOUND, f"ModelDeployment {namespace}/{rule.spec.target.name} not found")]
    else:
        assert rule.spec.target.selector is not None
        selector = selector_text(rule.spec.target.selector)
        bodies = await kube.list(f"{GROUP}/{VERSION}", "ModelDeployment", namespace, label_selector=selector)
        if not bodies:
            return [], [Problem(TARGET_NOT_FOUND, f"no ModelDeployment in {namespace} matches {selector}")]
    found: list[ModelDeployment] = []
    problems: list[Problem] = []
    for body in bodies:
        try:
            found.append(ModelDeployment.model_validate(body))
        except ValidationError:
            meta = body.get("metadata", {})
            problems.append(
                Problem(TARGET_NOT_FOUND, f"ModelDeployment {namespace}/{meta.get('name')} has an invalid spec")
            )
    return found, problems


async def measure(ctx: AlertContext, rule: AlertRule, md: ModelDeployment, at: float) -> Evaluation:
    """Evaluate ``rule`` on ``md`` through the Prometheus its analysis reads (address, timeout,
    bearer token); a token that cannot be read is no data for every revision, saying why."""
    source = md.spec.analysis.prometheus
    headers = None
    if source.bearer_token_secret_ref is not None:
        try:
            token = await secret_text(
                ctx.kube,
                md.metadata.namespace or "",
                source.bearer_token_secret_ref,
                "analysis.prometheus.bearerTokenSecretRef",
            )
        except SecretUnavailable as err:
            problem = PrometheusUnavailable(str(err))
            target = f"{md.metadata.namespace}/{md.metadata.name}"
            return Evaluation(
                tuple(
                    Observation(target, md.spec.model.name, revision, role, None, str(problem))
                    for revision, role in live_revisions(md)
                ),
                (Problem(problem.reason, f"{target}: {problem}"),),
            )
        headers = {"Authorization": f"Bearer {token}"}
    provider = PrometheusProvider(ctx.http, source.address, timeout=seconds(source.timeout), headers=headers)
    return await evaluate(provider, rule, md, at)


async def reread(ctx: AlertContext, key: RuleKey, body: kopf.Body) -> None:
    """After a 409 (someone else wrote the rule since we read it): read it again, so the next
    evaluation starts from the server's version instead of waiting for the watch."""
    current = await ctx.kube.get(f"{GROUP}/{VERSION}", "AlertRule", key[0], key[1])
    if current.get("metadata", {}).get("uid") != body.get("metadata", {}).get("uid"):
        return
    ctx.loops.supersede(key, str(body.get("metadata", {}).get("resourceVersion")), current)


async def evaluate_once(ctx: AlertContext, key: RuleKey, body: kopf.Body, logger: logging.Logger) -> float:
    """One evaluation of the rule; returns the seconds until the next one."""
    obj = ctx.loops.latest(key, body)
    try:
        rule = AlertRule.model_validate(obj)
    except ValidationError as err:
        await _invalid(ctx, key, obj, err, logger)
        return ERROR_DELAY * 3
    now_ts = ctx.clock()
    now = datetime.fromtimestamp(now_ts, UTC)
    found, problems = await targets(ctx.kube, rule)
    evaluations = await asyncio.gather(*(measure(ctx, rule, md, now_ts) for md in found))
    observations = [o for e in evaluations for o in e.observations]
    problems += [p for e in evaluations for p in e.problems]
    problems += [Problem(INVALID_WINDOW, text) for text in windows.problems(rule.spec.maintenance_windows, now)]
    window = windows.open_window(rule.spec.maintenance_windows, now)

    previous = ctx.instances.get(key)
    if previous is None:
        previous = restore(rule.status)
    condition = rule.spec.condition
    instances = advance(
        previous,
        observations,
        operator=condition.operator,
        threshold=condition.threshold,
        for_=rule.spec.for_,
        now=now,
        silenced=window is not None,
    )
    messages, memory = notify.plan(rule, instances, ctx.memory.get(key, notify.NotifyMemory()), now, window is not None)
    result = await ctx.notifier.deliver(rule, messages)
    ctx.instances[key], ctx.memory[key] = instances, memory
    delivered = Delivered(result.sent, result.failed, tuple(result.errors), notify.next_due(rule, memory))
    status, events = decide(rule, rule.status, instances, problems, window, delivered, now)

    if ctx.prometheus_rules:
        events += await _apply_rule(ctx, key, rule, found, logger)
    await _write(ctx, key, obj, status)
    for event in events:
        post = kopf.info if event.type == "Normal" else kopf.warn
        post(cast(kopf.Body, obj), reason=event.reason, message=event.message)
    metrics.observe_alert(
        key[0], key[1], [i.state for i in instances], [p.reason for p in problems], result.sent, result.failed
    )
    return seconds(rule.spec.interval)


async def _write(ctx: AlertContext, key: RuleKey, obj: dict[str, Any], status: AlertRuleStatus) -> None:
    wire = status.wire()
    if wire != (obj.get("status") or {}):
        ctx.loops.remember(key, obj, await ctx.kube.replace_status(obj, wire))


async def _apply_rule(
    ctx: AlertContext, key: RuleKey, rule: AlertRule, found: list[ModelDeployment], logger: logging.Logger
) -> list[Event]:
    """Apply the rendered PrometheusRule when it changed (or its re-apply is due:
    ``lifecycle.apply_due``); a refusal is an Event, not a failed evaluation."""
    wanted = render.prometheus_rule(rule, found)
    digest, now = lifecycle.digest(wanted), time.monotonic()
    if not lifecycle.apply_due(ctx.applied.get(key), digest, now, f"{key[0]}/PrometheusRule/{key[1]}"):
        return []
    try:
        await ctx.kube.apply(wanted)
    except ApiError as err:
        logger.warning("could not apply the PrometheusRule: %s", err)
        return [Event("Warning", "PrometheusRuleFailed", f"could not apply PrometheusRule {key[0]}/{key[1]}: {err}")]
    ctx.applied[key] = (digest, now)
    return []


async def _invalid(
    ctx: AlertContext, key: RuleKey, obj: dict[str, Any], error: ValidationError, logger: logging.Logger
) -> None:
    """A spec only the operator can find wrong: Ready False and Stalled True with InvalidSpec,
    and one Event."""
    message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())[:2000]
    old = obj.get("status") or {}
    ready: dict[str, Any] = next((c for c in old.get("conditions") or [] if c.get("type") == "Ready"), {})
    if ready.get("reason") == "InvalidSpec" and ready.get("message") == message:
        return
    ours = [
        Condition(
            type=type_,
            status=state,
            reason="InvalidSpec",
            message=message,
            last_transition_time=datetime.now(UTC),
            observed_generation=obj["metadata"].get("generation"),
        ).wire()
        for type_, state in (("Ready", "False"), (STALLED, "True"))
    ]
    others = [c for c in old.get("conditions") or [] if c.get("type") not in ("Ready", STALLED)]
    status = {**old, "conditions": [*ours, *others], "observedGeneration": obj["metadata"].get("generation")}
    ctx.loops.remember(key, obj, await ctx.kube.replace_status(obj, status))
    kopf.warn(cast(kopf.Body, obj), reason="InvalidSpec", message=message)
    metrics.ALERT_EVALUATION_ERRORS.labels(key[0], key[1], "InvalidSpec").inc()
    logger.warning("invalid AlertRule spec: %s", message)


# ----------------------------------------------------------------------------- registration


def register(registry: kopf.OperatorRegistry, shard: lifecycle.Shard | None = None) -> None:
    """Attach the AlertRule handlers to a registry; they find their :class:`AlertContext` at
    ``memo.alerts`` (set at startup)."""

    @lifecycle.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10.0, shard=shard)
    async def alertrule_loop(
        stopped: lifecycle.Stopped,
        namespace: str,
        name: str,
        body: kopf.Body,
        memo: kopf.Memo,
        logger: logging.Logger,
        **_: Any,
    ) -> None:
        ctx: AlertContext = memo.alerts
        key = (namespace, name)
        await lifecycle.serve(
            ctx.loops,
            key,
            stopped,
            lambda: evaluate_once(ctx, key, body, logger),
            what="AlertRule",
            gone=lambda: handlers.gone(ctx.kube, "AlertRule", body),
            forget=lambda wake: ctx.forget(key, wake),
            failed=lambda reason: metrics.ALERT_EVALUATION_ERRORS.labels(namespace, name, reason).inc(),
            log=logger,
            conflict=lambda: reread(ctx, key, body),
        )

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="alertrule_spec_changed")
    async def alertrule_spec_changed(
        namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
    ) -> None:
        # Only a change of the spec wakes the loop: our own status writes come back as events too.
        ctx: AlertContext | None = getattr(memo, "alerts", None)
        key = (namespace or "", name)
        if ctx is None:
            return
        generation = body.get("metadata", {}).get("generation")
        status = body.get("status") or {}
        if status.get("observedGeneration") != generation:
            ctx.loops.poke(*key)
