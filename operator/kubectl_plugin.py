"""`kubectl cutover`: the on-call side of cutover, as a kubectl plugin.

Every action writes one annotation whose value carries a fresh request id
(``<action>-<UTC time>-<12 random hex>``, 48 random bits; for ``rollback --to REV`` the value is ``REV@<id>``, so
asking for the same revision again is a new request, never an identical annotation that the
operator takes as already done). The operator handles each request exactly once and records it
in ``status.handledRequests`` (action, id, by, at, result); the plugin then waits, up to
``--wait`` seconds (20 by default), for that record and prints what the operator did, or says
the request is still pending and how to follow it. Exit status: 0 done, 1 refused by the
operator ("ignored: ...") or kubectl failed, 3 still pending when the wait ended.

The plugin calls kubectl itself, so ``--context``, ``--namespace`` and the user's credentials
work as with any kubectl command, and the audit log shows the real user.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cutover.api.contract import ANNOTATION_SCALED_BY, interval_text
from cutover.api.v1alpha1 import REQUEST_ANNOTATIONS

RESOURCE = "modeldeployments.cutover.dev"
ACTIONS = {
    "promote": "go to the next step (with --full: promote the candidate now)",
    "abort": "stop the rollout and send all traffic back to stable",
    "pause": "hold the rollout at its current step",
    "resume": "continue a paused rollout",
    "retry": "start the rolled-back spec again",
}


WAIT_SECONDS = 20.0
"""How long an action waits, by default, for the operator to record what it did."""
PENDING = 3
"""Exit status when the request was written but not handled before the wait ended."""
REVISION = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
"""What a revision name can be (it is a label value on the revision's objects); never "@",
which separates it from the request id, nor empty."""


def request_id(action: str) -> str:
    """A request id that is new every time: when, plus a random suffix. An id starting with
    "full" asks promote to skip every remaining step."""
    return f"{action}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(6)}"


def checked_revision(revision: str) -> str:
    """``revision`` if it can name a revision; raises ``ValueError`` saying why not (empty, or
    characters a revision never has, such as "@" or spaces)."""
    if not REVISION.fullmatch(revision):
        raise ValueError(
            f"{revision!r} is not a revision name (1 to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit); see `kubectl cutover history NAME`"
        )
    return revision


def rollback_to_value(revision: str) -> str:
    """The rollback-to annotation's value: ``REVISION@ID`` with a fresh id (the operator takes
    the part before the first "@" as the target). Raises ``ValueError`` for a malformed revision."""
    return f"{checked_revision(revision)}@{request_id('rollbackTo')}"


def _revision_argument(value: str) -> str:
    try:
        return checked_revision(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def handled_request(body: Mapping[str, Any], action: str, value: str) -> dict[str, Any] | None:
    """The ``status.handledRequests`` entry for the request written as ``value`` for ``action``,
    or None while it is not there. For rollback-to the operator may record the whole value or
    only the id after the "@"."""
    status = body.get("status") or {}
    ids = {value, value.split("@", 1)[-1]}
    for entry in status.get("handledRequests") or []:
        if entry.get("action") == action and entry.get("id") in ids:
            found: dict[str, Any] = entry
            return found
    if (status.get("lastHandledRequests") or {}).get(action) in ids:
        return {"action": action, "id": value, "result": "handled (its record has been pruned)"}
    return None


def wait_for_handled(
    get: Callable[[], Mapping[str, Any]],
    action: str,
    value: str,
    timeout: float,
    *,
    interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any] | None:
    """Read the object with ``get`` until the operator has recorded the request (its
    ``status.handledRequests`` entry) or ``timeout`` seconds have passed (None then)."""
    deadline = clock() + timeout
    while True:
        entry = handled_request(get(), action, value)
        if entry is not None or clock() >= deadline:
            return entry
        sleep(max(0.0, min(interval, deadline - clock())))


def outcome(name: str, action: str, value: str, entry: Mapping[str, Any] | None, waited: float) -> tuple[str, int]:
    """What to print once the wait ended, and the exit status (0 done, 1 refused, 3 pending)."""
    if entry is None:
        return (
            f"pending: the operator has not handled {action} {value} after {waited:g} s (is it running?); "
            f"follow it with `kubectl cutover history {name}`",
            PENDING,
        )
    result = str(entry.get("result") or "handled")
    when = f" at {entry['at']}" if entry.get("at") else ""
    return f"{action} of {name}: {result} (handled{when})", 1 if result.startswith("ignored") else 0


def _kubectl(args: argparse.Namespace, *command: str) -> list[str]:
    cmd = ["kubectl"]
    if args.context:
        cmd += ["--context", args.context]
    if args.namespace:
        cmd += ["--namespace", args.namespace]
    return [*cmd, *command]


def _get(args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        _kubectl(args, "get", RESOURCE, args.name, "-o", "json"), check=True, capture_output=True, text=True
    )
    body: dict[str, Any] = json.loads(out.stdout)
    return body


def _annotate(args: argparse.Namespace, action: str, value: str) -> int:
    """Write the request, then wait for the operator's record of it (see the module docstring)."""
    key = REQUEST_ANNOTATIONS[action]
    done = subprocess.run(
        _kubectl(args, "annotate", "--overwrite", RESOURCE, args.name, f"{key}={value}"),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        return done.returncode
    print(f"requested {action} of {args.name} (request id {value})", flush=True)
    wait = max(0.0, float(getattr(args, "wait", WAIT_SECONDS)))
    entry = wait_for_handled(lambda: _get(args), action, value, wait) if wait > 0 else None
    message, code = outcome(args.name, action, value, entry, wait)
    print(message)
    return code


def status_lines(body: dict[str, Any]) -> list[str]:
    """Human summary of a ModelDeployment's status."""
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    lines = [
        f"Name:       {body['metadata']['name']}",
        f"Model:      {spec.get('model', {}).get('name')} {spec.get('model', {}).get('version')}",
        f"Strategy:   {spec.get('strategy', {}).get('type')}",
        f"Phase:      {status.get('phase', 'Pending')}  {status.get('message', '')}".rstrip(),
        f"Stable:     {status.get('stableRevision') or '-'}",
        f"Candidate:  {status.get('candidateRevision') or '-'}  step {status.get('currentStepIndex', '-')}",
    ]
    if status.get("fallbackRevision"):
        lines.append(
            f"Fallback:   {status['fallbackRevision']} serves instead of stable: {status.get('fallbackReason', '')}"
            " (kubectl cutover resume ends it)"
        )
    policy = (spec.get("safetyPolicyRef") or {}).get("name")
    if policy:
        # What the operator last found of it: SafetyPolicyReady's status and reason.
        conditions = status.get("conditions", [])
        ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "SafetyPolicyReady"), {})
        said = f"{ready.get('status', 'Unknown')} {ready.get('reason', '')}".rstrip()
        hold = "" if ready.get("status") == "True" else " (rollouts hold)"
        lines.append(f"Safety:     SafetyPolicy {policy}: ready {said}{hold}")
    scaled = status.get("autoscaling")
    if scaled:
        value = f", {scaled['metric']} {scaled['value']:g}/pod (target {scaled['target']})" if "value" in scaled else ""
        limit = f"; limited by {scaled['limitedBy']}" if scaled.get("limitedBy") else ""
        lines.append(
            f"Scaling:    {scaled['currentReplicas']} -> {scaled['desiredReplicas']} pods{value}{limit}: "
            f"{scaled.get('message', '')}".rstrip(": ")
        )
    elif status.get("scaledExternally") or ANNOTATION_SCALED_BY in (body["metadata"].get("annotations") or {}):
        lines.append("Scaling:    by another scaler (an HPA, KEDA or the platform); the operator leaves replicas alone")
    steps = (spec.get("strategy", {}).get("canary") or {}).get("steps", [])
    if steps and status.get("candidateRevision"):
        lines.append("Steps:")
        current = status.get("currentStepIndex", 0)
        for i, step in enumerate(steps):
            mark = "->" if i == current else "  " if i > current else "ok"
            what = ", ".join(
                f"{k} {v}" if not isinstance(v, dict) else f"{k} {v or ''}".rstrip() for k, v in step.items()
            )
            lines.append(f"  {mark} {i}: {what}")
    lines.append("Traffic:")
    for row in status.get("traffic", []):
        mirror = f"  mirror {row['mirrorPercent']}%" if row.get("mirrorPercent") else ""
        lines.append(f"  {row['role']:<10} {row['revision']:<12} {row['weight']:>3}%{mirror}")
    analysis = status.get("lastAnalysis")
    if analysis:
        lines.append(f"Analysis:   {analysis['verdict']}  {analysis.get('reason', '')}".rstrip())
        for m in analysis.get("metrics", []):
            # Status leaves out a bound that does not exist (JSON has no infinity): that side is
            # unbounded, printed as such, never as 0 or None.
            bounds = interval_text(m.get("lower"), m.get("upper")) if "lower" in m or "upper" in m else ""
            estimate = "n/a" if m.get("estimate") is None else f"{m['estimate']:.3g}"
            lines.append(f"  {m['name']:<20} {m.get('decision', ''):<12} estimate {estimate} {bounds}".rstrip())
    watch = status.get("postPromotion")
    if watch:
        lines.append(
            f"Watch:      {watch['state']} {watch['revision']} until {watch['until']}"
            f" (rollback to {watch['previous']}): {watch.get('reason', '')}".rstrip(": ")
        )
    lines.append("Conditions:")
    for c in status.get("conditions", []):
        lines.append(f"  {c['type']:<18} {c['status']:<7} {c.get('reason', '')}: {c.get('message', '')}")
    return lines


def _status(args: argparse.Namespace) -> int:
    print("\n".join(status_lines(_get(args))))
    return 0


def _history(args: argparse.Namespace) -> int:
    status = _get(args).get("status") or {}
    print(f"{'REVISION':<14} {'VERSION':<20} PROMOTED")
    for rec in status.get("history", []):
        print(f"{rec['revision']:<14} {rec.get('modelVersion', ''):<20} {rec.get('promotedAt', '')}")
    print(f"\n{'REQUEST':<36} {'ACTION':<10} {'BY':<20} RESULT")
    for req in status.get("handledRequests", []):
        print(f"{req['id']:<36} {req['action']:<10} {req.get('by', ''):<20} {req.get('result', '')}")
    return 0


def _id(args: argparse.Namespace, action: str) -> str:
    return request_id("full" if getattr(args, "full", False) else action)


def _watch(args: argparse.Namespace) -> int:
    return subprocess.run(_kubectl(args, "get", RESOURCE, args.name, "-o", "wide", "--watch")).returncode


def _rollback(args: argparse.Namespace) -> int:
    if args.to_revision is not None:
        return _annotate(args, "rollbackTo", rollback_to_value(args.to_revision))
    return _annotate(args, "rollback", request_id("rollback"))


def parser() -> argparse.ArgumentParser:
    # -n and --context work before or after the command, as with kubectl itself.
    def common(default: Any) -> argparse.ArgumentParser:
        shared = argparse.ArgumentParser(add_help=False, argument_default=default)
        shared.add_argument("-n", "--namespace", help="namespace of the ModelDeployment")
        shared.add_argument("--context", help="kubeconfig context")
        return shared

    top = argparse.ArgumentParser(
        prog="kubectl cutover", description="Control cutover rollouts.", parents=[common(None)]
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    after = common(argparse.SUPPRESS)  # given after the command, they override; absent, they leave the top's

    def command(name: str, help_text: str, run: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, parents=[after])
        p.add_argument("name", help="ModelDeployment name")
        p.set_defaults(run=run)
        return p

    command("status", "show phase, traffic, the last analysis and conditions", _status)
    command("watch", "follow the ModelDeployment as it changes", _watch)
    command("history", "list past stable revisions and handled requests", _history)
    for action, help_text in ACTIONS.items():
        command(action, help_text, lambda a, action=action: _annotate(a, action, _id(a, action)))
    sub.choices["promote"].add_argument("--full", action="store_true", help="skip every remaining step")
    rollback = command("rollback", "roll back to the stable revision (or --to REV)", _rollback)
    rollback.add_argument(
        "--to",
        "--to-revision",
        dest="to_revision",
        type=_revision_argument,
        help="a revision from `kubectl cutover history`",
    )
    for action in (*ACTIONS, "rollback"):
        sub.choices[action].add_argument(
            "--wait",
            type=float,
            default=WAIT_SECONDS,
            metavar="SECONDS",
            help=f"wait this long for the operator's answer (default {WAIT_SECONDS:g}; 0: do not wait); "
            f"exit 0 done, 1 refused, {PENDING} still pending",
        )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except subprocess.CalledProcessError as err:
        sys.stderr.write(err.stderr or str(err))
        return err.returncode or 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
