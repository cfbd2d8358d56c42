"""The questions every strategy answers; one implementation per module of this package.

A strategy says which candidate pods the current state asks for, how the rollout moves on
what the analysis says (steps, promotion, its own reasons to roll back), how long a wait may
last, when it waits for a person, what split of traffic it asks for, and how to describe the
rollout in one line. Everything else (on-call requests, deadlines, promotion and rollback
themselves, the workloads, the table, the status) is shared and lives outside this package.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import TYPE_CHECKING, ClassVar

from cutover.api.v1alpha1.modeldeployment import Role

from ..transitions import SCALE_DOWN_SECONDS

if TYPE_CHECKING:
    from ..state import Pass
    from ..traffic import Split
    from ..types import AnalysisInput, Workload


class Strategy(ABC):
    """One rollout strategy, bound to its block of the spec."""

    name: ClassVar[str]
    """strategy.type."""
    role: ClassVar[Role] = "candidate"
    """The candidate workload's role."""
    shares_live_traffic: ClassVar[bool] = True
    """Whether the candidate answers live requests during the rollout (a blue/green preview
    and a shadow answer none)."""
    trades_stable_pods: ClassVar[bool] = True
    """Whether, surge-free, stable gives up a pod for each candidate pod (a blue/green preview
    runs beside stable at full size whatever the GPUs)."""

    @abstractmethod
    def wanted(self, p: Pass) -> int:
        """Candidate pods the current state asks for, before the candidate passed."""

    @abstractmethod
    def advance(self, p: Pass, candidate_ready: int, analysis: AnalysisInput | None) -> None:
        """The strategy's own moves on this pass's verdict: steps, promotion, rollbacks of its
        own (the analysis's rollback verdict and the deadline are handled before and after)."""

    @abstractmethod
    def allowance(self, p: Pass) -> float:
        """Seconds the current wait may take by the spec's own configuration, beyond
        progressDeadlineSeconds (a timed pause, the least analysis time, a duration)."""

    @abstractmethod
    def split(self, p: Pass, candidate: str, revisions: Collection[str]) -> Split:
        """The traffic the candidate gets while it has ready pods (``revisions``: the ones with
        a workload)."""

    @abstractmethod
    def describe(self, p: Pass, weight: int) -> str:
        """The rollout in a few words for status.message: strategy, candidate, where it stands."""

    def awaiting_human(self, p: Pass, candidate_ready: int) -> str | None:
        """What on-call must do when the spec itself makes the rollout wait for a person; else None."""
        return None

    def at_last_step(self, p: Pass) -> bool:
        """Whether a promote request promotes now (else it advances one step)."""
        return True

    def baseline(self, p: Pass, want: int) -> Workload | None:
        """Fresh pods of the stable revision to compare the candidate with, if the spec asks for them."""
        return None

    def scale_down_seconds(self) -> float:
        """How long the former stable keeps its pods after a promotion."""
        return SCALE_DOWN_SECONDS


def promote_how(p: Pass) -> str:
    """How on-call promotes a rollout that waits for them."""
    return f"kubectl cutover promote {p.md.metadata.name} (or annotate cutover.dev/promote)"
