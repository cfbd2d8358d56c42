"""Blue/green: bring the candidate up at full size (or previewReplicaCount) as a preview that
takes no live traffic (a full mirror of requests gives its analysis real ones, where the
provider can copy them), then switch all traffic at once on a promote verdict, after
autoPromotionSeconds, or on on-call's request when auto-promotion is off. The old revision
keeps its pods for scaleDownDelaySeconds."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from cutover.api.v1alpha1.base import seconds
from cutover.api.v1alpha1.modeldeployment import BlueGreenStrategy

from ..state import Pass, elapsed
from ..traffic import Split
from ..transitions import try_promote
from ..types import AnalysisInput
from ..workloads import candidate_wanted
from .base import Strategy, promote_how


@dataclass(frozen=True)
class BlueGreen(Strategy):
    name = "blueGreen"
    role = "preview"
    shares_live_traffic = False
    trades_stable_pods = False
    spec: BlueGreenStrategy

    def wanted(self, p: Pass) -> int:
        return self.spec.preview_replica_count or p.replicas

    def advance(self, p: Pass, candidate_ready: int, analysis: AnalysisInput | None) -> None:
        waited = elapsed(p.state.rollout_started_at, p.now) >= (self.spec.auto_promotion_seconds or 0)
        promote = analysis is not None and analysis.verdict == "promote"
        if candidate_ready >= self.wanted(p) and promote and self.spec.auto_promotion_enabled and waited:
            try_promote(p, "preview analysis passed")

    def allowance(self, p: Pass) -> float:
        return max(seconds(p.spec.analysis.min_duration), float(self.spec.auto_promotion_seconds or 0))

    def awaiting_human(self, p: Pass, candidate_ready: int) -> str | None:
        if not self.spec.auto_promotion_enabled and candidate_ready >= candidate_wanted(p):
            return f"preview ready and auto-promotion is off: {promote_how(p)}"
        return None

    def split(self, p: Pass, candidate: str, revisions: Collection[str]) -> Split:
        return Split(mirror=100)

    def describe(self, p: Pass, weight: int) -> str:
        return f"blueGreen {p.state.candidate_revision}, candidate weight {weight}%"

    def scale_down_seconds(self) -> float:
        return self.spec.scale_down_delay_seconds
