"""Canary: shift live traffic to the candidate step by step (setWeight, pause, analysis steps),
optionally beside fresh baseline pods of stable that take the same share, and promote after
the last step on a promote verdict.

A new weight goes live only once the candidate's pods can carry it; with traffic provider
``replicas`` the weight is the candidate's share of the model's pods instead.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from cutover.api.v1alpha1.base import seconds
from cutover.api.v1alpha1.modeldeployment import CanaryStep, CanaryStrategy

from .. import reasons
from ..state import Pass, elapsed
from ..traffic import Split
from ..transitions import rollback, try_promote
from ..types import BASELINE_SUFFIX, AnalysisInput, Workload
from ..workloads import pool_replicas, share_replicas
from .base import Strategy, promote_how


@dataclass(frozen=True)
class Canary(Strategy):
    name = "canary"
    spec: CanaryStrategy

    @property
    def steps(self) -> Sequence[CanaryStep]:
        return self.spec.steps

    def index(self, p: Pass) -> int:
        """The step in progress (len(steps) once every step is done)."""
        return p.state.current_step_index or 0

    def target_weight(self, p: Pass) -> int:
        """The candidate's configured share at the current step."""
        weight = 0
        for step in self.steps[: self.index(p) + 1]:
            if step.set_weight is not None:
                weight = step.set_weight
        return weight

    def live_weight(self, p: Pass, candidate_ready: int) -> int:
        """The largest step weight so far whose candidate pods are all ready: a new weight goes
        live only once the candidate can carry it."""
        weight = 0
        for step in self.steps[: self.index(p) + 1]:
            if step.set_weight is not None and candidate_ready >= share_replicas(p.replicas, step.set_weight):
                weight = max(weight, step.set_weight)
        return weight

    def wanted(self, p: Pass) -> int:
        if p.provider.pooled:
            return pool_replicas(p.replicas, self.target_weight(p))
        return share_replicas(p.replicas, max(self.target_weight(p), 1))

    def advance(self, p: Pass, candidate_ready: int, analysis: AnalysisInput | None) -> None:
        """Go through every step that is already satisfied; after the last, promote on a promote verdict."""
        verdict = analysis.verdict if analysis else None
        steps = self.steps
        for _ in range(len(steps) + 1):
            index = self.index(p)
            if index >= len(steps):
                if verdict == "promote":
                    try_promote(p, "every canary step passed")
                return
            step = steps[index]
            in_step = elapsed(p.state.step_started_at, p.now)
            if step.set_weight is not None:
                if p.provider.pooled:
                    needed = pool_replicas(p.replicas, self.target_weight(p))
                else:
                    needed = share_replicas(p.replicas, step.set_weight) if step.set_weight else 0
                done = candidate_ready >= needed
            elif step.pause is not None:
                done = step.pause.duration is not None and in_step >= seconds(step.pause.duration)
            else:
                assert step.analysis is not None
                done = verdict == "promote" and in_step >= seconds(p.spec.analysis.min_duration)
                limit = step.analysis.max_duration
                if not done and limit is not None and in_step >= seconds(limit):
                    rollback(p, reasons.ANALYSIS_TIMEOUT, f"step {index} stayed without a verdict for {limit}")
                    return
            if not done:
                return
            p.state = replace(p.state, current_step_index=index + 1, step_started_at=p.now, last_progress_at=p.now)
            p.event(reasons.STEP_COMPLETED, f"canary step {index} done; now at step {index + 1} of {len(steps)}")

    def allowance(self, p: Pass) -> float:
        least = seconds(p.spec.analysis.min_duration)
        index = self.index(p)
        if index >= len(self.steps):
            return least  # the final verdict
        step = self.steps[index]
        if step.pause is not None:
            return seconds(step.pause.duration) if step.pause.duration else 0.0
        if step.analysis is not None:
            return max(least, seconds(step.analysis.max_duration) if step.analysis.max_duration else 0.0)
        return 0.0

    def awaiting_human(self, p: Pass, candidate_ready: int) -> str | None:
        index = self.index(p)
        if index < len(self.steps):
            pause = self.steps[index].pause
            if pause is not None and pause.duration is None:
                return f"canary step {index} waits for on-call: {promote_how(p)}"
        return None

    def at_last_step(self, p: Pass) -> bool:
        return self.index(p) >= len(self.steps) - 1

    def baseline(self, p: Pass, want: int) -> Workload | None:
        stable = p.state.stable_revision
        if not self.spec.baseline or not stable:
            return None
        source = p.state.source_of(stable)
        return Workload(stable + BASELINE_SUFFIX, "baseline", want, source) if source is not None else None

    def split(self, p: Pass, candidate: str, revisions: Collection[str]) -> Split:
        weight = self.live_weight(p, p.ready(candidate))
        shares: dict[str, int] = {}
        baseline = f"{p.state.stable_revision}{BASELINE_SUFFIX}"
        if baseline in revisions:  # compare like with like: the baseline takes the same share, or neither does
            if p.ready(baseline) > 0:
                shares[baseline] = weight
            else:
                weight = 0
        shares[candidate] = weight
        return Split(shares)

    def describe(self, p: Pass, weight: int) -> str:
        steps = len(self.steps)
        return f"canary {p.state.candidate_revision} step {min(self.index(p), steps)}/{steps}, weight {weight}%"
