"""cutover.dev/v1alpha1: ModelDeployment, SafetyPolicy and AlertRule as pydantic models.

These models are the single source of the API: the CRDs in ``crds/`` are generated from them
(``cutover crds``), and the operator parses every object through them.
"""

from .alertrule import AlertRule, AlertRuleSpec, AlertRuleStatus
from .base import API_VERSION, GROUP, REQUEST_ANNOTATIONS, VERSION, ApiModel, Condition, Rule, seconds
from .modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from .safetypolicy import SafetyPolicy, SafetyPolicySpec, SafetyPolicyStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "REQUEST_ANNOTATIONS",
    "VERSION",
    "AlertRule",
    "AlertRuleSpec",
    "AlertRuleStatus",
    "ApiModel",
    "Condition",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "Rule",
    "SafetyPolicy",
    "SafetyPolicySpec",
    "SafetyPolicyStatus",
    "seconds",
]
