"""Notifications of an AlertRule: what to send and when (pure), what it says, and its delivery.

**Planning** (:func:`plan`, no I/O, no clock) turns the instances of one evaluation into messages:

- Instances fold into groups by ``grouping.by`` (model, revision, namespace, severity); without
  grouping each instance (target x revision) is its own group and ``wait`` is zero.
- A group's *episode* begins when one of its instances fires (the earliest ``firedAt``, so a
  restarted operator finds the same episode) and ends when none fires any more. The first firing
  message goes ``wait`` after the episode begins, gathering what fires together; an episode
  over before that sends nothing (as Alertmanager's ``group_wait``).
- While the group fires the message repeats after ``repeat.interval``, each wait
  ``backoffFactor`` times the previous one, up to ``maxInterval`` (5m, 10m, 20m, 40m, 1h, 1h...
  with the defaults and a 1h cap). An instance that starts firing in a group already notified
  is news: the group notifies at once, and the backoff carries on from there.
- When the group stops firing (its instances resolved, or gone: a rolled-back candidate is no
  longer evaluated) one resolved message names the instances the last firing message named.
- While silenced (a maintenance window) nothing is sent and the memory stands still, so a
  group that still fires when the window ends is notified then (its repeat is overdue), and one
  that resolved inside the window sends its resolved message then: receivers never keep an
  incident open because its resolve fell into a window.

**Dedupe key**: a hash of the rule, its severity and the group's labels; the same for every
message of the group (firing, repeats, resolved), across episodes and operator restarts, so an
incident tool folds them into one incident. Each delivery also carries an ``Idempotency-Key``
header (dedupe key, episode start, which message of the episode) that differs between repeats.

**Bodies**: :func:`webhook_body` is cutover's JSON (top-level rule, severity, state, dedupeKey,
instances with values and thresholds, links to the runbook and the ModelDeployments) laid over
Alertmanager's webhook v4 fields (``version``, ``groupKey``, ``status``, ``alerts``...) so a
receiver written for Alertmanager reads it too. :func:`slack_body` is a Slack incoming-webhook
message: ``text`` (what notifications and clients without blocks show) and ``blocks``.

**Delivery** (:class:`Notifier`): the URL from ``notifications[].url`` or its
``urlSecretRef`` (read at every delivery, so a rotated Secret is used at once); a POST per
message and target, all concurrently; each attempt bounded by the target's ``timeoutSeconds``
(a receiver that hangs times out); network errors, timeouts, 5xx and 429 are retried with
exponential backoff (429's ``Retry-After`` honoured up to a cap); a redirect is not followed,
since a webhook URL that moved should be corrected, and POST bodies must not be replayed to
wherever a Location points; other 4xx answers are final. Every failure is a sentence naming the
target (``notifications[1] (slack, URL from Secret ns/name key k)``) and what went wrong, never
the URL from a Secret (it is the credential), for the handler's condition and Event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from cutover.api import contract
from cutover.api.v1alpha1 import AlertRule, seconds
from cutover.api.v1alpha1.alertrule import Notification
from cutover.serving.kube import Kube, path

from ..secrets import SecretUnavailable, secret_text
from .instances import Instance

GroupKey = tuple[tuple[str, str], ...]
"""A group's labels and values, in ``grouping.by`` order: ``(("model", "fraud"), ("severity", "critical"))``."""

UNGROUPED = ("target", "revision")
"""The labels of a group when the rule has no ``grouping``: each instance alone."""


@dataclass(frozen=True)
class Message:
    """One notification: a group's firing (first or repeated) or resolved message."""

    rule: str
    """``namespace/name`` of the AlertRule."""
    group: GroupKey
    """The grouping labels and values this message is about."""
    state: Literal["firing", "resolved"]
    instances: tuple[Instance, ...]
    """Firing: the group's firing instances. Resolved: the instances the last firing message named,
    as they are now (an instance no longer evaluated shows Resolved with a message saying so)."""
    dedupe_key: str
    """Stable for the group: every message of it, every episode, across restarts."""
    episode: datetime
    """When the group's episode began (its first instance fired)."""
    sequence: int = 0
    """Which firing message of the episode this is (0: the first); resolved messages keep the last."""

    @property
    def idempotency_key(self) -> str:
        """Unique per message of an episode: the ``Idempotency-Key`` header of each delivery."""
        which = "resolved" if self.state == "resolved" else f"firing-{self.sequence}"
        return f"{self.dedupe_key}-{int(self.episode.timestamp())}-{which}"


@dataclass(frozen=True)
class GroupMemory:
    """What planning remembers of one group between evaluations."""

    episode: datetime
    """When the episode began."""
    last_sent: datetime | None = None
    """When its last firing message was planned; None while it waits out ``grouping.wait``."""
    sent: int = 0
    """Firing messages planned this episode."""
    repeats: int = 0
    """Of those, the scheduled repeats: the exponent of the backoff."""
    notified: tuple[Instance, ...] = ()
    """The instances the last firing message named."""


@dataclass(frozen=True)
class NotifyMemory:
    """What the handler keeps per rule between evaluations: one :class:`GroupMemory` per group
    in an episode. Empty for a new rule or after an operator restart (then a group that still
    fires is notified once more, under the same dedupe key)."""

    groups: Mapping[GroupKey, GroupMemory] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryResult:
    """What :meth:`Notifier.deliver` did: deliveries (message x target) that got a 2xx, those that
    did not, and one sentence per distinct failure."""

    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


# ---- planning ------------------------------------------------------------------------------------


def group_of(rule: AlertRule, instance: Instance) -> GroupKey:
    """The group ``instance`` belongs to under ``rule.spec.grouping`` (each instance alone without it)."""
    if rule.spec.grouping is None:
        return (("target", instance.target), ("revision", instance.revision))
    values = {
        "model": instance.model,
        "revision": instance.revision,
        "namespace": instance.target.partition("/")[0],
        "severity": rule.spec.severity,
    }
    return tuple((label, values[label]) for label in rule.spec.grouping.by)


def dedupe_key(rule: AlertRule, group: GroupKey) -> str:
    """A stable key for ``group`` of ``rule``: 32 hex digits of a SHA-256 over the rule's
    ``namespace/name``, its severity and the group's labels."""
    identity = json.dumps([_rule_name(rule), rule.spec.severity, [list(pair) for pair in group]])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def repeat_gap(rule: AlertRule, repeats: int) -> timedelta:
    """The wait after a firing message that had ``repeats`` scheduled repeats before it:
    ``interval x backoffFactor^repeats``, at most ``maxInterval``."""
    spec = rule.spec.repeat
    grown = seconds(spec.interval) * spec.backoff_factor ** min(repeats, 64)
    return timedelta(seconds=min(grown, seconds(spec.max_interval)))


def _wait(rule: AlertRule) -> timedelta:
    return timedelta(seconds=seconds(rule.spec.grouping.wait)) if rule.spec.grouping else timedelta(0)


def _due(rule: AlertRule, memory: GroupMemory) -> datetime:
    """When the group's next firing message is due."""
    if memory.last_sent is None:
        return memory.episode + _wait(rule)
    return memory.last_sent + repeat_gap(rule, memory.repeats)


def next_due(rule: AlertRule, memory: NotifyMemory) -> datetime | None:
    """When the next firing message of any group is due (status ``deliveries.nextAt``); None when
    no group fires. A resolved message goes at the first evaluation after its group stops firing."""
    return min((_due(rule, group) for group in memory.groups.values()), default=None)


def plan(
    rule: AlertRule, instances: Sequence[Instance], memory: NotifyMemory, now: datetime, silenced: bool
) -> tuple[list[Message], NotifyMemory]:
    """The messages one evaluation of ``rule`` sends, and the memory for the next evaluation.

    ``instances`` are the rule's instances after this evaluation; ``memory`` what the previous
    call returned (``NotifyMemory()`` at first); ``now`` the evaluation time (timezone-aware).
    With ``silenced`` (or any instance showing Silenced) nothing is sent and ``memory`` comes back
    unchanged. Messages come ordered by group, firing and resolved alike.
    """
    if silenced or any(instance.state == "Silenced" for instance in instances):
        return [], memory
    members: dict[GroupKey, list[Instance]] = {}
    for instance in instances:
        members.setdefault(group_of(rule, instance), []).append(instance)
    messages: list[Message] = []
    groups: dict[GroupKey, GroupMemory] = {}
    for key in sorted(members.keys() | memory.groups.keys()):
        current = members.get(key, [])
        firing = tuple(sorted((i for i in current if i.state == "Firing"), key=lambda i: i.key))
        remembered = memory.groups.get(key)
        if firing:
            message, groups[key] = _firing(rule, key, firing, remembered, now)
            if message is not None:
                messages.append(message)
        elif remembered is not None and remembered.last_sent is not None:
            messages.append(_resolved(rule, key, current, remembered, now))
        # A group that stopped firing inside its wait was never announced: nothing to resolve.
    return messages, NotifyMemory(groups)


def _firing(
    rule: AlertRule, key: GroupKey, firing: tuple[Instance, ...], remembered: GroupMemory | None, now: datetime
) -> tuple[Message | None, GroupMemory]:
    """A firing group: its message if one is due, and its memory."""
    if remembered is None:
        started = [i.fired_at for i in firing if i.fired_at is not None]
        remembered = GroupMemory(episode=min(started, default=now))
    due = now >= _due(rule, remembered)
    news = remembered.last_sent is not None and bool({i.key for i in firing} - {i.key for i in remembered.notified})
    if not (due or news):
        return None, remembered
    scheduled_repeat = remembered.last_sent is not None and due
    message = Message(
        rule=_rule_name(rule),
        group=key,
        state="firing",
        instances=firing,
        dedupe_key=dedupe_key(rule, key),
        episode=remembered.episode,
        sequence=remembered.sent,
    )
    return message, dataclasses.replace(
        remembered,
        last_sent=now,
        sent=remembered.sent + 1,
        repeats=remembered.repeats + 1 if scheduled_repeat else remembered.repeats,
        notified=firing,
    )


def _resolved(
    rule: AlertRule, key: GroupKey, current: Sequence[Instance], remembered: GroupMemory, now: datetime
) -> Message:
    """A group's resolved message: the instances last announced, as they are now (one no longer
    evaluated shows Resolved since ``now``)."""
    now_by_key = {i.key: i for i in current}
    gone = "no longer evaluated: the revision is not live any more"
    named = tuple(
        now_by_key.get(i.key) or dataclasses.replace(i, state="Resolved", since=now, message=gone)
        for i in remembered.notified
    )
    return Message(
        rule=_rule_name(rule),
        group=key,
        state="resolved",
        instances=named,
        dedupe_key=dedupe_key(rule, key),
        episode=remembered.episode,
        sequence=max(remembered.sent - 1, 0),
    )


def _rule_name(rule: AlertRule) -> str:
    return f"{rule.metadata.namespace}/{rule.metadata.name}"


# ---- what a message says -------------------------------------------------------------------------

_PERCENT_METRICS = {"errorRate", "outOfDistributionRate", "safetyViolationRate", "accuracy"}
_METRIC_NAMES = {
    "errorRate": "error rate",
    "latencyP99": "p99 latency",
    "latencyP50": "p50 latency",
    "predictionConfidence": "mean prediction confidence",
    "outOfDistributionRate": "out-of-distribution rate",
    "safetyViolationRate": "safety violation rate",
    "requestRate": "request rate",
    "accuracy": "accuracy on fed-back answers",
    "calibrationError": "expected calibration error",
    "inputDrift": "largest input drift (PSI) of a feature",
}


def metric_name(rule: AlertRule) -> str:
    """What the rule measures, in words: ``error rate``, or ``custom query`` for PromQL."""
    builtin = rule.spec.metric.builtin
    return _METRIC_NAMES[builtin] if builtin else "custom query"


def format_value(rule: AlertRule, value: float | None) -> str:
    """``value`` in the rule's unit: a ratio to stable as ``1.80x stable``; rates of events as
    percentages; latencies (seconds) in ms or s; the request rate in req/s; ``no data`` for None."""
    if value is None or math.isnan(value):
        return "no data"
    if rule.spec.condition.relative_to == "stable":
        return f"{value:.2f}x stable"
    builtin = rule.spec.metric.builtin
    if builtin in _PERCENT_METRICS:
        return f"{value * 100:.3g}%"
    if builtin in ("latencyP99", "latencyP50"):
        return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"
    if builtin == "requestRate":
        return f"{value:.3g} req/s"
    return f"{value:.4g}"


def runbook_url(rule: AlertRule) -> str | None:
    """The runbook a notification links to: the rule's ``cutover.dev/runbook-url`` annotation, else
    the section of docs/runbooks.md for its builtin metric; None for a query without the annotation."""
    annotated = (rule.metadata.annotations or {}).get(contract.ANNOTATION_RUNBOOK_URL)
    if annotated:
        return annotated
    builtin = rule.spec.metric.builtin
    return f"{contract.RUNBOOKS}#{contract.RUNBOOK_ANCHORS[builtin]}" if builtin else None


def _target_link(target: str) -> dict[str, str]:
    namespace, _, name = target.partition("/")
    return {
        "name": target,
        "api": path("cutover.dev/v1alpha1", "ModelDeployment", namespace, name),
        "kubectl": f"kubectl cutover status {name} -n {namespace}",
    }


def _describe(rule: AlertRule, instance: Instance) -> str:
    """One line about an instance: ``fraud-scorer revision 7c9f (candidate) of payments/fraud:
    error rate 2.40x stable > 1.50x stable (Firing)``."""
    spec = rule.spec
    line = (
        f"{instance.model} revision {instance.revision} ({instance.role}) of {instance.target}: "
        f"{metric_name(rule)} {format_value(rule, instance.value)} {spec.condition.operator} "
        f"{format_value(rule, instance.threshold)} ({instance.state})"
    )
    return f"{line}; {instance.message}" if instance.message else line


def _summary(rule: AlertRule, message: Message) -> str:
    headline = "FIRING" if message.state == "firing" else "RESOLVED"
    labels = ", ".join(f"{label}={value}" for label, value in message.group)
    count = len(message.instances)
    return f"[{headline}] {message.rule} ({rule.spec.severity}) {labels}: {count} instance{'s' * (count != 1)}"


def _time(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment is not None else None


def webhook_body(rule: AlertRule, message: Message) -> dict[str, Any]:
    """cutover's webhook JSON for ``message``.

    cutover's fields: ``rule``, ``severity``, ``state`` (firing | resolved), ``dedupeKey``,
    ``episode``, ``metric``, ``condition``, ``action``, ``instances`` (target, model, revision,
    role, state, value, valueText, threshold, violations, since, firedAt, message), ``summary``
    and ``links`` (runbook, one entry per ModelDeployment with its API path and kubectl command).
    Alertmanager's webhook v4 fields ride along: ``version``, ``groupKey``, ``status``,
    ``receiver``, ``groupLabels``, ``commonLabels``, ``commonAnnotations`` and ``alerts``.
    """
    spec = rule.spec
    runbook = runbook_url(rule)
    targets = sorted({i.target for i in message.instances})
    group_labels = dict(message.group)
    common_labels = {"alertname": rule.metadata.name or "", "severity": spec.severity, **group_labels}
    annotations = {"summary": _summary(rule, message)} | ({"runbook_url": runbook} if runbook else {})
    return {
        "rule": message.rule,
        "severity": spec.severity,
        "state": message.state,
        "dedupeKey": message.dedupe_key,
        "episode": _time(message.episode),
        "summary": annotations["summary"],
        "metric": spec.metric.builtin or spec.metric.query,
        "condition": {
            "operator": spec.condition.operator,
            "threshold": spec.condition.threshold,
            "relativeTo": spec.condition.relative_to,
            "for": spec.for_,
            "interval": spec.interval,
        },
        "action": spec.action,
        "instances": [
            {
                "target": i.target,
                "model": i.model,
                "revision": i.revision,
                "role": i.role,
                "state": i.state,
                "value": i.value,
                "valueText": format_value(rule, i.value),
                "threshold": i.threshold,
                "violations": i.violations,
                "since": _time(i.since),
                "firedAt": _time(i.fired_at),
                "message": i.message,
            }
            for i in message.instances
        ],
        "links": {"runbook": runbook, "modelDeployments": [_target_link(t) for t in targets]},
        # Alertmanager's webhook v4 shape (prometheus/alertmanager notify/webhook).
        "version": "4",
        "groupKey": message.dedupe_key,
        "status": message.state,
        "receiver": message.rule,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": annotations,
        "alerts": [_alertmanager_alert(rule, message, i, runbook) for i in message.instances],
    }


def _alertmanager_alert(rule: AlertRule, message: Message, instance: Instance, runbook: str | None) -> dict[str, Any]:
    namespace, _, name = instance.target.partition("/")
    labels = {
        "alertname": rule.metadata.name or "",
        "severity": rule.spec.severity,
        "namespace": namespace,
        "modeldeployment": name,
        "model": instance.model,
        "revision": instance.revision,
        "role": instance.role,
    }
    resolved = message.state == "resolved"
    return {
        "status": "resolved" if resolved else "firing",
        "labels": labels,
        "annotations": {"description": _describe(rule, instance)} | ({"runbook_url": runbook} if runbook else {}),
        "startsAt": _time(instance.fired_at or message.episode),
        "endsAt": _time(instance.since) if resolved and instance.since else "0001-01-01T00:00:00Z",
        "fingerprint": hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16],
    }


def slack_body(rule: AlertRule, message: Message) -> dict[str, Any]:
    """A Slack incoming-webhook message for ``message``: ``text`` (the one-line summary, what
    notifications show) and ``blocks``: a header, one section per instance (what, value against
    threshold, state, since), the action and the links as context."""
    firing = message.state == "firing"
    icon = ":red_circle:" if firing else ":large_green_circle:"
    title = f"{'Firing' if firing else 'Resolved'}: {rule.metadata.name} ({rule.spec.severity})"
    operator = _slack_escape(rule.spec.condition.operator)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"{icon} *{message.rule}*: {metric_name(rule)} {operator} "
                f"{format_value(rule, rule.spec.condition.threshold)} for {rule.spec.for_} evaluations "
                f"every {rule.spec.interval}",
            },
        },
    ]
    for instance in message.instances[:_SLACK_INSTANCES]:
        since = f" since {_time(instance.since)}" if instance.since else ""
        text = (
            f"*{instance.target}* revision `{instance.revision}` ({instance.role})\n"
            f"{metric_name(rule)} *{format_value(rule, instance.value)}* "
            f"{operator} {format_value(rule, instance.threshold)}: {instance.state}{since}"
        )
        if instance.message:
            text += f"\n_{_slack_escape(instance.message[:500])}_"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    hidden = len(message.instances) - _SLACK_INSTANCES
    context = [f"action: {rule.spec.action}"] + ([f"and {hidden} more instances"] if hidden > 0 else [])
    runbook = runbook_url(rule)
    if runbook:
        context.append(f"<{runbook}|runbook>" if runbook.startswith(("http://", "https://")) else f"runbook: {runbook}")
    targets = sorted({i.target for i in message.instances})
    context += [f"`{_target_link(t)['kubectl']}`" for t in targets[:3]]
    context.append(f"dedupe key {message.dedupe_key}")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": part} for part in context[:10]]})
    return {"text": f"{icon} {_summary(rule, message)}", "blocks": blocks}


def _slack_escape(text: str) -> str:
    """Text safe inside Slack mrkdwn (``&``, ``<`` and ``>`` are markup there)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_SLACK_INSTANCES = 20
"""Instances listed per Slack message (Slack allows 50 blocks); the rest are counted."""


# ---- delivery ------------------------------------------------------------------------------------


class DeliveryFailed(Exception):
    """One delivery failed for good; the message says why (no URL from a Secret in it)."""


@dataclass(frozen=True)
class _Target:
    index: int
    notification: Notification
    where: str
    """How errors name it: ``notifications[1] (slack, URL from Secret ns/name key k)``."""
    secret: bool


@dataclass(frozen=True)
class _Job:
    """One message for one target (by its index in ``notifications``); ``left``: for a resolved
    message, how many more :meth:`Notifier.deliver` calls may try it again if this one fails."""

    message: Message
    target: int
    left: int


class Notifier:
    """Delivers messages to an AlertRule's notification targets over the shared ``http`` client.

    ``attempts`` per delivery (the first included); the n-th retry waits ``base_delay x 2^(n-1)``
    seconds (a 429's ``Retry-After`` instead, up to ``max_delay``); each attempt ends after the
    target's ``timeoutSeconds``, at most ``timeout`` seconds. ``kube`` reads ``urlSecretRef``
    Secrets (None: a target with one fails, saying so).

    A resolved message is sent once by planning, so losing it would leave the receiver's
    incident open for good (alertmanager#2398): one that a target did not take is tried again
    at each of the rule's next ``resolved_retries`` deliveries (about 15 minutes at a 30s
    interval, as long as Prometheus re-sends resolved alerts), unless its group fires again
    first. Firing messages need no such care: the next repeat carries them.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        kube: Kube | None,
        *,
        attempts: int = 4,
        base_delay: float = 1.0,
        timeout: float = 5.0,
        max_delay: float = 30.0,
        resolved_retries: int = 30,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        self.http = http
        self.kube = kube
        self.attempts = attempts
        self.base_delay = base_delay
        self.timeout = timeout
        self.max_delay = max_delay
        self.resolved_retries = resolved_retries
        self.undelivered: dict[str, list[_Job]] = {}
        """Per rule (``namespace/name``): resolved messages a target has not taken yet."""

    def forget(self, rule: str) -> None:
        """Drop what is kept for the rule ``namespace/name`` (it was deleted)."""
        self.undelivered.pop(rule, None)

    async def deliver(self, rule: AlertRule, messages: Sequence[Message]) -> DeliveryResult:
        """POST every message to every target of ``rule.spec.notifications``, concurrently, and
        again the resolved messages earlier calls could not deliver.

        Counts one delivery per message and target; never raises for a receiver's or a Secret's
        fault (those are counted failed, with their sentence in ``errors``, each sentence once)."""
        name = _rule_name(rule)
        news = {m.dedupe_key for m in messages}
        count = len(rule.spec.notifications)
        jobs = [
            job for job in self.undelivered.pop(name, []) if job.message.dedupe_key not in news and job.target < count
        ]
        jobs += [_Job(m, i, self.resolved_retries) for m in messages for i in range(count)]
        if not jobs:
            return DeliveryResult()
        targets = [self._target(rule, i, n) for i, n in enumerate(rule.spec.notifications)]
        urls = await asyncio.gather(*(self._url(rule, t) for t in targets), return_exceptions=True)
        outcomes = await asyncio.gather(*(self._job(rule, targets[j.target], urls[j.target], j) for j in jobs))
        errors = [error for error in outcomes if error is not None]
        retry = [
            dataclasses.replace(job, left=job.left - 1)
            for job, error in zip(jobs, outcomes, strict=True)
            if error is not None and job.message.state == "resolved" and job.left > 0
        ]
        if retry:
            self.undelivered[name] = retry
        return DeliveryResult(sent=len(jobs) - len(errors), failed=len(errors), errors=list(dict.fromkeys(errors)))

    async def _job(self, rule: AlertRule, target: _Target, url: str | BaseException, job: _Job) -> str | None:
        """Deliver one job; None when the target took it, else the sentence saying why not."""
        if isinstance(url, SecretUnavailable | DeliveryFailed):
            return f"{target.where}: {url}"
        if isinstance(url, BaseException):
            raise url
        try:
            await self._post(rule, target, url, job.message)
        except DeliveryFailed as failure:
            return str(failure)
        return None

    def _target(self, rule: AlertRule, index: int, notification: Notification) -> _Target:
        ref = notification.url_secret_ref
        if ref is not None:
            source = f"URL from Secret {rule.metadata.namespace}/{ref.name} key {ref.key}"
        else:
            parts = urlsplit(notification.url or "")
            source = f"{parts.scheme}://{parts.netloc}"
        return _Target(index, notification, f"notifications[{index}] ({notification.type}, {source})", ref is not None)

    async def _url(self, rule: AlertRule, target: _Target) -> str:
        ref = target.notification.url_secret_ref
        if ref is None:
            return target.notification.url or ""
        field_path = f"notifications[{target.index}].urlSecretRef"
        url = await secret_text(self.kube, rule.metadata.namespace or "", ref, field_path)
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise DeliveryFailed(f"Secret key {ref.key!r} holds no http(s) URL")
        return url

    async def _post(self, rule: AlertRule, target: _Target, url: str, message: Message) -> None:
        """One delivery with its retries; raises :class:`DeliveryFailed` saying what went wrong."""
        body = slack_body(rule, message) if target.notification.type == "slack" else webhook_body(rule, message)
        headers = {"Idempotency-Key": message.idempotency_key}
        timeout = min(float(target.notification.timeout_seconds), self.timeout)
        problem = ""
        for attempt in range(1, self.attempts + 1):
            delay = self.base_delay * 2 ** (attempt - 1)
            try:
                async with asyncio.timeout(timeout):
                    response = await self.http.post(
                        url, json=body, headers=headers, timeout=timeout, follow_redirects=False
                    )
            except (TimeoutError, httpx.TimeoutException):
                problem = f"no answer within {timeout:g}s"
            except (httpx.HTTPError, httpx.InvalidURL) as err:
                problem = f"cannot reach the receiver: {_network_error(err, url, target.secret)}"
            else:
                if response.is_success:
                    return
                problem = _answer(response, target.secret)
                if _redirected(response):
                    raise DeliveryFailed(f"{target.where}: {problem}")
                if response.status_code == 429:
                    delay = _retry_after(response, default=delay)
                elif not response.is_server_error:
                    raise DeliveryFailed(f"{target.where}: {problem}")
            if attempt < self.attempts:
                await asyncio.sleep(min(delay, self.max_delay))
        tries = f"{self.attempts} attempt{'s' * (self.attempts != 1)}"
        raise DeliveryFailed(f"{target.where}: {problem} ({tries})")


def _answer(response: httpx.Response, secret: bool) -> str:
    """What a receiver's non-2xx answer says, in words."""
    status = f"answered {response.status_code} {response.reason_phrase}".rstrip()
    if _redirected(response):
        location = response.headers.get("location", "")
        where = "" if secret or not location else f" to {location}"
        return f"{status}: a redirect{where}, which is not followed; set the webhook's final URL"
    text = " ".join(response.text.split())[:200]
    return f"{status}: {text}" if text else status


def _redirected(response: httpx.Response) -> bool:
    return 300 <= response.status_code < 400


def _retry_after(response: httpx.Response, default: float) -> float:
    """A 429's ``Retry-After`` in seconds (delta or HTTP date), else ``default``."""
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _network_error(err: httpx.HTTPError | httpx.InvalidURL, url: str, secret: bool) -> str:
    """The transport error's text, with the URL taken out when it came from a Secret."""
    text = str(err) or type(err).__name__
    return text.replace(url, "<URL from Secret>") if secret else text
