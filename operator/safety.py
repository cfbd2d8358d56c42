"""SafetyPolicy on the operator side: what it renders, what its status says, and what a
ModelDeployment that references it is told. Pure functions; the kopf handlers
(:mod:`.safety_handlers`) read the objects, call these and apply the results.

Delivery. A policy reaches serving pods as files, never through the revision hash: the operator
renders the policy as a ConfigMap ``cutover-safety-<policy>`` (key ``policy.json``: apiVersion,
kind, metadata name/namespace/generation/uid and the validated spec in wire form) and, when the
crisis webhook's URL comes from a Secret, copies that URL into a Secret of its own,
``cutover-safety-<policy>`` (key ``escalation-url``), so that serving pods mount a Secret the
operator controls instead of the user's. Both are owned by the SafetyPolicy (garbage-collected
with it). The builders mount them into every serving pod of a ModelDeployment whose
``spec.safetyPolicyRef`` names the policy, ``optional: true``: a policy that does not exist yet
leaves the volume empty and serving fails closed (no policy file: 503 and not ready) instead of
the pod never starting. kubelet refreshes mounted ConfigMaps and Secrets in place, and serving
re-reads the file, so a changed policy applies without a restart and without a new revision.

What is kept when something is wrong. A spec only the operator can find wrong (the API server's
schema and CEL rules catch the rest) leaves the rendered ConfigMap as it was: pods keep the last
good policy, and the status says Ready False InvalidSpec. A crisis webhook Secret that is
missing or lacks its key leaves the copied Secret as it was (escalations keep going to the last
URL that was good) while the policy itself is rendered; status says Ready False
SecretUnavailable. Either way ModelDeployments that reference the policy get
SafetyPolicyReady False PolicyInvalid, and rollouts hold (see :func:`readiness` and
docs/safety.md).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from cutover.api.contract import (
    LABEL_MANAGED_BY,
    MANAGER,
    SAFETY_ESCALATION_URL_KEY,
    SAFETY_OBJECT_PREFIX,
    SAFETY_POLICY_KEY,
)
from cutover.api.v1alpha1 import Condition, SafetyPolicy
from cutover.api.v1alpha1.base import SecretKeyRef

from .builders import controller_reference
from .rollout import SafetyInput, reasons

LABEL_SAFETY_POLICY: Final = "cutover.dev/safety-policy"
"""Label on the rendered ConfigMap and the copied Secret: the SafetyPolicy's name."""

READY: Final = "Ready"
STALLED: Final = "Stalled"
"""The SafetyPolicy's condition types: Ready, and Stalled for kstatus (Flux)."""
VALID: Final = "Valid"
"""Ready True: the spec is valid, rendered, and its webhook Secret (if any) copied."""
INVALID_SPEC: Final = "InvalidSpec"
"""Ready False: the spec breaks a rule only the operator checks; the last good rendering stays."""
SECRET_UNAVAILABLE: Final = "SecretUnavailable"
"""Ready False: the crisis webhook's urlSecretRef cannot be read; the last copy stays."""


def object_name(policy: str) -> str:
    """Name of the ConfigMap and of the Secret the operator makes for SafetyPolicy ``policy``."""
    return f"{SAFETY_OBJECT_PREFIX}{policy}"


def escalation_ref(policy: SafetyPolicy) -> SecretKeyRef | None:
    """The Secret key holding the crisis escalation webhook's URL, when the policy uses one."""
    crisis = policy.spec.crisis
    if crisis is None or not crisis.enabled or crisis.escalation_webhook is None:
        return None
    return crisis.escalation_webhook.url_secret_ref


def document(policy: SafetyPolicy) -> dict[str, Any]:
    """What serving reads (``policy.json``): the object with the metadata serving reports
    (name, namespace, generation: ``cutover_safety_policy_info``; uid) and the spec as the
    operator validated it, defaults written out, in wire form."""
    meta = policy.metadata
    return {
        "apiVersion": policy.api_version,
        "kind": policy.kind,
        "metadata": {"name": meta.name, "namespace": meta.namespace, "generation": meta.generation, "uid": meta.uid},
        "spec": policy.spec.wire(),
    }


def _metadata(policy: SafetyPolicy) -> dict[str, Any]:
    return {
        "name": object_name(policy.metadata.name or ""),
        "namespace": policy.metadata.namespace,
        "labels": {LABEL_MANAGED_BY: MANAGER, LABEL_SAFETY_POLICY: policy.metadata.name or ""},
        "ownerReferences": [controller_reference("SafetyPolicy", policy.metadata)],
    }


def config_map(policy: SafetyPolicy, rendered: Mapping[str, Any]) -> dict[str, Any]:
    """The ConfigMap serving pods mount: ``rendered`` (a :func:`document`) as canonical JSON
    under ``policy.json`` (sorted keys, so the same policy is the same bytes and kubelet swaps
    nothing when nothing changed)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(policy),
        "data": {SAFETY_POLICY_KEY: json.dumps(rendered, sort_keys=True, indent=1)},
    }


def escalation_secret(policy: SafetyPolicy, url: str) -> dict[str, Any]:
    """The operator's own Secret with the escalation webhook's URL under ``escalation-url``
    (``data``, base64: server-side apply keeps no write-only ``stringData``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(policy),
        "data": {SAFETY_ESCALATION_URL_KEY: base64.b64encode(url.encode()).decode()},
    }


def owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    """Whether ``obj`` (a ConfigMap or Secret) is controlled by the SafetyPolicy with ``uid``:
    the operator deletes only what it made, never a same-named object of someone else's."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("kind") == "SafetyPolicy" and r.get("uid") == uid and r.get("controller") for r in refs)


def validation_message(error: ValidationError) -> str:
    """A pydantic error as one line for a condition or an Event (field path: message; ...)."""
    parts = (f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    return "; ".join(parts)[:2000]


@dataclass(frozen=True)
class Assessment:
    """The policy's Ready condition as the controller found it."""

    ready: bool
    reason: str
    message: str


def assess(policy: SafetyPolicy | None, invalid: str, secret_problem: str | None) -> Assessment:
    """Ready from what the pass found: ``policy`` None with ``invalid`` its validation message
    (Ready False InvalidSpec), a ``secret_problem`` (Ready False SecretUnavailable; the message
    of :class:`~cutover.operator.secrets.SecretUnavailable`, which names the field), or neither
    (Ready True Valid, naming the filters served)."""
    if policy is None:
        return Assessment(False, INVALID_SPEC, invalid)
    if secret_problem is not None:
        return Assessment(False, SECRET_UNAVAILABLE, secret_problem)
    spec = policy.spec
    filters = [name for name in ("crisis", "toxicity", "pii", "advice", "bias") if _enabled(getattr(spec, name, None))]
    rendered = f"rendered as ConfigMap {object_name(policy.metadata.name or '')}"
    on = ", ".join(filters) if filters else "no filter enabled"
    return Assessment(True, VALID, f"{rendered}; filters: {on}; failClosed: {str(spec.fail_closed).lower()}")


def _enabled(section: Any) -> bool:
    return section is not None and bool(getattr(section, "enabled", True))


def status(
    old: Mapping[str, Any], assessment: Assessment, generation: int | None, deployments: Iterable[str], now: datetime
) -> dict[str, Any]:
    """The status to write (wire form): observedGeneration, the Ready and Stalled conditions
    (each keeping its lastTransitionTime while its status stays the same) and the sorted
    referencing ModelDeployments. Stalled is True for InvalidSpec, which only a new spec
    ends, so that kstatus (Flux) reads the policy as Failed rather than InProgress, as it
    reads Ready False; a Secret that cannot be read yet may still come, and stays InProgress."""
    written = {c.get("type"): c for c in old.get("conditions") or []}

    def condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        state = "True" if ok else "False"
        wire = Condition(
            type=type_,
            status=state,
            reason=reason,
            message=message,
            last_transition_time=now,
            observed_generation=generation,
        ).wire()
        previous = written.get(type_)
        if previous is not None and previous.get("status") == state and previous.get("lastTransitionTime"):
            wire["lastTransitionTime"] = previous["lastTransitionTime"]
        return wire

    stalled = assessment.reason == INVALID_SPEC
    ours = [
        condition(READY, assessment.ready, assessment.reason, assessment.message),
        condition(
            STALLED, stalled, INVALID_SPEC if stalled else reasons.NOT_STALLED, assessment.message if stalled else ""
        ),
    ]
    others = [c for c in old.get("conditions") or [] if c.get("type") not in (READY, STALLED)]
    return {
        **{k: v for k, v in old.items() if k not in ("conditions", "observedGeneration", "deployments")},
        "observedGeneration": generation,
        "conditions": [*ours, *others],
        "deployments": sorted(set(deployments)),
    }


# ----------------------------------------------------------------------------- the ModelDeployment side


@dataclass(frozen=True)
class PolicySummary:
    """What a ModelDeployment needs to know of one SafetyPolicy (kept in a kopf index)."""

    generation: int | None
    invalid: str
    """The validation message when the operator's model rejects the spec; empty when it parses."""
    ready: str | None
    """status of its Ready condition when that condition speaks of this generation, else None."""
    message: str = ""
    """Its Ready condition's message."""


def summarise(body: Mapping[str, Any]) -> PolicySummary:
    """A SafetyPolicy object (wire form) as :class:`PolicySummary`."""
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    invalid = ""
    try:
        SafetyPolicy.model_validate(body)
    except ValidationError as err:
        invalid = validation_message(err)
    status_ = body.get("status") or {}
    ready = next((c for c in status_.get("conditions") or [] if c.get("type") == READY), None)
    current = ready is not None and ready.get("observedGeneration") == generation
    return PolicySummary(
        generation,
        invalid,
        str(ready.get("status")) if ready is not None and current else None,
        str(ready.get("message", "")) if ready is not None and current else "",
    )


def readiness(namespace: str, name: str, summary: PolicySummary | None) -> SafetyInput:
    """The ModelDeployment's SafetyPolicyReady for its ``safetyPolicyRef`` ``name``: True when
    the policy's controller found its current generation valid and rendered it; False
    PolicyNotFound or PolicyInvalid; Unknown PolicyPending while the controller has not judged
    the current generation yet. Anything but True holds rollouts."""
    where = f"SafetyPolicy {namespace}/{name}"
    if summary is None:
        return SafetyInput(name, False, reasons.POLICY_NOT_FOUND, f"{where} not found")
    if summary.invalid:
        return SafetyInput(name, False, reasons.POLICY_INVALID, f"{where} is invalid: {summary.invalid}")
    generation = f"generation {summary.generation}"
    if summary.ready == "True":
        return SafetyInput(name, True, reasons.POLICY_READY, f"{where} {generation} is valid and served")
    if summary.ready == "False":
        return SafetyInput(name, False, reasons.POLICY_INVALID, f"{where} {generation}: {summary.message}")
    return SafetyInput(name, None, reasons.POLICY_PENDING, f"{where} {generation} is not checked by the operator yet")
