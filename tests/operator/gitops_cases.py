"""ModelDeployments as GitOps tools see them: each case is a scenario run through the operator's
own code (the pure state machine through :class:`~.sim.Sim`, the handler for a spec only the
operator finds wrong) and the object it leaves, status included.

Argo CD's health check (``charts/cutover/files/argocd/cutover.dev/ModelDeployment/``) keeps
these objects as its ``testdata/``, and kstatus (Flux) is run over the same files
(tests/operator/test_gitops_health.py), so both are tested on statuses the operator writes,
never on statuses written by hand. After a change to what the operator writes, rewrite them:

    .venv/bin/python -m tests.operator.gitops_cases
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast
from unittest import mock

import yaml

from cutover.operator import handlers
from cutover.operator.kube import Kube
from cutover.operator.rollout import Request, SafetyInput, revision_of
from cutover.operator.rollout import reasons as rollout_reasons
from cutover.operator.verdicts import VerdictSource

from ..cases import BG, CANARY
from .sim import T0, Sim
from .test_alert_actions import fires, promoted_twice
from .test_loop_memory import StatusServer, frozen
from .test_rollout import deployed

HEALTH_CHECK = (
    Path(__file__).resolve().parents[2] / "charts" / "cutover" / "files" / "argocd" / "cutover.dev" / "ModelDeployment"
)
TESTDATA = HEALTH_CHECK / "testdata"


def _object(sim: Sim) -> dict[str, Any]:
    return {**copy.deepcopy(sim.doc), "status": copy.deepcopy(sim.status)}


def created() -> dict[str, Any]:
    """Just created: the operator has not written a status yet."""
    return copy.deepcopy(Sim.of(CANARY).doc)


def pending() -> dict[str, Any]:
    """The first revision's pods are asked for, none is ready yet."""
    sim = Sim.of(CANARY)
    sim.step()
    return _object(sim)


def healthy() -> dict[str, Any]:
    return _object(deployed())


def scaled_to_zero() -> dict[str, Any]:
    """runtime.replicas 0: nothing runs, as asked."""
    sim = Sim.of(CANARY)
    sim.doc["spec"]["runtime"]["replicas"] = 0
    sim.step()
    sim.step()
    return _object(sim)


def not_observed() -> dict[str, Any]:
    """A new model version applied by GitOps, before the operator's next pass."""
    sim = deployed()
    sim.change_version("v2")
    return _object(sim)


def canary() -> dict[str, Any]:
    """A canary rollout at its first step with analysis under way."""
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue")
    return _object(sim)


def paused() -> dict[str, Any]:
    """A canary rollout paused by on-call (kubectl annotate ... cutover.dev/pause)."""
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("continue", requests=(Request("pause", "p-1", "kubectl-annotate"),))
    return _object(sim)


def awaiting_promotion() -> dict[str, Any]:
    """A blueGreen preview ready, with auto-promotion off: it waits for on-call."""
    sim = deployed(BG)
    blue_green = sim.doc["spec"]["strategy"]["blueGreen"]
    blue_green["autoPromotionEnabled"] = False
    del blue_green["autoPromotionSeconds"]
    sim.change_version("v15")
    sim.step()
    sim.step("promote")
    return _object(sim)


def safety_hold() -> dict[str, Any]:
    """A new version waits for its SafetyPolicy, which is not ready, before its rollout starts."""
    sim = deployed()
    sim.doc["spec"]["safetyPolicyRef"] = {"name": "clinical"}
    sim.safety = SafetyInput(
        "clinical", False, rollout_reasons.POLICY_NOT_FOUND, "SafetyPolicy payments/clinical not found"
    )
    sim.change_version("v2")
    sim.step()
    return _object(sim)


def scaling_up() -> dict[str, Any]:
    """Healthy, then two of the stable revision's three pods are lost: it waits for them."""
    sim = deployed()
    stable = sim.status["stableRevision"] if sim.status else ""
    sim.ready[stable] = 1
    sim.step()
    return _object(sim)


def rolled_back() -> dict[str, Any]:
    """The analysis found the candidate worse: rolled back to stable."""
    sim = deployed()
    sim.change_version("v2")
    sim.step()
    sim.step("rollback")
    return _object(sim)


def rolled_back_by_older_operator() -> dict[str, Any]:
    """Rolled back, as an operator older than Reconciling and Stalled wrote it (the status a
    health check meets until the operator is upgraded)."""
    obj = rolled_back()
    obj["status"]["conditions"] = [
        c for c in obj["status"]["conditions"] if c["type"] not in ("Reconciling", "Stalled")
    ]
    return obj


def no_ready_pods() -> dict[str, Any]:
    """The first revision's pods never become ready: past progressDeadlineSeconds it fails."""
    sim = Sim.of(CANARY)
    wire = sim.md.spec.wire()
    sim.stuck.add(revision_of(wire["model"], wire["runtime"]))
    sim.step()
    sim.step(seconds=sim.md.spec.progress_deadline_seconds + 30)
    return _object(sim)


def fallback() -> dict[str, Any]:
    """An AlertRule with action fallback fired: the previous revision serves instead of stable."""
    sim, _, second = promoted_twice()
    sim.step(alerts=(fires(second, "fallback"),))
    sim.step()
    return _object(sim)


def invalid_spec() -> dict[str, Any]:
    """A spec the operator's models reject (here replicas -1, which the CRD's schema also
    refuses; the handler's path is the same for any spec only the operator can find wrong)."""
    body = Sim.of(CANARY).doc
    body["metadata"].update(resourceVersion="1")
    body["spec"]["runtime"]["replicas"] = -1
    server = StatusServer(body)
    ctx = handlers.Context(cast(Kube, server), cast(VerdictSource, None), clock=lambda: T0.timestamp())
    with mock.patch.object(handlers.kopf, "warn"):  # no operator runs to post the Event
        asyncio.run(handlers.reconcile_once(ctx, frozen(body), [], logging.getLogger("gitops-cases")))
    written = server.body
    written["metadata"].pop("resourceVersion")
    return written


def deleting() -> dict[str, Any]:
    """Healthy and being deleted (a finalizer holds it)."""
    obj = healthy()
    obj["metadata"]["deletionTimestamp"] = (T0 + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    return obj


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "created": created,
    "pending": pending,
    "healthy": healthy,
    "scaled-to-zero": scaled_to_zero,
    "not-observed": not_observed,
    "canary": canary,
    "paused": paused,
    "awaiting-promotion": awaiting_promotion,
    "safety-hold": safety_hold,
    "scaling-up": scaling_up,
    "rolled-back": rolled_back,
    "rolled-back-by-older-operator": rolled_back_by_older_operator,
    "no-ready-pods": no_ready_pods,
    "fallback": fallback,
    "invalid-spec": invalid_spec,
    "deleting": deleting,
}
"""Name (its testdata file is ``<name>.yaml``) -> the scenario that leaves the object."""


def render(obj: dict[str, Any]) -> str:
    """An object as its testdata file holds it."""
    return yaml.safe_dump(obj, sort_keys=False, width=120)


if __name__ == "__main__":
    TESTDATA.mkdir(parents=True, exist_ok=True)
    for name, scenario in CASES.items():
        (TESTDATA / f"{name}.yaml").write_text(render(scenario()))
        print(TESTDATA / f"{name}.yaml")
