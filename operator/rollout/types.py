"""What the state machine takes and returns: :class:`Inputs` in, :class:`Plan` out.

Everything here is plain frozen data; the handler builds the inputs from the API server and
the verdict source, and applies the plan. :func:`comparison` names the analysis a status asks
for: the verdict source runs that comparison, and the machine acts only on a verdict that
names the same one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from cutover.api.v1alpha1.modeldeployment import (
    AnalysisStatus,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Role,
    Verdict,
)

if TYPE_CHECKING:
    from ..pods import PodProblem
    from .autoscaling import Load

BASELINE_SUFFIX = "-baseline"
"""Fresh baseline pods of the stable revision run under the stable revision plus this suffix."""


def revision_of(model: dict[str, Any], runtime: dict[str, Any]) -> str:
    """Stable hash of what runs: the model and runtime sections in wire form (10 hex digits)."""
    canonical = json.dumps({"model": model, "runtime": runtime}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Source:
    """What a revision runs: model and runtime in wire form (from the spec or from history)."""

    model: dict[str, Any]
    runtime: dict[str, Any]


@dataclass(frozen=True)
class Workload:
    """A revision's pods as they should be: the builders turn it into a Deployment and Service."""

    revision: str
    role: Role
    replicas: int
    source: Source


@dataclass(frozen=True)
class Capacity:
    """Free accelerator capacity for the desired pod shape (from the GPU preflight)."""

    resource: str
    per_pod: int
    free_pods: int
    """How many more pods of this shape the cluster can place right now."""
    detail: str = ""


@dataclass(frozen=True)
class AnalysisPlan:
    """Which comparison the analysis engine should be running: the candidate against the
    baseline (stable, or fresh baseline pods of it), for the rollout that began at ``started_at``."""

    candidate: str
    baseline: str
    started_at: datetime


@dataclass(frozen=True)
class AnalysisInput:
    """The analysis engine's latest result, naming the comparison it judged.

    The state machine acts on it only while ``judged`` is the comparison of the rollout in
    progress: a verdict about an earlier candidate (the spec moved on in the same pass, or while
    the operator was down), about another baseline (on-call switched stable) or about an earlier
    attempt at the same candidate (rolled back, then retried) is ignored."""

    judged: AnalysisPlan
    verdict: Verdict
    reason: str = ""
    consecutive_errors: int = 0
    status: AnalysisStatus | None = None
    agreement: float | None = None
    """Shadow only: fraction of mirrored requests on which candidate and stable agreed."""


@dataclass(frozen=True)
class WatchInput:
    """The post-promotion watch's latest finding about ``revision``; the state machine acts on
    it only while that revision is the one status.postPromotion watches."""

    revision: str
    alarm: bool
    reason: str


@dataclass(frozen=True)
class SafetyInput:
    """Whether the SafetyPolicy the ModelDeployment references (``spec.safetyPolicyRef``) can
    be served: ``ready`` True, False (missing or invalid) or None (not judged yet); ``reason``
    is the SafetyPolicyReady condition's (one of :mod:`.reasons`' POLICY_*). Anything but True
    holds rollouts: none starts, one in progress keeps its weights (fail closed)."""

    policy: str
    ready: bool | None
    reason: str
    message: str


@dataclass(frozen=True)
class Request:
    """An on-call request read from an annotation: the action (a key of REQUEST_ANNOTATIONS),
    the annotation's value as its id, and who wrote it."""

    action: str
    id: str
    by: str = ""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the ModelDeployment (reason: one of :mod:`.reasons`)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


AlertActionKind = Literal["pause", "rollback", "fallback"]


@dataclass(frozen=True)
class AlertAction:
    """An AlertRule in the ModelDeployment's namespace that fires for one of its revisions and
    acts: ``rule`` is its name, ``action`` its spec.action, ``revision`` the revision its firing
    instance measures, ``fired_at`` when that instance started firing (one firing, one action)."""

    rule: str
    action: AlertActionKind
    revision: str
    fired_at: datetime
    reason: str = ""
    """What fired, for people: the value against the threshold."""

    @property
    def id(self) -> str:
        """The firing's id: when it started (an alert that resolves and fires again is a new firing)."""
        return self.fired_at.isoformat()


@dataclass(frozen=True)
class Inputs:
    """Everything one reconcile pass decides from."""

    md: ModelDeployment
    ready: dict[str, int]
    """Ready pods per revision (the baseline's under its -baseline id)."""
    now: datetime
    analysis: AnalysisInput | None = None
    requests: tuple[Request, ...] = ()
    capacity: Capacity | None = None
    pod_problems: dict[str, PodProblem] = field(default_factory=dict)
    """Why pods are not ready, per revision (the baseline's under its -baseline id)."""
    watch: WatchInput | None = None
    alerts: tuple[AlertAction, ...] = ()
    """Firing AlertRules that act on this ModelDeployment (read from their status)."""
    safety: SafetyInput | None = None
    """The referenced SafetyPolicy's readiness; None when the spec references none."""
    load: Load | None = None
    """What the autoscaler's metrics read (None when runtime.autoscaling is unset or they are
    not due in this pass)."""
    scaled_externally: tuple[str, ...] = ()
    """Deployments of the model whose replicas another scaler owns (an HPA targets them, or
    the cutover.dev/scaled-by annotation says so): the operator's autoscaler stands down."""


@dataclass(frozen=True)
class Plan:
    """What the handler applies: the workloads that should exist (one per revision, stable
    first), the new status (whose traffic table the gateway routes by) and the events to post."""

    workloads: tuple[Workload, ...]
    status: ModelDeploymentStatus
    events: tuple[Event, ...] = ()
    analysis: AnalysisPlan | None = None
    """The comparison the new status asks the verdict source to run (:func:`comparison` of it;
    the operator's verdict source computes the same from the stored status on the next pass)."""


class Revisions(Protocol):
    """The status fields that name a rollout (ModelDeploymentStatus and the machine's state)."""

    @property
    def stable_revision(self) -> str | None: ...
    @property
    def candidate_revision(self) -> str | None: ...
    @property
    def rollout_started_at(self) -> datetime | None: ...


def comparison(spec: ModelDeploymentSpec, status: Revisions | None) -> AnalysisPlan | None:
    """The comparison the analysis runs for the rollout in ``status``: the candidate against the
    stable revision, or against fresh baseline pods of it when the canary asks for them; None
    when nothing is rolling out."""
    if status is None or status.candidate_revision is None or status.stable_revision is None:
        return None
    if status.rollout_started_at is None:
        return None
    canary = spec.strategy.canary
    baseline = status.stable_revision + (BASELINE_SUFFIX if canary is not None and canary.baseline else "")
    return AnalysisPlan(status.candidate_revision, baseline, status.rollout_started_at)
