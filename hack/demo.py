"""`make demo` (``python -m hack.demo``): a real rollout on one machine, start to finish.

Brings up the control plane, Prometheus, the operator, the gateway and the local runner
(hack/devstack.py), drives steady traffic through the gateway, then in order:

1. deploys model v1 and waits for it to be Ready;
2. rolls out a good v2 by canary with analysis: weights step up, decisions show their evidence,
   v2 is promoted;
3. rolls out a bad v3 (it fails on 10% of inputs, v2 on 2%): rolled back automatically, with the reason;
4. on-call rolls back to v1 with `kubectl cutover rollback --to-revision`;
5. rolls out v4 and stops Prometheus halfway: weights freeze, nothing is decided, and the
   rollout resumes and finishes once Prometheus is back.

Progress is printed live; at the end a timeline picture is written (weights, error rates and the
decision bounds over time). Everything is torn down on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutover.api.contract import interval_text
from cutover.serving import sample_models
from hack.devstack import REPO, Stack, Traffic
from tests.support.waiting import wait_until

NAME = "fraud"
MODEL = "fraud-scorer"


def deployment(version: str, model: Path, prometheus: str) -> dict[str, Any]:
    return {
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "model": {
                "name": MODEL,
                "version": version,
                "format": "onnx",
                "storageUri": f"file://{model}",
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
            },
            "runtime": {"replicas": 1},
            "strategy": {
                "type": "canary",
                "canary": {
                    "steps": [{"setWeight": 20}, {"pause": {"duration": "15s"}}, {"setWeight": 50}, {"analysis": {}}]
                },
            },
            "analysis": {
                "interval": "5s",
                "minSamples": 300,
                "minDuration": "15s",
                "metrics": [{"name": "error-rate", "builtin": "errorRate", "critical": True, "passMargin": 1.0}],
                "prometheus": {"address": prometheus},
            },
            "progressDeadlineSeconds": 600,
        },
    }


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)

    def event(self, text: str) -> None:
        self.events.append((time.monotonic() - self.started, text))
        print(f"\n==> {text}", flush=True)


def _evidence(status: dict[str, Any]) -> dict[str, Any]:
    analysis = status.get("lastAnalysis") or {}
    metrics = {m["name"]: m for m in analysis.get("metrics") or []}
    return {"verdict": analysis.get("verdict"), "reason": analysis.get("reason", ""), **metrics.get("error-rate", {})}


def evidence_text(evidence: dict[str, Any]) -> str:
    """The error-rate evidence for the progress line: `` (error ratio 1.2, CS [0.8, 1.9], n=…)``,
    an unbounded side shown as such (status leaves out a bound that does not exist yet, which
    is no bound, not 0); empty before the first error."""
    if evidence.get("estimate") is None:
        return ""
    return (
        f" (error ratio {evidence['estimate']:.2f}, CS {interval_text(evidence.get('lower'), evidence.get('upper'))}, "
        f"n={evidence.get('candidateSamples')}/{evidence.get('baselineSamples')})"
    )


class Demo:
    def __init__(self, stack: Stack, traffic: Traffic, timeline: Timeline) -> None:
        self.stack, self.traffic, self.timeline = stack, traffic, timeline
        self._last_line = ""

    def observe(self) -> dict[str, Any]:
        md = self.stack.md(NAME)
        status = md.get("status") or {}
        weights = {row["revision"][:7]: row["weight"] for row in status.get("traffic") or []}
        evidence = _evidence(status)
        rates = self.traffic.error_rates()
        self.timeline.samples.append(
            {
                "t": time.monotonic() - self.timeline.started,
                "phase": status.get("phase"),
                "candidate": status.get("candidateRevision"),
                "stable": status.get("stableRevision"),
                "weight": status.get("canaryWeight", 0),
                "rates": rates,
                "estimate": evidence.get("estimate"),
                "lower": evidence.get("lower"),
                "upper": evidence.get("upper"),
            }
        )
        step = status.get("currentStepIndex")
        line = (
            f"[{time.monotonic() - self.timeline.started:5.0f}s] {status.get('phase', '?'):<12} "
            f"step {step if step is not None else '-'}  weights {weights}  "
            f"errors { ({r[:7]: f'{v:.1%}' for r, v in rates.items()}) }  "
            f"decision {evidence.get('verdict') or '-'}"
        )
        line += evidence_text(evidence)
        if line[9:] != self._last_line[9:]:
            print(line, flush=True)
        self._last_line = line
        return md

    def until(self, done: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        """Observe every second until ``done`` holds for the ModelDeployment; return it."""

        def reached() -> dict[str, Any] | None:
            md = self.observe()
            return md if done(md) else None

        found: dict[str, Any] = wait_until(reached, timeout, what, interval=1)
        return found

    def hold(self, seconds: float) -> dict[str, Any]:
        end = time.monotonic() + seconds
        md = self.observe()
        while time.monotonic() < end:
            time.sleep(1)
            md = self.observe()
        return md


def condition(md: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (md.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def phase(md: dict[str, Any]) -> str:
    return str((md.get("status") or {}).get("phase", ""))


def promoted_over(md: dict[str, Any], old: str) -> bool:
    status = md.get("status") or {}
    return status.get("stableRevision") not in (None, old) and status.get("candidateRevision") is None


def run(stack: Stack, workdir: Path, rate: float) -> Path:
    models = workdir / "models"
    models.mkdir(parents=True, exist_ok=True)
    # Every version fails on some inputs (a first feature beyond its range), as real models do on
    # rare inputs: v1, v2 and v4 on about 2% of requests, the bad v3 on about 10%.
    paths = {
        version: sample_models.onnx_classifier(models / f"{version}.onnx", "faulty", seed=seed, fail_above=limit)
        for version, seed, limit in (("v1", 0, 2.054), ("v2", 1, 2.054), ("v3", 2, 1.2816), ("v4", 3, 2.054))
    }
    timeline = Timeline()
    traffic = Traffic(stack.gateway_url, stack.api_key, MODEL, rate=rate)
    demo = Demo(stack, traffic, timeline)

    def roll(version: str) -> None:
        doc = deployment(version, paths[version], stack.prometheus_url)
        doc["metadata"]["namespace"] = stack.namespace
        stack.apply(doc)

    timeline.event("deploy model v1")
    roll("v1")
    md = demo.until(lambda m: condition(m, "Ready").get("status") == "True", 120, "v1 to be Ready")
    v1 = md["status"]["stableRevision"]
    stack.wait_served(MODEL)
    traffic.start()
    demo.hold(8)

    timeline.event("roll out a good v2 by canary with analysis")
    roll("v2")
    md = demo.until(
        lambda m: m["status"].get("stableRevision") not in (None, v1) and phase(m) == "Healthy",
        300,
        "v2 to be promoted",
    )
    timeline.event(f"v2 promoted: {md['status'].get('message', '')}")

    timeline.event("roll out a bad v3 (fails on about 10% of inputs; v1 and v2 on about 2%)")
    roll("v3")
    md = demo.until(
        lambda m: condition(m, "RolledBack").get("status") == "True" or phase(m) == "RolledBack",
        300,
        "v3 to be rolled back",
    )
    # The status message names the failed metric with its evidence.
    timeline.event(
        f"v3 rolled back automatically: {md['status'].get('message') or _evidence(md['status']).get('reason')}"
    )

    timeline.event(f"on-call: kubectl cutover rollback {NAME} --to-revision {v1}")
    env = {**os.environ, "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}", "KUBECONFIG": stack.kubeconfig}
    subprocess.run(
        ["kubectl", "cutover", "rollback", NAME, "-n", stack.namespace, "--to-revision", v1], env=env, check=True
    )
    md = demo.until(lambda m: m["status"].get("stableRevision") == v1, 120, "the rollback to v1")
    timeline.event(f"on-call rollback honoured: stable is {v1} again")

    timeline.event("roll out v4, and stop Prometheus halfway")
    roll("v4")
    demo.until(lambda m: (m["status"].get("canaryWeight") or 0) > 0, 120, "v4 to take traffic")
    demo.hold(6)
    stack.stop_prometheus()
    timeline.event("Prometheus stopped: weights must freeze, nothing promoted or rolled back")
    frozen = demo.hold(40)
    timeline.event(
        f"after 40 s without Prometheus: phase {phase(frozen)}, weight {frozen['status'].get('canaryWeight')}, "
        f"AnalysisAvailable={condition(frozen, 'AnalysisAvailable').get('status')}"
    )
    stack.start_prometheus()
    timeline.event("Prometheus is back")
    md = demo.until(
        lambda m: m["status"].get("stableRevision") not in (None, v1) and phase(m) == "Healthy",
        300,
        "v4 to be promoted",
    )
    timeline.event(f"v4 promoted after the outage: {md['status'].get('message', '')}")
    demo.hold(3)
    traffic.stop()
    answered = sum(traffic.answered.values())
    print(
        f"\ntraffic: {traffic.sent} requests sent, {answered} answered ({dict(traffic.answered)}), "
        f"{traffic.lost} lost on the way"
    )
    return draw(timeline, workdir / "timeline.png")


def draw(timeline: Timeline, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = timeline.samples
    t = [s["t"] for s in samples]
    fig, (weights, errors, bounds) = plt.subplots(3, 1, figsize=(13, 11), sharex=True)
    weights.step(t, [s["weight"] for s in samples], where="post", color="tab:blue")
    weights.set_ylabel("candidate weight (%)")
    weights.set_ylim(-5, 105)
    for role, color in (("candidate", "tab:red"), ("stable", "tab:green")):
        values = [100 * s["rates"].get(s[role] or "", float("nan")) for s in samples]
        errors.plot(t, values, color=color, label=f"{role} (10 s window, client side)")
    errors.set_ylabel("error rate (%)")
    errors.legend(loc="upper left")
    est = [s["estimate"] if s["estimate"] is not None else float("nan") for s in samples]
    low = [s["lower"] if s["lower"] is not None else float("nan") for s in samples]
    high = [s["upper"] if s["upper"] is not None else float("nan") for s in samples]
    bounds.fill_between(t, low, high, color="tab:purple", alpha=0.25, step="post", label="confidence sequence")
    bounds.step(t, est, where="post", color="tab:purple", label="error-rate ratio candidate/baseline")
    bounds.axhline(1.0, color="grey", linewidth=0.8)
    bounds.set_yscale("log")
    bounds.set_ylabel("ratio (log)")
    bounds.set_xlabel("seconds since start")
    bounds.legend(loc="upper left")
    for axis in (weights, errors, bounds):
        for at, _ in timeline.events:
            axis.axvline(at, color="black", linewidth=0.6, linestyle=":")
    for number, (at, _) in enumerate(timeline.events, 1):
        weights.annotate(str(number), (at, 102), fontsize=8, ha="center", va="bottom", annotation_clip=False)
    legend = "\n".join(f"{n}. {text[:150]}" for n, (_, text) in enumerate(timeline.events, 1))
    fig.suptitle("cutover demo: canary v2 promoted, v3 rolled back, on-call rollback, Prometheus outage")
    fig.text(0.01, 0.005, legend, fontsize=7, va="bottom", family="monospace")
    fig.tight_layout(rect=(0, 0.02 + 0.016 * len(timeline.events), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _terminate(*_: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / ".demo")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second through the gateway")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    signal.signal(signal.SIGTERM, _terminate)  # tear down on SIGTERM as on Ctrl-C
    stack = Stack(args.workdir)
    try:
        print("starting the control plane, Prometheus, the operator, the gateway and the local runner ...", flush=True)
        stack.start()
        picture = run(stack, args.workdir, args.rate)
        print(f"\ntimeline written to {picture}")
    except KeyboardInterrupt:
        print("\ninterrupted; tearing down")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the teardown short
            signal.signal(sig, signal.SIG_IGN)
        stack.close()
        print(f"everything stopped; logs are in {args.workdir}")


if __name__ == "__main__":
    main()
