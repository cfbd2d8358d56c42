"""500 ModelDeployments applied at once: time to steady state and the operator's peak memory.

Starts the local control plane (hack/cluster, its own cluster name), runs the real
`cutover operator` process watching one namespace, applies N ModelDeployments in one
`kubectl apply`, and waits until every one reports phase Healthy (its Deployment and Service
applied, its pods scheduled and ready, status written). Prints the time and the operator's
peak resident memory (VmHWM) beside the targets: 60 s and 200 MB on 2 cores.

    python benchmarks/operator_scale.py [--count 500]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER = "bench"
NAMESPACE = "scale"


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, *args], input=input, capture_output=True, text=True, check=True
    )
    return done.stdout


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def manifests(count: int, shard: int = 0, shards: int = 1) -> str:
    base = yaml.safe_load((REPO / "examples" / "modeldeployment-canary.yaml").read_text())
    docs = []
    for i in range(shard, count, shards):
        doc = copy.deepcopy(base)
        doc["metadata"] = {"name": f"model-{i:04d}", "namespace": NAMESPACE, "labels": {"team": f"t{i % 20}"}}
        doc["spec"]["model"]["name"] = f"model-{i:04d}"
        doc["spec"]["model"]["storageUri"] = f"file:///models/model-{i:04d}.onnx"
        doc["spec"]["runtime"]["replicas"] = 1
        doc["spec"]["runtime"]["resources"] = {"requests": {"cpu": "50m", "memory": "128Mi"}}
        docs.append(doc)
    return yaml.safe_dump_all(docs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    os.environ["PATH"] = f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"
    subprocess.run([REPO / "hack" / "cluster", "down", CLUSTER], check=False)  # start from nothing
    up = subprocess.run([REPO / "hack" / "cluster", "up", CLUSTER], capture_output=True, text=True, check=True)
    kubeconfig = up.stdout.strip().splitlines()[-1]
    workdir = Path(tempfile.mkdtemp(prefix="cutover-scale-"))
    operator = None
    try:
        kubectl(kubeconfig, "create", "namespace", NAMESPACE)
        log = (workdir / "operator.log").open("w")
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cutover.operator.cli",
                "operator",
                "-n",
                NAMESPACE,
                "--metrics-port",
                "0",
                "--verdicts-from",
                str(workdir),
            ],
            env={**os.environ, "KUBECONFIG": kubeconfig},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        time.sleep(3)  # the operator is up and watching
        idle_rss = peak_rss_mb(operator.pid)
        started = time.monotonic()
        # Four clients at once, as a GitOps sync of a large repository would.
        appliers = [
            subprocess.Popen(
                ["kubectl", "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", "-"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(4)
        ]
        for shard, applier in enumerate(appliers):
            assert applier.stdin is not None
            applier.stdin.write(manifests(args.count, shard, len(appliers)))
            applier.stdin.close()
        for applier in appliers:
            applier.wait()
        applied = time.monotonic() - started
        healthy = 0
        while time.monotonic() - started < args.timeout:
            items = json.loads(kubectl(kubeconfig, "get", "md", "-n", NAMESPACE, "-o", "json"))["items"]
            healthy = sum(1 for i in items if (i.get("status") or {}).get("phase") == "Healthy")
            if healthy == args.count:
                break
            print(f"  {time.monotonic() - started:5.0f} s: {healthy} Healthy", file=sys.stderr, flush=True)
            time.sleep(1)
        elapsed = time.monotonic() - started
        rss = peak_rss_mb(operator.pid)
        print(f"operator scale: {args.count} ModelDeployments applied at once on {os.cpu_count()} cores\n")
        print(f"{'measure':<44} {'value':>10} {'target':>10} {'ratio':>7}")
        print(f"{'kubectl apply of all objects (s)':<44} {applied:>10.1f} {'-':>10} {'-':>7}")
        print(f"{'all Healthy, from the first apply (s)':<44} {elapsed:>10.1f} {60:>10} {elapsed / 60:>7.2f}")
        print(f"{'all Healthy, after the last apply (s)':<44} {elapsed - applied:>10.1f} {'-':>10} {'-':>7}")
        print(f"{'Healthy at the end':<44} {healthy:>10} {args.count:>10} {healthy / args.count:>7.2f}")
        print(f"{'operator peak RSS (MB)':<44} {rss:>10.0f} {200:>10} {rss / 200:>7.2f}")
        print(f"{'operator RSS before the burst (MB)':<44} {idle_rss:>10.0f} {'-':>10} {'-':>7}")
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        subprocess.run([REPO / "hack" / "cluster", "down", CLUSTER], check=False)


if __name__ == "__main__":
    main()
