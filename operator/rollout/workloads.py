"""Which pods each revision runs: replica and surge math, pure.

A rollout runs the candidate beside stable (surge) unless ``strategy.surge`` says otherwise or,
with ``auto``, the GPU preflight finds too few free accelerators: then it trades stable pods
for candidate pods (surge-free), and keeps doing so for the rest of the rollout (the GPUs the
stable pods freed would otherwise read as room to grow them back). With traffic provider
``replicas`` a canary always trades: the replica ratio is the traffic split. A former stable
keeps its pods until its scale-down time, for an instant rollback. An AlertRule's fallback runs
the earlier stable revision at full size beside stable (with provider ``replicas``, stable
gives up its pods once the fallback's are all ready: one Service selects both).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .types import Workload

if TYPE_CHECKING:
    from .state import Pass


def share_replicas(replicas: int, weight: int) -> int:
    """Candidate pods that carry ``weight`` percent of traffic beside ``replicas`` stable pods:
    rounded up, at least one."""
    return max(1, math.ceil(replicas * weight / 100))


def pool_replicas(replicas: int, weight: int) -> int:
    """Candidate pods in a pool of ``replicas`` where the pod ratio is the traffic split:
    ``weight`` percent of them rounded, at least one once the weight is above 0."""
    return max(1, round(replicas * weight / 100)) if weight else 0


def candidate_wanted(p: Pass) -> int:
    """Candidate pods the current state asks for: full size once it passed, else what the
    strategy's current step needs."""
    if p.state.promoting:
        return p.replicas
    return p.strategy.wanted(p)


def workloads(p: Pass) -> tuple[list[Workload], bool]:
    """Workloads for the pass's state (stable first), and whether surge-free (swap) mode is in force."""
    state, replicas = p.state, p.replicas
    stable, candidate = state.stable_revision, state.candidate_revision
    out: list[Workload] = []
    swap = False
    stable_replicas = replicas
    pooled = p.provider.pooled
    if candidate is not None:
        surge = p.spec.strategy.surge
        want = candidate_wanted(p)
        capacity = p.inputs.capacity
        short = capacity is not None and capacity.free_pods < want
        swap = pooled or surge == "never" or (surge == "auto" and (short or state.surge_free))
        held = surge == "always" and short
        if not held:
            out.append(Workload(candidate, p.strategy.role, want, p.source))
        if swap and p.strategy.trades_stable_pods:
            stable_replicas = max(0, replicas - want) if pooled else max(1, replicas - want)
        if not held and (baseline := p.strategy.baseline(p, want)) is not None:
            out.append(baseline)
    fallback = state.fallback_revision
    fallback_source = state.source_of(fallback) if fallback is not None and fallback != stable else None
    if fallback is not None and fallback_source is not None:
        out.append(Workload(fallback, "previous", replicas, fallback_source))
        if pooled and p.ready(fallback) >= replicas:
            stable_replicas = 0  # one Service over every pod: stable must go for the fallback to serve alone
    if stable is not None:
        source = state.source_of(stable) or p.source
        out.insert(0, Workload(stable, "stable", stable_replicas, source))
    for kept in state.scale_down:
        if pooled and stable is not None and p.ready(stable) >= replicas:
            # Every pod of the model is in the live pool, so a kept revision takes traffic: it
            # stays only until the new stable can carry it all (no outage after a switch).
            break
        if kept.at > p.now and kept.revision not in {w.revision for w in out}:
            kept_source = state.source_of(kept.revision)
            if kept_source is not None:
                out.append(Workload(kept.revision, "previous", replicas, kept_source))
    return out, swap
