"""The rollout state machine: pure, no I/O.

``reconcile(inputs) -> Plan``: given the parsed ModelDeployment, what was observed of its pods,
the analysis verdict, the on-call requests found in its annotations, and the time, return the
workloads that should exist (one per revision, with replicas and role), the new status (whose
traffic table the gateway routes by) and the events to post. The kopf handler applies the plan;
everything that decides lives here, so it is tested without a cluster.

The persisted state is the status itself: stable and candidate revisions, the step and when it
began, the rejected revision, pending scale-downs. Given the same inputs twice, the second plan
equals the first (the handler may crash and re-run at any point).

Invariants (checked by property tests): live weights sum to 100; no live traffic goes to a
revision without ready pods; nothing is promoted without a promote verdict or a human request;
a rollback lands on a revision that was stable.

Layout, by what changes together:

=====================  ===================================================================
``types``              Inputs and Plan, the analysis comparison (:func:`comparison`)
``state``              the frozen :class:`~.state.RolloutState` and one pass's working copy
``machine``            :func:`reconcile`: requests, post-promotion watch, start, progress, deadline
``transitions``        start, end, roll back, promote, switch stable (shared by every strategy)
``requests``           on-call requests, one function per action
``alerts``             AlertRule actions: pause, rollback, fallback, once per firing
``strategies/``        one module per strategy: canary, blueGreen, shadow, abTest
``autoscaling``        the HPA algorithm: how many pods the model runs at full size
``workloads``          replica and surge math: which pods each revision runs
``traffic``            the traffic table, one provider each for gateway, gatewayAPI, replicas
``status``             phase, message and conditions
``reasons``            every event and condition reason, once
=====================  ===================================================================
"""

from cutover.api.v1alpha1.modeldeployment import Verdict

from .machine import reconcile
from .requests import requests_in, rollback_target
from .types import (
    BASELINE_SUFFIX,
    AlertAction,
    AnalysisInput,
    AnalysisPlan,
    Capacity,
    Event,
    Inputs,
    Plan,
    Request,
    SafetyInput,
    Source,
    WatchInput,
    Workload,
    comparison,
    revision_of,
)

__all__ = [
    "BASELINE_SUFFIX",
    "AlertAction",
    "AnalysisInput",
    "AnalysisPlan",
    "Capacity",
    "Event",
    "Inputs",
    "Plan",
    "Request",
    "SafetyInput",
    "Source",
    "Verdict",
    "WatchInput",
    "Workload",
    "comparison",
    "reconcile",
    "requests_in",
    "revision_of",
    "rollback_target",
]
