"""Shadow: mirror a share of live requests to the candidate, whose answers never reach
clients; promote once it ran for the shadow duration, the analysis passed and the candidate
agreed with stable on at least minAgreement of the mirrored requests, else roll it back."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from cutover.api.v1alpha1.base import seconds
from cutover.api.v1alpha1.modeldeployment import ShadowStrategy

from .. import reasons
from ..state import Pass, elapsed
from ..traffic import Split
from ..transitions import rollback, try_promote
from ..types import AnalysisInput
from .base import Strategy


@dataclass(frozen=True)
class Shadow(Strategy):
    name = "shadow"
    shares_live_traffic = False
    spec: ShadowStrategy

    def wanted(self, p: Pass) -> int:
        return max(1, math.ceil(p.replicas * self.spec.mirror_percent / 100))

    def advance(self, p: Pass, candidate_ready: int, analysis: AnalysisInput | None) -> None:
        if analysis is None or analysis.verdict != "promote" or analysis.agreement is None:
            return
        if elapsed(p.state.rollout_started_at, p.now) < seconds(self.spec.duration):
            return
        agreement, least = analysis.agreement, self.spec.min_agreement
        if agreement >= least:
            try_promote(p, f"shadow analysis passed with {agreement:.1%} agreement")
        elif candidate_ready:
            rollback(p, reasons.SHADOW_DISAGREEMENT, f"agreement {agreement:.1%} below {least:.0%}")

    def allowance(self, p: Pass) -> float:
        return max(seconds(p.spec.analysis.min_duration), seconds(self.spec.duration))

    def split(self, p: Pass, candidate: str, revisions: Collection[str]) -> Split:
        return Split(mirror=self.spec.mirror_percent)

    def describe(self, p: Pass, weight: int) -> str:
        return f"shadow {p.state.candidate_revision}, mirroring {self.spec.mirror_percent}%"
