"""One module per rollout strategy, each answering the questions of :class:`.base.Strategy`."""

from __future__ import annotations

from cutover.api.v1alpha1.modeldeployment import StrategySpec

from .abtest import AbTest
from .base import Strategy
from .bluegreen import BlueGreen
from .canary import Canary
from .shadow import Shadow

__all__ = ["AbTest", "BlueGreen", "Canary", "Shadow", "Strategy", "strategy_for"]


def strategy_for(spec: StrategySpec) -> Strategy:
    """The strategy ``spec.type`` names, bound to its block (the API admits only the block of
    that name). Raises ValueError when that block is missing."""
    if spec.type == "canary" and spec.canary is not None:
        return Canary(spec.canary)
    if spec.type == "blueGreen" and spec.blue_green is not None:
        return BlueGreen(spec.blue_green)
    if spec.type == "shadow" and spec.shadow is not None:
        return Shadow(spec.shadow)
    if spec.type == "abTest" and spec.ab_test is not None:
        return AbTest(spec.ab_test)
    raise ValueError(f"strategy.{spec.type} must be set when strategy.type is {spec.type}")
