"""Drive the pure state machine the way the operator does, with pods that become ready."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cutover.api.v1alpha1 import ModelDeployment
from cutover.operator.rollout import (
    AlertAction,
    AnalysisInput,
    Capacity,
    Inputs,
    Plan,
    Request,
    SafetyInput,
    WatchInput,
    comparison,
    reconcile,
)
from cutover.operator.rollout.autoscaling import Load

from ..cases import load

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@dataclass
class Sim:
    """A ModelDeployment, its status as persisted, and pods that are ready one reconcile after
    they are asked for (unless `stuck` says otherwise)."""

    doc: dict[str, Any]
    now: datetime = T0
    ready: dict[str, int] = field(default_factory=dict)
    status: dict[str, Any] | None = None
    stuck: set[str] = field(default_factory=set)
    plans: list[Plan] = field(default_factory=list)
    capacity: Capacity | None = None
    safety: SafetyInput | None = None
    """The referenced SafetyPolicy's readiness, as the operator reads it (None: no reference)."""
    load: Load | None = None
    """What the autoscaler's metrics read in each pass."""
    scaled_externally: tuple[str, ...] = ()
    """Deployments another scaler owns."""

    @classmethod
    def of(cls, example: str, **spec_changes: Any) -> Sim:
        doc = copy.deepcopy(load(example))
        doc["metadata"].setdefault("generation", 1)
        doc["spec"].update(spec_changes)
        return cls(doc)

    @property
    def md(self) -> ModelDeployment:
        body = {**self.doc, "status": self.status} if self.status else self.doc
        return ModelDeployment.model_validate(body)

    def step(self, verdict: str | None = None, seconds: float = 30, requests: tuple[Request, ...] = (),
             agreement: float | None = None, errors: int = 0, analysis: AnalysisInput | None = None,
             watch: WatchInput | None = None, alerts: tuple[AlertAction, ...] = ()) -> Plan:  # fmt: skip
        """One pass after ``seconds``. ``verdict`` is a verdict about the stored rollout, as the
        operator's verdict source gives it; ``analysis`` gives the whole input instead (a verdict
        about some other comparison, say); ``watch`` is the post-promotion watch's finding;
        ``alerts`` the firing AlertRules that act on the ModelDeployment."""
        self.now += timedelta(seconds=seconds)
        md = self.md
        judged = comparison(md.spec, md.status)  # what the operator's verdict source judges
        if analysis is None and verdict and judged:
            analysis = AnalysisInput(judged, verdict, f"verdict {verdict}", errors, agreement=agreement)  # type: ignore[arg-type]
        inputs = Inputs(
            md,
            dict(self.ready),
            self.now,
            analysis,
            requests,
            self.capacity,
            watch=watch,
            alerts=alerts,
            safety=self.safety,
            load=self.load,
            scaled_externally=self.scaled_externally,
        )
        plan = reconcile(inputs)
        self.plans.append(plan)
        self.status = plan.status.wire()
        self.ready = {w.revision: (0 if w.revision in self.stuck else w.replicas) for w in plan.workloads}
        return plan

    def change_version(self, version: str) -> None:
        self.doc = copy.deepcopy(self.doc)
        self.doc["spec"]["model"]["version"] = version
        self.doc["metadata"]["generation"] += 1

    def annotate(self, action: str, value: str) -> Request:
        return Request(action, value, "kubectl-annotate")

    def weights(self) -> dict[str, int]:
        return {row["role"]: row["weight"] for row in (self.status or {}).get("traffic", []) if row["weight"]}
