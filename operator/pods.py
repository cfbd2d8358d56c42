"""Why a revision's pods are not ready, read from pod status the way `kubectl describe pod` shows it.

The state machine only sees ready-pod counts; when they stay short, people need the cause in
the ModelDeployment's status, not "waiting". :func:`problems` reads the pods of one
ModelDeployment and returns, per revision, the most telling problem: a pod the scheduler cannot
place (and the scheduler's own message, such as a missing PersistentVolumeClaim or too few
GPUs), an image that cannot be pulled, a failing init container (the storage fetcher), a
container in a crash loop (with its last exit), a failed or evicted pod, or a readiness probe
that keeps failing. Pure: no I/O, tested on pod objects as the API server returns them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cutover.api.contract import LABEL_REVISION

WAITING_PROBLEMS = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "ErrImageNeverPull",
)
"""Container waiting reasons that will not clear by themselves (kubelet's names), most telling first."""

SEVERITY = ("Failed", "InitContainerFailed", *WAITING_PROBLEMS, "Unschedulable", "NotReady")
"""Reasons, most telling first: the first one found among a revision's pods is reported."""


@dataclass(frozen=True)
class PodProblem:
    """Why ``pods`` of a revision's pods are not ready.

    ``reason`` is one CamelCase word (Unschedulable, ImagePullBackOff, CrashLoopBackOff,
    InitContainerFailed, Failed, NotReady); ``message`` is what the scheduler or the kubelet said."""

    reason: str
    message: str
    pods: int = 1

    def describe(self) -> str:
        """One line for a status message: ``2 pods Unschedulable: 0/7 nodes are available: …``."""
        count = "1 pod" if self.pods == 1 else f"{self.pods} pods"
        return f"{count} {self.reason}: {self.message}" if self.message else f"{count} {self.reason}"


def _container_problem(statuses: Iterable[Mapping[str, Any]], init: bool) -> tuple[str, str] | None:
    for cs in statuses:
        name = cs.get("name", "")
        state = cs.get("state") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        exit_note = (
            f" (last exit code {last.get('exitCode')}{': ' + last['reason'] if last.get('reason') else ''})"
            if last
            else ""
        )
        where = f"{'init container' if init else 'container'} {name}"
        if waiting.get("reason") in WAITING_PROBLEMS:
            reason = waiting["reason"]
            if init and reason == "CrashLoopBackOff":
                reason = "InitContainerFailed"
            # kubelet's back-off text ("back-off 40s restarting failed container=...") says only
            # how long it waits; the last exit says why.
            detail = "" if reason in ("CrashLoopBackOff", "InitContainerFailed") else waiting.get("message", "")
            return reason, (f"{where}: {detail}" if detail else where) + exit_note
        if init and terminated and terminated.get("exitCode", 0) != 0:
            detail = terminated.get("message") or terminated.get("reason") or ""
            return "InitContainerFailed", f"{where} exited with code {terminated.get('exitCode')}" + (
                f": {detail}" if detail else ""
            )
    return None


def problem_of(pod: Mapping[str, Any]) -> PodProblem | None:
    """The reason one pod is not ready, or None when it is ready (or simply still starting)."""
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return None  # going away on purpose
    if status.get("phase") == "Failed":
        return PodProblem("Failed", f"{status.get('reason', '')}: {status.get('message', '')}".strip(": "))
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False":
        return PodProblem(scheduled.get("reason") or "Unschedulable", scheduled.get("message", ""))
    found = _container_problem(status.get("initContainerStatuses") or [], init=True)
    found = found or _container_problem(status.get("containerStatuses") or [], init=False)
    if found is not None:
        return PodProblem(*found)
    ready = conditions.get("Ready")
    if ready is not None and ready.get("status") == "False" and status.get("phase") == "Running":
        restarts = sum(int(cs.get("restartCount", 0)) for cs in status.get("containerStatuses") or [])
        running = all("running" in (cs.get("state") or {}) for cs in status.get("containerStatuses") or [])
        if running and restarts:
            return PodProblem("NotReady", f"readiness probe failing; restarted {restarts} times")
    return None


def problems(pods: Iterable[Mapping[str, Any]]) -> dict[str, PodProblem]:
    """Per revision (the pod label ``cutover.dev/revision``), its most telling pod problem, with
    how many of its pods have that reason. Revisions whose pods have no problem are absent."""
    found: dict[str, list[PodProblem]] = {}
    for pod in pods:
        revision = (pod.get("metadata", {}).get("labels") or {}).get(LABEL_REVISION)
        problem = problem_of(pod)
        if revision and problem is not None:
            found.setdefault(revision, []).append(problem)
    out = {}
    for revision, items in found.items():
        worst = min(items, key=lambda p: SEVERITY.index(p.reason) if p.reason in SEVERITY else len(SEVERITY))
        same = sum(1 for p in items if p.reason == worst.reason)
        out[revision] = PodProblem(worst.reason, worst.message, same)
    return out
