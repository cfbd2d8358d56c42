#!/usr/bin/env python3
"""`kubectl cutover`: the on-call side of cutover, as a kubectl plugin.

One file with no dependency beyond Python 3.11's standard library and the ``kubectl`` binary,
so that krew can install it as it is (``kubectl-cutover`` in the archive ``make krew`` builds
for ``plugins/cutover.yaml``, hack/krew_package.py) and a user needs none of the project's
packages; the ``kubectl-cutover`` entry point of the Python package runs this same file. The
names it shares with the operator (the request annotations, the scaled-by annotation, how a
confidence interval is written) are typed here once more, and
``tests/test_kubectl_plugin_standalone.py`` fails when they drift from ``cutover.api``.

Every action writes one annotation whose value carries a fresh request id
(``<action>-<UTC time>-<12 random hex>``, 48 random bits; for ``rollback --to REV`` the value is ``REV@<id>``, so
asking for the same revision again is a new request, never an identical annotation that the
operator takes as already done). The operator handles each request exactly once and records it
in ``status.handledRequests`` (action, id, by, at, result); the plugin then waits, up to
``--wait`` seconds (20 by default), for that record and prints what the operator did, or says
the request is still pending and how to follow it. Exit status: 0 done, 1 refused by the
operator ("ignored: ...") or kubectl failed, 2 bad usage, 3 still pending when the wait ended.

``status`` and ``history`` print text for people, or with ``-o json`` / ``-o yaml`` one
document for programs (its shape is in ``status_document`` and ``history_document``). YAML is
written by ``yaml_text``, a small emitter for JSON's values (the plugin may import nothing
outside the standard library); the tests load its output back with PyYAML.

Shell completion: kubectl 1.26 and later complete a plugin's words by running
``kubectl_complete-cutover`` from PATH (kubernetes/kubernetes#105867). ``kubectl cutover
completion`` prints that script (krew does not install it: kubernetes-sigs/krew#812); it calls
``kubectl-cutover __complete WORDS...``, which answers as Cobra's ``__complete`` does: one
candidate a line, then ``:<directive>`` (``completions``).

The plugin calls kubectl itself, so ``--context``, ``--namespace``, ``--kubeconfig`` and the
user's credentials work as with any kubectl command, and the audit log shows the real user.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

RESOURCE = "modeldeployments.cutover.dev"
ACTIONS = {
    "promote": "go to the next step (with --full: promote the candidate now)",
    "abort": "stop the rollout and send all traffic back to stable",
    "pause": "hold the rollout at its current step",
    "resume": "continue a paused rollout",
    "retry": "start the rolled-back spec again",
}
COMMANDS = {
    "status": "show phase, traffic, the last analysis and conditions",
    "watch": "follow the ModelDeployment as it changes",
    "history": "list past stable revisions and handled requests",
    **ACTIONS,
    "rollback": "roll back to the stable revision (or --to REV)",
    "completion": "print the kubectl_complete-cutover script for shell completion",
}
"""Every command, with its help."""
REQUEST_ANNOTATIONS = {
    "promote": "cutover.dev/promote",
    "abort": "cutover.dev/abort",
    "rollback": "cutover.dev/rollback",
    "rollbackTo": "cutover.dev/rollback-to",
    "pause": "cutover.dev/pause",
    "resume": "cutover.dev/resume",
    "retry": "cutover.dev/retry",
}
"""The on-call request annotations, as ``cutover.api.v1alpha1.REQUEST_ANNOTATIONS`` names them."""
ANNOTATION_SCALED_BY = "cutover.dev/scaled-by"
"""As ``cutover.api.contract.ANNOTATION_SCALED_BY``: another scaler owns the replicas."""

WAIT_SECONDS = 20.0
"""How long an action waits, by default, for the operator to record what it did."""
PENDING = 3
"""Exit status when the request was written but not handled before the wait ended."""
REVISION = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
"""What a revision name can be (it is a label value on the revision's objects); never "@",
which separates it from the request id, nor empty."""
OUTPUTS = ("json", "yaml")
"""The machine-readable forms of ``status`` and ``history`` (``-o``)."""
COMPLETION_SCRIPT = """#!/bin/sh
# Shell completion for `kubectl cutover` (kubectl 1.26 and later run this from PATH with the
# words after "cutover"). Written by `kubectl cutover completion`.
exec kubectl-cutover __complete "$@"
"""
NO_FILE_COMPLETION = 4
"""Cobra's ShellCompDirectiveNoFileComp: the shell offers no file names either."""
DEFAULT_COMPLETION = 0
"""Cobra's ShellCompDirectiveDefault: the shell may fall back to file names (for --kubeconfig)."""


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


def interval_text(lower: float | None, upper: float | None, digits: int = 3) -> str:
    """A confidence interval in words, as ``cutover.api.contract.interval_text`` writes it:
    ``[0.8, 1.3]``, ``[0, ∞)``; ``None`` or an infinite value is an unbounded side."""

    def finite(x: float | None) -> bool:
        return x is not None and math.isfinite(x)

    left = f"[{lower:.{digits}g}" if finite(lower) else "(-∞"
    right = f"{upper:.{digits}g}]" if finite(upper) else "∞)"
    return f"{left}, {right}"


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


def kubectl_command(
    *command: str, namespace: str | None = None, context: str | None = None, kubeconfig: str | None = None
) -> list[str]:
    """``kubectl`` with the user's connection flags (each only when given), then ``command``."""
    cmd = ["kubectl"]
    for flag, value in (("--kubeconfig", kubeconfig), ("--context", context), ("--namespace", namespace)):
        if value:
            cmd += [flag, value]
    return [*cmd, *command]


def _kubectl(args: argparse.Namespace, *command: str) -> list[str]:
    return kubectl_command(*command, namespace=args.namespace, context=args.context, kubeconfig=args.kubeconfig)


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


def status_document(body: Mapping[str, Any]) -> dict[str, Any]:
    """``kubectl cutover status NAME -o json|yaml``: a ModelDeployment's state in one mapping.

    Keys (always present; null or empty when the object has none):

    - ``name``, ``namespace``; ``model``: {``name``, ``version``}; ``strategy``: its type.
    - ``phase`` ("Pending" before the operator wrote one), ``message``.
    - ``stableRevision``, ``candidateRevision``, ``currentStepIndex``.
    - ``steps``: the canary steps as [{``index``, ``state``, ``step``}], ``step`` as in the spec;
      ``state`` is "done", "current" or "pending" while a candidate rolls out, null otherwise.
    - ``fallback``: {``revision``, ``reason``} while a fallback serves instead of stable.
    - ``safetyPolicy``: {``name``, ``ready`` ("True", "False", "Unknown"), ``reason``,
      ``holding``: rollouts hold until it is ready} when the spec names one.
    - ``autoscaling``: ``status.autoscaling`` as the operator wrote it; ``scaledExternally``:
      another scaler (an HPA, KEDA, the platform) owns the replicas.
    - ``traffic``, ``lastAnalysis``, ``postPromotion``, ``conditions``: the status fields of
      those names, as the CRD defines them (an unbounded confidence bound is absent).
    """
    metadata, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    model, strategy = spec.get("model") or {}, spec.get("strategy") or {}
    candidate = status.get("candidateRevision")
    current = status.get("currentStepIndex", 0)

    def state(index: int) -> str | None:
        if not candidate:
            return None
        return "current" if index == current else "pending" if index > current else "done"

    steps = (strategy.get("canary") or {}).get("steps") or []
    policy = (spec.get("safetyPolicyRef") or {}).get("name")
    safety = None
    if policy:
        # What the operator last found of it: SafetyPolicyReady's status and reason.
        conditions = status.get("conditions") or []
        ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "SafetyPolicyReady"), {})
        safety = {
            "name": policy,
            "ready": ready.get("status", "Unknown"),
            "reason": ready.get("reason", ""),
            "holding": ready.get("status") != "True",
        }
    fallback = status.get("fallbackRevision")
    return {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "model": {"name": model.get("name"), "version": model.get("version")},
        "strategy": strategy.get("type"),
        "phase": status.get("phase", "Pending"),
        "message": status.get("message", ""),
        "stableRevision": status.get("stableRevision"),
        "candidateRevision": candidate,
        "currentStepIndex": status.get("currentStepIndex"),
        "steps": [{"index": i, "state": state(i), "step": step} for i, step in enumerate(steps)],
        "fallback": {"revision": fallback, "reason": status.get("fallbackReason", "")} if fallback else None,
        "safetyPolicy": safety,
        "autoscaling": status.get("autoscaling"),
        "scaledExternally": bool(
            status.get("scaledExternally") or ANNOTATION_SCALED_BY in (metadata.get("annotations") or {})
        ),
        "traffic": status.get("traffic") or [],
        "lastAnalysis": status.get("lastAnalysis"),
        "postPromotion": status.get("postPromotion"),
        "conditions": status.get("conditions") or [],
    }


def status_lines(body: Mapping[str, Any]) -> list[str]:
    """``kubectl cutover status NAME``: ``status_document`` in lines for people."""
    doc = status_document(body)
    step = "-" if doc["currentStepIndex"] is None else doc["currentStepIndex"]
    lines = [
        f"Name:       {doc['name']}",
        f"Model:      {doc['model']['name']} {doc['model']['version']}",
        f"Strategy:   {doc['strategy']}",
        f"Phase:      {doc['phase']}  {doc['message']}".rstrip(),
        f"Stable:     {doc['stableRevision'] or '-'}",
        f"Candidate:  {doc['candidateRevision'] or '-'}  step {step}",
    ]
    if doc["fallback"]:
        lines.append(
            f"Fallback:   {doc['fallback']['revision']} serves instead of stable: {doc['fallback']['reason']}"
            " (kubectl cutover resume ends it)"
        )
    if safety := doc["safetyPolicy"]:
        said = f"{safety['ready']} {safety['reason']}".rstrip()
        hold = " (rollouts hold)" if safety["holding"] else ""
        lines.append(f"Safety:     SafetyPolicy {safety['name']}: ready {said}{hold}")
    if scaled := doc["autoscaling"]:
        # Only the replica counts are required (the CRD); the rest may be missing.
        target = f" (target {scaled['target']})" if scaled.get("target") is not None else ""
        metric = f"{scaled['metric']} " if scaled.get("metric") else ""
        value = f", {metric}{scaled['value']:g}/pod{target}" if scaled.get("value") is not None else ""
        limit = f"; limited by {scaled['limitedBy']}" if scaled.get("limitedBy") else ""
        lines.append(
            f"Scaling:    {scaled['currentReplicas']} -> {scaled['desiredReplicas']} pods{value}{limit}: "
            f"{scaled.get('message', '')}".rstrip(": ")
        )
    elif doc["scaledExternally"]:
        lines.append("Scaling:    by another scaler (an HPA, KEDA or the platform); the operator leaves replicas alone")
    if doc["steps"] and doc["candidateRevision"]:
        lines.append("Steps:")
        marks = {"current": "->", "pending": "  ", "done": "ok"}
        for row in doc["steps"]:
            what = ", ".join(
                f"{k} {v}" if not isinstance(v, dict) else f"{k} {v or ''}".rstrip() for k, v in row["step"].items()
            )
            lines.append(f"  {marks[row['state']]} {row['index']}: {what}")
    lines.append("Traffic:")
    for row in doc["traffic"]:
        mirror = f"  mirror {row['mirrorPercent']}%" if row.get("mirrorPercent") else ""
        lines.append(f"  {row['role']:<10} {row['revision']:<12} {row['weight']:>3}%{mirror}")
    if analysis := doc["lastAnalysis"]:
        lines.append(f"Analysis:   {analysis['verdict']}  {analysis.get('reason', '')}".rstrip())
        for m in analysis.get("metrics", []):
            # Status leaves out a bound that does not exist (JSON has no infinity): that side is
            # unbounded, printed as such, never as 0 or None.
            bounds = interval_text(m.get("lower"), m.get("upper")) if "lower" in m or "upper" in m else ""
            estimate = "n/a" if m.get("estimate") is None else f"{m['estimate']:.3g}"
            lines.append(f"  {m['name']:<20} {m.get('decision', ''):<12} estimate {estimate} {bounds}".rstrip())
    if watch := doc["postPromotion"]:
        lines.append(
            f"Watch:      {watch.get('state', 'Watching')} {watch['revision']} until {watch['until']}"
            f" (rollback to {watch['previous']}): {watch.get('reason', '')}".rstrip(": ")
        )
    lines.append("Conditions:")
    for c in doc["conditions"]:
        lines.append(f"  {c['type']:<18} {c['status']:<7} {c.get('reason', '')}: {c.get('message', '')}")
    return lines


def history_document(body: Mapping[str, Any]) -> dict[str, Any]:
    """``kubectl cutover history NAME -o json|yaml``: ``name``, ``namespace``, ``revisions``
    (``status.history``, newest first: revision, modelVersion, promotedAt, ...) and ``requests``
    (``status.handledRequests``: action, id, by, at, result), each entry as the operator
    records it; empty lists when there are none."""
    metadata, status = body.get("metadata") or {}, body.get("status") or {}
    return {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "revisions": status.get("history") or [],
        "requests": status.get("handledRequests") or [],
    }


def history_lines(body: Mapping[str, Any]) -> list[str]:
    """``kubectl cutover history NAME``: ``history_document`` as two tables for people."""
    doc = history_document(body)
    lines = [f"{'REVISION':<14} {'VERSION':<20} PROMOTED"]
    for rec in doc["revisions"]:
        lines.append(f"{rec['revision']:<14} {rec.get('modelVersion', ''):<20} {rec.get('promotedAt', '')}")
    lines += ["", f"{'REQUEST':<36} {'ACTION':<10} {'BY':<20} RESULT"]
    for req in doc["requests"]:
        lines.append(f"{req['id']:<36} {req['action']:<10} {req.get('by', ''):<20} {req.get('result', '')}")
    return lines


# ---- YAML ---------------------------------------------------------------------------------------
# YAML 1.1 reads these plain words as booleans or null (PyYAML does, and so does Go's yaml.v2,
# which kubectl vendors); they are quoted, as is every string a plain scalar could misread.
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}
_PLAIN = re.compile(r"[A-Za-z][-A-Za-z0-9_./]*")
_LONGEST_KEY = 1000
"""Longer keys are written as explicit keys (YAML limits an implicit key to 1024 characters)."""


def _yaml_printable(code: int) -> bool:
    """Characters YAML allows unescaped inside a double-quoted scalar, less every line break."""
    return (
        0x20 <= code <= 0x7E
        or (0xA0 <= code <= 0xD7FF and code not in (0x2028, 0x2029))
        or (0xE000 <= code <= 0xFFFD and code != 0xFEFF)
        or 0x10000 <= code <= 0x10FFFF
    )


def _yaml_quoted(text: str) -> str:
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif _yaml_printable(code):
            out.append(char)
        else:
            out.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _yaml_scalar(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
        mantissa, e, exponent = repr(value).partition("e")
        # YAML 1.1's float needs a "." in the mantissa: 1e-05 would be read back as a string.
        return (mantissa if "." in mantissa else mantissa + ".0") + e + exponent
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"  # only empty ones reach here
    text = str(value)
    return text if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS else _yaml_quoted(text)


def _yaml_block(value: Any) -> list[str]:
    if isinstance(value, dict) and value:
        lines = []
        for key, item in value.items():
            name = _yaml_scalar(str(key))
            # An implicit key ("KEY: value") may be at most 1024 characters long; a longer one
            # is written as an explicit key ("? KEY" and ": value" on the next line).
            head = [f"{name}:"] if len(name) <= _LONGEST_KEY else [f"? {name}", ":"]
            if isinstance(item, dict | list) and item:
                lines += [*head, *(f"  {line}" for line in _yaml_block(item))]
            else:
                lines += [*head[:-1], f"{head[-1]} {_yaml_scalar(item)}"]
        return lines
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            first, *rest = _yaml_block(item)
            lines += [f"- {first}", *(f"  {line}" for line in rest)]
        return lines
    return [_yaml_scalar(value)]


def yaml_text(value: Any) -> str:
    """``value`` (what ``json.loads`` returns: dicts, lists, strings, numbers, booleans, None)
    as one YAML block document, ending in a newline. Strings are plain where no YAML 1.1 reader
    can take them for anything else, double-quoted otherwise (line breaks and characters YAML
    cannot hold raw escaped); floats keep a "." so that they read back as floats. Raises
    nothing for such values; other objects are written as their ``str``."""
    return "\n".join(_yaml_block(value)) + "\n"


def _print_document(doc: Mapping[str, Any], output: str) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n" if output == "json" else yaml_text(doc))


def _status(args: argparse.Namespace) -> int:
    body = _get(args)
    if args.output:
        _print_document(status_document(body), args.output)
    else:
        print("\n".join(status_lines(body)))
    return 0


def _history(args: argparse.Namespace) -> int:
    body = _get(args)
    if args.output:
        _print_document(history_document(body), args.output)
    else:
        print("\n".join(history_lines(body)))
    return 0


def _id(args: argparse.Namespace, action: str) -> str:
    return request_id("full" if getattr(args, "full", False) else action)


def _watch(args: argparse.Namespace) -> int:
    return subprocess.run(_kubectl(args, "get", RESOURCE, args.name, "-o", "wide", "--watch")).returncode


def _rollback(args: argparse.Namespace) -> int:
    if args.to_revision is not None:
        return _annotate(args, "rollbackTo", rollback_to_value(args.to_revision))
    return _annotate(args, "rollback", request_id("rollback"))


def _completion(args: argparse.Namespace) -> int:
    sys.stdout.write(COMPLETION_SCRIPT)
    return 0


CONNECTION_FLAGS = {"-n": "namespace", "--namespace": "namespace", "--context": "context", "--kubeconfig": "kubeconfig"}
"""The flags that choose where kubectl connects, and the ``kubectl_command`` keyword of each."""


def parser() -> argparse.ArgumentParser:
    """The command line: ``kubectl cutover [-n NS] [--context C] [--kubeconfig F] COMMAND ...``."""

    # -n, --context and --kubeconfig work before or after the command, as with kubectl itself.
    def common(default: Any) -> argparse.ArgumentParser:
        shared = argparse.ArgumentParser(add_help=False, argument_default=default)
        shared.add_argument("-n", "--namespace", help="namespace of the ModelDeployment")
        shared.add_argument("--context", help="kubeconfig context")
        shared.add_argument("--kubeconfig", help="kubeconfig file (default: kubectl's)")
        return shared

    top = argparse.ArgumentParser(
        prog="kubectl cutover", description="Control cutover rollouts.", parents=[common(None)]
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    after = common(argparse.SUPPRESS)  # given after the command, they override; absent, they leave the top's

    def command(name: str, run: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=COMMANDS[name], parents=[after])
        p.add_argument("name", help="ModelDeployment name")
        p.set_defaults(run=run)
        return p

    for name, run in (("status", _status), ("history", _history)):
        command(name, run).add_argument(
            "-o", "--output", choices=OUTPUTS, help="print one JSON or YAML document instead of text"
        )
    command("watch", _watch)
    for action in ACTIONS:
        command(action, lambda a, action=action: _annotate(a, action, _id(a, action)))
    sub.choices["promote"].add_argument("--full", action="store_true", help="skip every remaining step")
    rollback = command("rollback", _rollback)
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
    script = '"${KREW_ROOT:-$HOME/.krew}/bin/kubectl_complete-cutover"'
    sub.add_parser(
        "completion",
        help=COMMANDS["completion"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prints the kubectl_complete-cutover script. kubectl 1.26 and later run an executable\n"
        "of that name from PATH to complete `kubectl cutover`; krew does not install it, so save it,\n"
        f"for example beside kubectl-cutover:\n\n  kubectl cutover completion > {script}\n  chmod +x {script}",
    ).set_defaults(run=_completion)
    return top


def _kubectl_output(command: list[str]) -> str | None:
    """What ``command`` (a kubectl call) prints, or None when it fails or takes over 10 s: a
    completion offers nothing then rather than an error in the middle of the user's line."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _subcommands(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    # argparse keeps its subparsers among its actions; it has no public accessor for them.
    (sub,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def completions(
    words: Sequence[str], run: Callable[[list[str]], str | None] = _kubectl_output
) -> tuple[list[str], int]:
    """Candidates for the last of ``words`` (the words after ``kubectl cutover``; the last is
    the one being completed, "" for a new word) and Cobra's directive for the shell.

    Offers the commands (each with a tab and its help), a command's flags, ModelDeployment names
    in the namespace and context the words give (or kubectl's defaults), namespaces after
    ``-n``, contexts after ``--context``, revisions from ``status.history`` after ``rollback
    NAME --to``, and json/yaml after ``-o``. ``run`` runs a kubectl command and returns its
    output, or None when it failed (then nothing is offered). The directive is
    ``NO_FILE_COMPLETION`` except after ``--kubeconfig``, where file names are the answer.
    """
    *before, word = list(words) or [""]
    top = parser()
    commands = _subcommands(top)
    with_value = {
        option
        for p in (top, *commands.values())
        for action in p._actions
        if action.nargs != 0
        for option in action.option_strings
    }
    connection: dict[str, str] = {}
    positionals: list[str] = []
    skip = False
    for i, current in enumerate(before):
        flag, equals, value = current.partition("=")
        if skip:
            skip = False
        elif current.startswith("-"):
            skip = current in with_value
            if flag in CONNECTION_FLAGS and (equals or i + 1 < len(before)):
                connection[CONNECTION_FLAGS[flag]] = value if equals else before[i + 1]
        else:
            positionals.append(current)
    previous = before[-1] if before else ""

    def names(*command: str, **where: str) -> list[str]:
        out = run(kubectl_command(*command, **where)) or ""
        return [n.rpartition("/")[2] for n in out.split() if n.rpartition("/")[2].startswith(word)]

    elsewhere = {k: v for k, v in connection.items() if k != "namespace"}
    if skip:  # the word is the value of the flag before it
        if previous in ("-n", "--namespace"):
            return names("get", "namespaces", "-o", "name", **elsewhere), NO_FILE_COMPLETION
        if previous == "--context":
            return names("config", "get-contexts", "-o", "name", **elsewhere), NO_FILE_COMPLETION
        if previous == "--kubeconfig":
            return [], DEFAULT_COMPLETION
        if previous in ("-o", "--output"):
            return [o for o in OUTPUTS if o.startswith(word)], NO_FILE_COMPLETION
        if previous in ("--to", "--to-revision") and len(positionals) > 1:
            out = run(kubectl_command("get", RESOURCE, positionals[1], "-o", "json", **connection))
            history = ((json.loads(out) if out else {}).get("status") or {}).get("history") or []
            return [r["revision"] for r in history if str(r.get("revision", "")).startswith(word)], NO_FILE_COMPLETION
        return [], NO_FILE_COMPLETION
    if word.startswith("-"):
        chosen = commands.get(positionals[0]) if positionals else top
        options = {o for action in (chosen or top)._actions for o in action.option_strings}
        return sorted(o for o in options if o.startswith(word)), NO_FILE_COMPLETION
    if not positionals:
        return [f"{name}\t{text}" for name, text in COMMANDS.items() if name.startswith(word)], NO_FILE_COMPLETION
    if len(positionals) == 1 and positionals[0] in commands and positionals[0] != "completion":
        return names("get", RESOURCE, "-o", "name", **connection), NO_FILE_COMPLETION
    return [], NO_FILE_COMPLETION


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kubectl cutover ARGV`` (``sys.argv[1:]`` by default) and return the exit status;
    ``__complete WORDS...`` prints ``completions`` of WORDS instead."""
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["__complete"]:
        candidates, directive = completions(words[1:])
        print(*candidates, f":{directive}", sep="\n")
        return 0
    args = parser().parse_args(words)
    try:
        code: int = args.run(args)
    except subprocess.CalledProcessError as err:
        sys.stderr.write(err.stderr or str(err))
        return err.returncode or 1
    return code


def complete_main() -> int:
    """``kubectl_complete-cutover WORDS...``, as the Python package installs it: ``main``'s
    ``__complete``."""
    return main(["__complete", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
