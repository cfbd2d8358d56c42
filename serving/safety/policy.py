"""A SafetyPolicy as the serving path applies it: the policy object (JSON, as the operator renders
it into the ``cutover-safety-<policy>`` ConfigMap) compiled into detectors, and one decision per
text set.

Compiling (:func:`compile_policy`) validates the object with the API model
(``cutover.api.v1alpha1.safetypolicy.SafetyPolicy``), then builds one detector per enabled
filter through :data:`BUILDERS` (filter name -> module with ``detector(spec) -> Detector``),
importing each module only when a policy names its filter, so that a filter missing from this
build is a clear :class:`PolicyError`, not an import failure at start. Builders cache their heavy
work per process, so compiling a new generation of a known policy is cheap.

Screening (:meth:`Policy.screen`) is pure: texts in, a :class:`Screening` out, no metrics, no
I/O. Each filter whose ``scope`` covers the direction reads the texts; the classifiers (crisis,
toxicity, advice, bias) read the ``classified`` texts when the caller gives them (a chat
request's last user message) and PII reads every text (it redacts them all). One decision per
call, the strongest action of any filter that found something, in this order::

    block > escalate > redact > disclaim > flag > pass

``block`` and ``escalate`` replace the whole answer (the caller does that: a 422 with the
``blockMessage``, or the crisis ``responseMessage``); otherwise the texts come back edited:
PII spans replaced by ``[REDACTED:<entity>]`` when PII's action is ``redact``, and, on
outputs, the advice ``disclaimer`` appended to each text with an advice finding when advice's
action is ``disclaim`` (both may apply; the decision names the stronger). ``flag`` only counts;
``disclaim`` on an input acts as ``flag`` (the client wrote the text; there is nothing to append to).

A detector that raises, or returns a finding that is not one (a score outside [0, 1], a span
outside its text), is a filter error: its findings are dropped, the error is reported in
:attr:`Screening.errors`, and the caller refuses the request when the policy is ``failClosed``.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import ValidationError

from cutover.api.v1alpha1.safetypolicy import SafetyPolicy

from ..pii import TOKENS
from .base import Detector, Direction, FilterName, Finding

Decision = Literal["pass", "block", "escalate", "redact", "disclaim", "flag"]
"""What one screening decided; the strongest action of any filter that found something."""

STRENGTH: tuple[Decision, ...] = ("block", "escalate", "redact", "disclaim", "flag")
"""Actions, strongest first."""

FILTERS: tuple[FilterName, ...] = ("crisis", "toxicity", "pii", "advice", "bias")
"""Every filter, in the order a policy applies them."""

BUILDERS: Mapping[FilterName, str] = {name: f"cutover.serving.safety.{name}" for name in FILTERS}
"""The module whose ``detector(spec)`` builds each filter's detector."""

DIRECTIONS: Mapping[str, frozenset[Direction]] = {
    "inputs": frozenset({"input"}),
    "outputs": frozenset({"output"}),
    "both": frozenset({"input", "output"}),
}
"""The API's ``scope`` as the directions it selects."""

CATEGORIES_FIELD: Mapping[FilterName, str] = {
    "crisis": "categories",
    "pii": "entities",
    "advice": "domains",
    "bias": "categories",
}
"""The spec field listing what each filter looks for (toxicity has one category, ``toxicity``)."""


class PolicyError(Exception):
    """A policy that cannot be applied: not a valid SafetyPolicy, or a filter that cannot be
    built (missing from this build, or its builder refused the spec). The message says which."""


@dataclass(frozen=True)
class Rule:
    """One enabled filter of a policy: its detector, the action the spec gives it, the
    directions its scope selects and the categories it can report (the children of the
    violation counter created at 0 when the policy is applied)."""

    detector: Detector
    action: str
    directions: frozenset[Direction]
    categories: tuple[str, ...]

    @property
    def name(self) -> FilterName:
        return self.detector.name

    def action_on(self, direction: Direction) -> str:
        """The action as it applies to ``direction``: ``disclaim`` on an input is ``flag`` (the
        client wrote the text; there is nothing to append to)."""
        return "flag" if self.action == "disclaim" and direction == "input" else self.action


@dataclass(frozen=True)
class Hit:
    """The highest score a filter gave one category in one screening, and the action the policy
    gives that filter: one element of the audit record's ``safety`` list."""

    filter: FilterName
    category: str
    score: float
    action: str
    scope: Direction

    def record(self) -> dict[str, Any]:
        """The audit form: ``{"filter", "category", "action", "score", "scope"}``."""
        return {
            "filter": self.filter,
            "category": self.category,
            "action": self.action,
            "score": round(self.score, 4),
            "scope": self.scope,
        }


@dataclass(frozen=True)
class FilterFailure:
    """A filter that failed on a screening: it raised, or returned something that is not a finding."""

    filter: FilterName
    scope: Direction
    error: str


@dataclass(frozen=True)
class Screening:
    """What one :meth:`Policy.screen` call decided.

    ``texts`` are the texts as they would be answered (redacted, disclaimed; the input texts
    unchanged when the decision is ``block`` or ``escalate``, which replace the whole answer);
    ``changed`` tells whether any differs. ``hits`` has one :class:`Hit` per filter and
    category found, in policy order; ``checked`` the filters that read at least one text and
    finished; ``failures`` the filters that failed; ``seconds`` each filter's time in seconds."""

    scope: Direction
    decision: Decision
    texts: tuple[str, ...]
    changed: bool = False
    hits: tuple[Hit, ...] = ()
    checked: tuple[FilterName, ...] = ()
    failures: tuple[FilterFailure, ...] = ()
    seconds: tuple[tuple[FilterName, float], ...] = ()

    def violations(self) -> list[Hit]:
        """Per filter, its hit with the highest score: what the violation counter counts (at
        most once per request, filter and scope)."""
        best: dict[FilterName, Hit] = {}
        for hit in self.hits:
            if hit.filter not in best or hit.score > best[hit.filter].score:
                best[hit.filter] = hit
        return list(best.values())


@dataclass(frozen=True)
class Policy:
    """A compiled SafetyPolicy: who it is (``name``, ``namespace``, ``generation``, ``uid``),
    its rules in :data:`FILTERS` order, and what its actions answer with."""

    name: str
    namespace: str
    generation: int
    uid: str
    rules: tuple[Rule, ...]
    block_message: str
    fail_closed: bool
    crisis_message: str = ""
    """The crisis filter's ``responseMessage`` (what an escalated request is answered with)."""
    disclaimer: str = ""
    """The advice filter's ``disclaimer`` (appended by ``disclaim``)."""
    escalation_url: str | None = None
    """Where escalations are POSTed: the webhook's ``url``, or the secrets dir's copy of its
    ``urlSecretRef``; None when the crisis action is not ``escalate`` or the URL is not there."""
    escalation_timeout: float = 5.0
    escalation_url_from_secret: bool = False
    """The URL came from a Secret: it is a credential, never logged."""
    _by_direction: Mapping[Direction, tuple[Rule, ...]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        by_direction = {d: tuple(r for r in self.rules if d in r.directions) for d in ("input", "output")}
        object.__setattr__(self, "_by_direction", by_direction)

    def rules_for(self, direction: Direction) -> tuple[Rule, ...]:
        """The rules whose scope covers ``direction``."""
        return self._by_direction[direction]

    def unscreened(self, direction: Direction, texts: Sequence[str], reason: str) -> Screening:
        """A screening in which every rule of ``direction`` failed for ``reason`` (texts the
        filters cannot read, such as a model's answer over the size limit): the caller refuses
        it under ``failClosed`` and passes it on, counted, without."""
        failures = tuple(FilterFailure(rule.name, direction, reason) for rule in self._by_direction[direction])
        return Screening(direction, "pass", tuple(texts), failures=failures)

    def screen(self, direction: Direction, texts: Sequence[str], classified: Sequence[str] | None = None) -> Screening:
        """Run every rule of ``direction`` and decide (see the module docstring). ``texts`` are
        the texts the answer is made of; ``classified``, when given, what the classifiers read
        instead (PII always reads ``texts``). Never raises on detector failures; they are in
        the result's ``failures``."""
        rules = self._by_direction[direction]
        if not rules:
            return Screening(direction, "pass", tuple(texts))
        hits: dict[tuple[FilterName, str], Hit] = {}
        checked: list[FilterName] = []
        failures: list[FilterFailure] = []
        seconds: list[tuple[FilterName, float]] = []
        spans: dict[int, list[tuple[int, int, str]]] = {}
        disclaimed: set[int] = set()
        found: set[str] = set()
        for rule in rules:
            name = rule.name
            reads = texts if classified is None or name == "pii" else classified
            if not reads:
                continue
            started = time.perf_counter()
            try:
                per_text = [_checked(rule.detector.scan(text, direction), text) for text in reads]
            except Exception as error:
                seconds.append((name, time.perf_counter() - started))
                failures.append(FilterFailure(name, direction, f"{type(error).__name__}: {error}"))
                continue
            seconds.append((name, time.perf_counter() - started))
            checked.append(name)
            action = rule.action_on(direction)
            for index, findings in enumerate(per_text):
                for finding in findings:
                    key = (name, finding.category)
                    if key not in hits or finding.score > hits[key].score:
                        hits[key] = Hit(name, finding.category, finding.score, action, direction)
                    found.add(action)
                    if action == "redact" and reads is texts:
                        spans.setdefault(index, []).extend((s, e, finding.category) for s, e in finding.spans)
                if findings and action == "disclaim" and reads is texts:
                    disclaimed.add(index)
        decision: Decision = next((action for action in STRENGTH if action in found), "pass")
        edited = tuple(texts)
        if decision not in ("block", "escalate") and (spans or disclaimed):
            edited = tuple(
                _edit(text, spans.get(i, ()), self.disclaimer if i in disclaimed else None)
                for i, text in enumerate(texts)
            )
        return Screening(
            direction,
            decision,
            edited,
            changed=edited != tuple(texts),
            hits=tuple(hits.values()),
            checked=tuple(checked),
            failures=tuple(failures),
            seconds=tuple(seconds),
        )


def _checked(findings: Sequence[Finding], text: str) -> Sequence[Finding]:
    """``findings`` unchanged, or a ValueError naming the first that is not a finding of ``text``:
    a score that is not in [0, 1] or a span outside the text (redacting by it would leave data
    in the answer)."""
    for finding in findings:
        if not (isinstance(finding.score, int | float) and math.isfinite(finding.score) and 0 <= finding.score <= 1):
            raise ValueError(f"finding {finding.category!r} has score {finding.score!r}, not in [0, 1]")
        for start, end in finding.spans:
            if not 0 <= start < end <= len(text):
                raise ValueError(f"finding {finding.category!r} has span ({start}, {end}) outside its text")
    return findings


def _edit(text: str, spans: Sequence[tuple[int, int, str]], disclaimer: str | None) -> str:
    """``text`` with ``spans`` (start, end, entity) replaced by their entities' tokens
    (``serving/pii.py``'s ``TOKENS``, as in the audit log; spans that overlap merge into one,
    named by the first) and ``disclaimer`` appended after a blank line."""
    if spans:
        merged: list[list[Any]] = []
        for start, end, entity in sorted(spans):
            if merged and start < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end, entity])
        parts: list[str] = []
        position = 0
        for start, end, entity in merged:
            parts += [text[position:start], TOKENS[entity]]
            position = end
        parts.append(text[position:])
        text = "".join(parts)
    if disclaimer:
        text = f"{text}\n\n{disclaimer}" if text else disclaimer
    return text


def compile_policy(
    document: Any, escalation_url: str | None = None, builders: Mapping[FilterName, str] = BUILDERS
) -> Policy:
    """Build a :class:`Policy` from the SafetyPolicy object ``document`` (parsed JSON:
    ``{"apiVersion", "kind", "metadata": {...}, "spec": {...}}``). ``escalation_url`` is the
    crisis webhook's URL when its spec gives a ``urlSecretRef`` (read by the caller from the
    secrets dir); a URL in the spec itself wins. ``builders`` names the module of each filter's
    builder (:data:`BUILDERS`). Raises :class:`PolicyError` with the reason."""
    try:
        api = SafetyPolicy.model_validate(document)
    except ValidationError as error:
        raise PolicyError(f"not a valid SafetyPolicy: {_brief(error)}") from None
    spec = api.spec
    rules: list[Rule] = []
    for name in FILTERS:
        filter_spec = getattr(spec, name, None)
        if filter_spec is None or not filter_spec.enabled:
            continue
        rules.append(
            Rule(
                _build(name, builders[name], filter_spec),
                filter_spec.action,
                DIRECTIONS[filter_spec.scope],
                tuple(getattr(filter_spec, CATEGORIES_FIELD[name])) if name in CATEGORIES_FIELD else (name,),
            )
        )
    crisis, advice = spec.crisis, spec.advice
    webhook = crisis.escalation_webhook if crisis is not None and crisis.action == "escalate" else None
    url = None
    if webhook is not None:
        url = webhook.url or (escalation_url.strip() if escalation_url and escalation_url.strip() else None)
    metadata = api.metadata
    return Policy(
        name=metadata.name or "",
        namespace=metadata.namespace or "",
        generation=metadata.generation or 0,
        uid=metadata.uid or "",
        rules=tuple(rules),
        block_message=spec.block_message,
        fail_closed=spec.fail_closed,
        crisis_message=crisis.response_message if crisis is not None else "",
        disclaimer=advice.disclaimer if advice is not None else "",
        escalation_url=url,
        escalation_timeout=float(webhook.timeout_seconds) if webhook is not None else 5.0,
        escalation_url_from_secret=webhook is not None and webhook.url is None,
    )


def _build(name: FilterName, module_name: str, spec: Any) -> Detector:
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PolicyError(f"the {name} filter is not available in this build: {error}") from None
    try:
        detector = cast(Detector, module.detector(spec))
    except Exception as error:
        raise PolicyError(f"the {name} filter cannot be built: {type(error).__name__}: {error}") from None
    if getattr(detector, "name", None) != name:
        raise PolicyError(f"the {name} filter's builder returned a detector named {getattr(detector, 'name', None)!r}")
    return detector


def _brief(error: ValidationError) -> str:
    """A validation error in one line: each problem as ``location: message``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'object'}: {problem['msg']}" for problem in error.errors()
    )
