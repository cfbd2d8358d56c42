"""The traffic table: which revision answers what share of live requests, and which gets copies.

The strategy says what the candidate should get (a :class:`Split`: its share of live traffic,
and the baseline's in a canary with baseline pods, or a mirrored copy of requests); the traffic
provider that ``spec.traffic.provider`` names turns that into the table, behind one
:class:`TrafficProvider` interface:

- ``gateway`` (cutover's gateway routes by the table) and ``gatewayAPI`` (the builders write
  the table into a weighted HTTPRoute with a mirror filter): the split is routed as asked.
- ``replicas``: one Service selects every pod of the model in a canary, so each revision's
  live share is its share of the ready pods (the workloads' replica counts set the split), and
  no request can be copied.

An AlertRule's fallback sends all live traffic to the earlier stable revision it names once
that revision has ready pods (with ``replicas``, once stable has given up its pods).

Invariants (checked by property tests): once a revision is stable, live weights sum to 100 and
go only to revisions with ready pods; when none has any, stable keeps the table's 100 and
nothing is served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cutover.api.v1alpha1.modeldeployment import Role, TrafficEntry

from .types import Workload

if TYPE_CHECKING:
    from .state import Pass
    from .strategies.base import Strategy

ANSWERING_ORDER = ("previous", "baseline", "candidate", "preview")
"""Who takes stable's share when stable has no ready pod, after the revisions already live: a
kept previous stable, fresh baseline pods (stable's own model), then the candidate or preview
(an unproven revision answering beats every request failing)."""


@dataclass(frozen=True)
class Split:
    """What a strategy asks for while the candidate has ready pods: percent of live traffic
    per revision (stable gets the rest), and percent of requests copied to the candidate."""

    shares: Mapping[str, int] = field(default_factory=dict)
    mirror: int = 0


class TrafficProvider(Protocol):
    """Turns a strategy's split into live weights."""

    @property
    def pooled(self) -> bool:
        """Whether every revision's pods sit behind one Service, so that live shares follow
        ready pods and the candidate's replica count is its weight."""
        ...

    @property
    def mirrors(self) -> bool:
        """Whether requests can be copied to the candidate."""
        ...

    def weights(self, roles: Mapping[str, Role], ready: Mapping[str, int], stable: str, split: Split) -> dict[str, int]:
        """Percent of live traffic per revision of ``roles`` (one per workload; stable among
        them); a revision left out gets 0."""
        ...


@dataclass(frozen=True)
class Routed:
    """Providers that route by weight and can mirror: ``gateway`` and ``gatewayAPI``."""

    name: str
    pooled: bool = False
    mirrors: bool = True

    def weights(self, roles: Mapping[str, Role], ready: Mapping[str, int], stable: str, split: Split) -> dict[str, int]:
        return _routed(roles, ready, stable, split)


@dataclass(frozen=True)
class Replicas:
    """Provider ``replicas``: a Service over the pods, no routing of its own, no copies."""

    pooled: bool
    """True when the strategy puts the candidate in the Service's pool (a canary); a blue/green
    preview stays out of it until the switch."""
    mirrors: bool = False

    def weights(self, roles: Mapping[str, Role], ready: Mapping[str, int], stable: str, split: Split) -> dict[str, int]:
        return _by_ready_pods(roles, ready, stable) if self.pooled else _routed(roles, ready, stable, split)


def provider_for(name: str, strategy: Strategy) -> TrafficProvider:
    """The provider ``spec.traffic.provider`` names, for ``strategy``."""
    if name == "replicas":
        return Replicas(pooled=strategy.shares_live_traffic)
    return Routed(name)


def table(p: Pass, workloads: Sequence[Workload]) -> list[TrafficEntry]:
    """The traffic table for the pass's state: one row per revision of ``workloads``, in order."""
    stable, candidate = p.state.stable_revision, p.state.candidate_revision
    roles = {w.revision: w.role for w in workloads}
    split, weights = Split(), dict[str, int]()
    fallback = p.state.fallback_revision
    if stable is not None and stable in roles:
        if candidate is not None and candidate in roles and p.ready(candidate) > 0:
            split = p.strategy.split(p, candidate, roles.keys())
        elif fallback is not None and fallback in roles and p.ready(fallback) > 0 and not p.provider.pooled:
            split = Split({fallback: 100})
        weights = p.provider.weights(roles, p.inputs.ready, stable, split)
    mirror = split.mirror if p.provider.mirrors else 0
    prefix = p.md.metadata.name or "md"
    return [
        TrafficEntry(
            revision=revision,
            role=role,
            weight=weights.get(revision, 0),
            mirror_percent=mirror if revision == candidate else 0,
            service=f"{prefix}-{revision}",
        )
        for revision, role in roles.items()
    ]


def _routed(roles: Mapping[str, Role], ready: Mapping[str, int], stable: str, split: Split) -> dict[str, int]:
    """The split as asked, stable taking the rest; when stable has no ready pod, its share goes
    to the revisions that can answer (see :data:`ANSWERING_ORDER`)."""
    share = dict(split.shares)
    rest = 100 - sum(share.values())
    answering = [
        revision for role in ANSWERING_ORDER for revision, has in roles.items()
        if has == role and ready.get(revision, 0) > 0
    ]  # fmt: skip
    if ready.get(stable, 0) > 0 or not (any(share.values()) or answering):
        share[stable] = rest
    else:
        live = [r for r, w in share.items() if w > 0] or answering[:1]
        share.setdefault(live[0], 0)
        for i, revision in enumerate(live):
            share[revision] += rest // len(live) + (1 if i < rest % len(live) else 0)
    return share


def _by_ready_pods(roles: Mapping[str, Role], ready: Mapping[str, int], stable: str) -> dict[str, int]:
    """Weights as the shared Service spreads connections: in proportion to ready pods, rounded
    by largest remainder so they sum to 100 (stable keeps 100 when no pod is ready)."""
    counts = {revision: ready.get(revision, 0) for revision in roles}
    total = sum(counts.values())
    if total == 0:
        counts, total = {stable: 1}, 1
    exact = {revision: 100 * n / total for revision, n in counts.items()}
    weights = {revision: math.floor(x) for revision, x in exact.items()}
    for revision in sorted(exact, key=lambda r: weights[r] - exact[r])[: 100 - sum(weights.values())]:
        weights[revision] += 1
    return weights
