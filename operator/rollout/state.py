"""What the state machine remembers, and one reconcile pass's working copy of it.

The persisted state is the status itself. :class:`RolloutState` holds the status fields the
machine reads and moves, frozen: each move makes a new one with :func:`dataclasses.replace`,
which checks field names and types (a misspelt field is a mypy error and a TypeError at run
time; pydantic's ``model_copy(update=)`` used to drop it without a word). The other status
fields (observed generation, conditions, traffic table, handled requests) are computed once, at
the end of the pass, by :mod:`.status`.

:class:`Pass` is the one mutable thing: the inputs, the state as moved so far, the strategy and
traffic provider the spec names, and the events and request answers the pass has to tell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from cutover.api.v1alpha1 import Condition
from cutover.api.v1alpha1.modeldeployment import (
    AnalysisStatus,
    AutoscalingStatus,
    HandledRequest,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    PostPromotionStatus,
    RevisionRecord,
    ScaleDown,
    TrafficEntry,
)

from . import reasons
from .types import AnalysisInput, Event, Inputs, Request, Source, comparison

if TYPE_CHECKING:
    from .strategies.base import Strategy
    from .traffic import TrafficProvider


@dataclass(frozen=True)
class RolloutState:
    """The status fields the state machine reads and changes (same names, same meaning as in
    ModelDeploymentStatus; lists become tuples)."""

    stable_revision: str | None
    candidate_revision: str | None
    current_step_index: int | None
    step_started_at: datetime | None
    rollout_started_at: datetime | None
    last_progress_at: datetime | None
    canary_weight: int
    candidate_ready_replicas: int
    surge_free: bool
    promoting: bool
    paused: bool
    pause_reason: str
    rejected_revision: str | None
    phase: Phase
    message: str
    scale_down: tuple[ScaleDown, ...]
    last_analysis: AnalysisStatus | None
    history: tuple[RevisionRecord, ...]
    post_promotion: PostPromotionStatus | None
    last_handled_requests: Mapping[str, str]
    last_handled_alerts: Mapping[str, str]
    fallback_revision: str | None
    fallback_reason: str
    autoscaling: AutoscalingStatus | None
    scaled_externally: tuple[str, ...]

    @classmethod
    def of(cls, status: ModelDeploymentStatus) -> RolloutState:
        """The state a stored status holds."""
        return cls(
            stable_revision=status.stable_revision,
            candidate_revision=status.candidate_revision,
            current_step_index=status.current_step_index,
            step_started_at=status.step_started_at,
            rollout_started_at=status.rollout_started_at,
            last_progress_at=status.last_progress_at,
            canary_weight=status.canary_weight,
            candidate_ready_replicas=status.candidate_ready_replicas,
            surge_free=status.surge_free,
            promoting=status.promoting,
            paused=status.paused,
            pause_reason=status.pause_reason,
            rejected_revision=status.rejected_revision,
            phase=status.phase,
            message=status.message,
            scale_down=tuple(status.scale_down),
            last_analysis=status.last_analysis,
            history=tuple(status.history),
            post_promotion=status.post_promotion,
            last_handled_requests=dict(status.last_handled_requests),
            last_handled_alerts=dict(status.last_handled_alerts),
            fallback_revision=status.fallback_revision,
            fallback_reason=status.fallback_reason,
            autoscaling=status.autoscaling,
            scaled_externally=tuple(status.scaled_externally),
        )

    def status(
        self,
        *,
        observed_generation: int | None,
        conditions: list[Condition],
        traffic: list[TrafficEntry],
        handled_requests: list[HandledRequest],
    ) -> ModelDeploymentStatus:
        """The status to write: this state plus the fields computed at the end of a pass."""
        return ModelDeploymentStatus(
            observed_generation=observed_generation,
            phase=self.phase,
            message=self.message,
            conditions=conditions,
            stable_revision=self.stable_revision,
            candidate_revision=self.candidate_revision,
            current_step_index=self.current_step_index,
            canary_weight=self.canary_weight,
            step_started_at=self.step_started_at,
            rollout_started_at=self.rollout_started_at,
            last_progress_at=self.last_progress_at,
            candidate_ready_replicas=self.candidate_ready_replicas,
            surge_free=self.surge_free,
            promoting=self.promoting,
            paused=self.paused,
            pause_reason=self.pause_reason,
            rejected_revision=self.rejected_revision,
            scale_down=list(self.scale_down),
            traffic=traffic,
            last_analysis=self.last_analysis,
            history=list(self.history),
            post_promotion=self.post_promotion,
            handled_requests=handled_requests,
            last_handled_requests=dict(self.last_handled_requests),
            last_handled_alerts=dict(self.last_handled_alerts),
            fallback_revision=self.fallback_revision,
            fallback_reason=self.fallback_reason,
            autoscaling=self.autoscaling,
            scaled_externally=list(self.scaled_externally),
        )

    def source_of(self, revision: str) -> Source | None:
        """What ``revision`` ran when it was stable, from the revision history; None if it is not there."""
        for record in self.history:
            if record.revision == revision:
                return Source(model=record.spec.get("model", {}), runtime=record.spec.get("runtime", {}))
        return None


def without_rollout(state: RolloutState) -> RolloutState:
    """``state`` with the fields of a rollout as they are when none is in progress."""
    return replace(
        state,
        candidate_revision=None,
        current_step_index=None,
        step_started_at=None,
        rollout_started_at=None,
        canary_weight=0,
        candidate_ready_replicas=0,
        surge_free=False,
        promoting=False,
        paused=False,
        pause_reason="",
    )


@dataclass
class Pass:
    """One reconcile pass: its inputs, the state as moved so far (replaced, never mutated in
    place), and the events and request answers it has to tell."""

    inputs: Inputs
    state: RolloutState
    source: Source
    """What the spec asks to run (computed once per pass)."""
    strategy: Strategy
    provider: TrafficProvider
    events: list[Event] = field(default_factory=list)
    answered: list[HandledRequest] = field(default_factory=list)

    @property
    def md(self) -> ModelDeployment:
        return self.inputs.md

    @property
    def spec(self) -> ModelDeploymentSpec:
        return self.inputs.md.spec

    @property
    def now(self) -> datetime:
        return self.inputs.now

    @property
    def stored(self) -> ModelDeploymentStatus:
        """The status as the pass found it."""
        return self.inputs.md.status or ModelDeploymentStatus()

    @property
    def replicas(self) -> int:
        """Pods a revision runs at full size: runtime.replicas, or what the autoscaler decided
        (its minimum before its first decision, and while another scaler owns the count)."""
        runtime = self.spec.runtime
        if runtime.autoscaling is None:
            return runtime.replicas
        scaled = self.state.autoscaling
        return scaled.desired_replicas if scaled is not None else runtime.autoscaling.min_replicas

    def ready(self, revision: str | None) -> int:
        """Ready pods of ``revision`` (0 for None)."""
        return self.inputs.ready.get(revision or "", 0)

    @property
    def analysis(self) -> AnalysisInput | None:
        """The analysis input if it judged the comparison of the rollout now in progress, else
        None (read at each use: handling a request or starting a rollout changes the answer)."""
        given = self.inputs.analysis
        if given is None or given.judged != comparison(self.spec, self.state):
            return None
        return given

    @property
    def safety_hold(self) -> str | None:
        """Why rollouts hold for the referenced SafetyPolicy (its readiness message), or None
        when the spec references none or it is ready."""
        safety = self.inputs.safety
        return None if safety is None or safety.ready else safety.message

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event("Warning" if warning else "Normal", reason, message))

    def answer(self, request: Request, result: str, ok: bool = True) -> None:
        """Record how ``request`` was handled, in status and as an event (a warning if not done)."""
        self.answered.append(
            HandledRequest(action=request.action, id=request.id, by=request.by, at=self.now, result=result)
        )
        if request.by.startswith("AlertRule/"):  # an event reason of its own (AlertRollback...), counted by metrics
            self.event(reasons.alert_action(request.action), f"{request.by} {request.id}: {result}", warning=not ok)
        else:
            self.event(reasons.request_handled(request.action), f"{request.id}: {result}", warning=not ok)


def elapsed(since: datetime | None, now: datetime) -> float:
    """Seconds from ``since`` to ``now`` (0 when ``since`` is unset)."""
    return (now - since).total_seconds() if since else 0.0
