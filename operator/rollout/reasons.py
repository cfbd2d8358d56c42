"""Every reason the state machine gives, once: the reasons of the Events it posts and of the
conditions it writes.

Events, conditions and the operator's own metrics (``cutover_rollout_transitions`` counts
events by reason) name them through these constants, so a misspelt reason fails at import
instead of leaving a counter that never moves. Each is one CamelCase word, as Kubernetes
writes reasons; they are an interface (alerts and dashboards select on them), so a value never
changes once released.
"""

from __future__ import annotations

from typing import Final

# ----------------------------------------------------------------------------- events: a rollout's course

DEPLOYED: Final = "Deployed"
"""The first revision became stable (nothing to compare it with)."""
ROLLOUT_STARTED: Final = "RolloutStarted"
ROLLOUT_SUPERSEDED: Final = "RolloutSuperseded"
"""The spec moved on (to a newer candidate, or back to stable) before the rollout finished."""
STEP_COMPLETED: Final = "StepCompleted"
SCALING_UP: Final = "ScalingUp"
"""The candidate passed and is brought to full size before it takes all traffic."""
PROMOTED: Final = "Promoted"
AWAITING_PROMOTION: Final = "AwaitingPromotion"
"""The spec makes the rollout wait for on-call (also the Progressing condition's reason then)."""
PODS_NOT_READY: Final = "PodsNotReady"
POST_PROMOTION_PASSED: Final = "PostPromotionPassed"

# ----------------------------------------------------------------------------- events: rollbacks and holds

ANALYSIS_FAILED: Final = "AnalysisFailed"
ANALYSIS_TIMEOUT: Final = "AnalysisTimeout"
ANALYSIS_UNAVAILABLE: Final = "AnalysisUnavailable"
PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"
SHADOW_DISAGREEMENT: Final = "ShadowDisagreement"
AB_TEST_ENDED: Final = "ABTestEnded"
ABORTED: Final = "Aborted"
ROLLED_BACK_BY_REQUEST: Final = "RolledBackByRequest"
ROLLED_BACK_BY_ALERT: Final = "RolledBackByAlert"
FALLBACK_STARTED: Final = "FallbackStarted"
FALLBACK_ENDED: Final = "FallbackEnded"
POST_PROMOTION_REGRESSION: Final = "PostPromotionRegression"
SAFETY_POLICY_NOT_READY: Final = "SafetyPolicyNotReady"
"""The referenced SafetyPolicy is missing, invalid or not judged yet: rollouts hold (also the
Progressing condition's reason while one is held)."""
SAFETY_POLICY_READY: Final = "SafetyPolicyReady"
"""The referenced SafetyPolicy became ready again after it was not: held rollouts go on."""


def request_handled(action: str) -> str:
    """The reason of the event that answers an on-call request: ``RequestRollbackTo`` for
    ``rollbackTo``."""
    return f"Request{action[0].upper()}{action[1:]}"


# ----------------------------------------------------------------------------- condition reasons

SERVING: Final = "Serving"
SCALED_TO_ZERO: Final = "ScaledToZero"
"""Ready True with no pod: the model runs 0 replicas, as its spec or autoscaler asks."""
NO_READY_PODS: Final = "NoReadyPods"
PAUSED: Final = "Paused"
ROLLOUT_IN_PROGRESS: Final = "RolloutInProgress"
NO_ROLLOUT: Final = "NoRollout"
ROLLED_BACK: Final = "RolledBack"
NOT_ROLLED_BACK: Final = "NotRolledBack"
RECONCILED: Final = "Reconciled"
NOT_STALLED: Final = "NotStalled"
FALLBACK: Final = "Fallback"
INVALID_SPEC: Final = "InvalidSpec"
"""Reconciling's and Stalled's own reasons (beside the Progressing reasons Reconciling repeats
during a rollout, PodsNotReady while the stable revision is short of pods, and RolledBack or
ProgressDeadlineExceeded for Stalled): the spec is in effect; nothing is stuck; an AlertRule's
fallback serves instead of stable until on-call resumes; a spec only the operator can find wrong."""
METRICS_AVAILABLE: Final = "MetricsAvailable"
METRICS_UNAVAILABLE: Final = "MetricsUnavailable"
SUFFICIENT: Final = "Sufficient"
SURGE_FREE: Final = "SurgeFree"
INSUFFICIENT_GPU_CAPACITY: Final = "InsufficientGPUCapacity"
POLICY_READY: Final = "PolicyReady"
POLICY_NOT_FOUND: Final = "PolicyNotFound"
POLICY_INVALID: Final = "PolicyInvalid"
POLICY_PENDING: Final = "PolicyPending"
"""SafetyPolicyReady's reasons: the referenced policy is served, missing, invalid (its spec, or
its webhook Secret), or its current generation not judged by the operator yet."""

VALID_METRIC: Final = "ValidMetric"
METRIC_MISSING: Final = "MetricMissing"
NO_TARGET: Final = "NoTarget"
SCALED_EXTERNALLY: Final = "ScaledExternally"
"""ScalingActive's reasons: the autoscaler scales on a metric it read; holds the count because a
metric has no series (or Prometheus cannot be read); has no target (minReplicas pods); stands
down because an HPA, KEDA or the platform (cutover.dev/scaled-by) owns the replicas."""
MAX_BELOW_CANARY_STEP: Final = "MaxBelowCanaryStep"
"""ScalingLimited's reason (beside the autoscaler's own limits, status.autoscaling.limitedBy)
when maxReplicas is too few pods for the smallest canary weight with traffic provider replicas."""
SCALED: Final = "Scaled"
"""Event: the autoscaler changed the model's pod count."""


def alert_action(action: str) -> str:
    """The reason of the event that answers an AlertRule's action: ``AlertRollback`` for
    ``rollback`` (a warning when it was ignored)."""
    return f"Alert{action[0].upper()}{action[1:]}"
