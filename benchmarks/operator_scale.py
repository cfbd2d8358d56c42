"""The operator's cost as the number of ModelDeployments grows: time to steady state, peak
memory and CPU at rest for each count, then what deleting half of the largest count gives back.

For each count (250, 500, 1,000 and 2,000 by default) it starts the local control plane afresh
(hack/cluster, its own cluster name), adds simulated nodes enough for every pod (250 pods per
CPU node; 8 GPUs per GPU node), runs the real `cutover operator` process watching one
namespace, applies the ModelDeployments at once with four `kubectl apply` clients (a third of
them ask for a GPU, so their passes run the GPU preflight) and waits until every one reports
phase Healthy (Deployment and Service applied, pod scheduled and ready, status written). Then
it measures the operator's CPU time over ``--rest`` seconds at rest.

After the largest count it deletes ``--delete`` of them and waits until their per-object state
is gone (their series leave the operator's /metrics), prints the resident memory then, applies
the same objects again and prints the peak once they are Healthy: memory that was freed is
reused, so the peak stays where it was; a leak would raise it by what the first round kept.

The operator runs as its own ServiceAccount, and the API server audits that account's requests
(hack/cluster with CUTOVER_AUDIT_POLICY): the requests it made per ModelDeployment until all were
Healthy, by verb and resource, and its requests per minute at rest are figures the machine's load
does not change.

Beside each count, the control plane alone (``--alone``, on by default): a fresh cluster is given
the same children the operator would make (each ModelDeployment's Deployment and Services, from
cutover's own builders) by the same four `kubectl apply` clients, and timed until every
Deployment has its pod ready. That is the least time any operator could take on this machine;
the operator's time to Healthy is printed against it.

Each figure is printed with the machine's load average (this machine is shared: a load above
its core count means the figures are slower than the operator alone would be).

Targets: 2,000 steady within 120 s and under 300 MB on 2 cores, CPU at rest growing no faster
than the count.

    python benchmarks/operator_scale.py [--counts 250,500,1000,2000] [--delete 1000] [--rest 60]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import serving as bench

REPO = Path(__file__).resolve().parent.parent
CLUSTER = "bench"
NAMESPACE = "scale"
GPU_PRODUCT = "NVIDIA-A100-SXM4-80GB"
CPU_PODS_PER_NODE = 250
GPUS_PER_NODE = 8
TARGET_SECONDS, TARGET_MB = 120, 300
PHASE = "cutover_rollout_phase"
"""The operator's per-ModelDeployment series counted to see its per-object state go."""
ACCOUNT = "cutover"
"""The operator's ServiceAccount in NAMESPACE: its requests, and only its, are audited."""
AUDIT_POLICY = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
  users: ["system:serviceaccount:{NAMESPACE}:{ACCOUNT}"]
- level: None
"""


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, *args], input=input, capture_output=True, text=True, check=True
    )
    return done.stdout


def memory_mb(pid: int, field: str) -> float:
    """``VmHWM`` (peak resident) or ``VmRSS`` (resident now) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def operator_kubeconfig(kubeconfig: str, path: Path) -> str:
    """A kubeconfig at ``path`` for the ServiceAccount ACCOUNT (bound to cluster-admin): the
    cluster's server and CA with a token of that account."""
    kubectl(kubeconfig, "create", "serviceaccount", ACCOUNT, "-n", NAMESPACE)
    subject = f"--serviceaccount={NAMESPACE}:{ACCOUNT}"
    kubectl(kubeconfig, "create", "clusterrolebinding", "cutover-bench", "--clusterrole=cluster-admin", subject)
    token = kubectl(kubeconfig, "create", "token", ACCOUNT, "-n", NAMESPACE, "--duration=24h").strip()
    config = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = config["clusters"][0]
    config["users"] = [{"name": ACCOUNT, "user": {"token": token}}]
    config["contexts"] = [{"name": ACCOUNT, "context": {"cluster": cluster["name"], "user": ACCOUNT}}]
    config["current-context"] = ACCOUNT
    path.write_text(yaml.safe_dump(config))
    return str(path)


class Audit:
    """The operator's requests, read from the API server's audit log as it grows."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = 0

    def since_last(self) -> Counter[str]:
        """The requests logged since the last call, by "verb resource[/subresource]"."""
        with self.log.open("rb") as f:
            f.seek(self.offset)
            lines = f.readlines()
        complete = lines if not lines or lines[-1].endswith(b"\n") else lines[:-1]
        self.offset += sum(len(line) for line in complete)
        out: Counter[str] = Counter()
        for line in complete:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            resource = "/".join(p for p in (ref.get("resource"), ref.get("subresource")) if p) or event["requestURI"]
            out[f"{event['verb']} {resource}"] += 1
        return out


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def gpu_backed(i: int) -> bool:
    return i % 3 == 2


def manifests(names: range, shard: int = 0, shards: int = 1) -> str:
    """ModelDeployments model-NNNN for ``names`` (every ``shards``-th from ``shard``): one pod
    each, every third asking for one A100."""
    base = yaml.safe_load((REPO / "examples" / "modeldeployment-canary.yaml").read_text())
    docs = []
    for i in names[shard::shards]:
        doc = copy.deepcopy(base)
        doc["metadata"] = {"name": f"model-{i:04d}", "namespace": NAMESPACE, "labels": {"team": f"t{i % 20}"}}
        doc["spec"]["model"]["name"] = f"model-{i:04d}"
        doc["spec"]["model"]["storageUri"] = f"file:///models/model-{i:04d}.onnx"
        runtime = doc["spec"]["runtime"]
        runtime["replicas"] = 1
        runtime["resources"] = {"requests": {"cpu": "50m", "memory": "128Mi"}}
        if gpu_backed(i):
            runtime["gpu"] = {"count": 1, "product": GPU_PRODUCT}
        docs.append(doc)
    return yaml.safe_dump_all(docs)


def nodes(count: int) -> str:
    """Simulated nodes beside hack/nodes.yaml's, so that every pod of ``count`` ModelDeployments
    finds a place: CPU nodes of 250 pods, A100 nodes of 8 GPUs (hack/nodes.yaml's cpu-0 and
    gpu-a100-0 with more GPUs)."""
    templates = {d["metadata"]["name"]: d for d in yaml.safe_load_all((REPO / "hack" / "nodes.yaml").read_text())}
    gpu_pods = sum(1 for i in range(count) if gpu_backed(i))
    out = []
    for template, how_many, prefix in (
        (templates["cpu-0"], -(-(count - gpu_pods) // CPU_PODS_PER_NODE), "bench-cpu"),
        (templates["gpu-a100-0"], -(-gpu_pods // GPUS_PER_NODE), "bench-gpu"),
    ):
        for n in range(how_many):
            node: dict[str, Any] = copy.deepcopy(template)
            node["metadata"]["name"] = node["metadata"]["labels"]["kubernetes.io/hostname"] = f"{prefix}-{n}"
            if prefix == "bench-gpu":
                node["metadata"]["labels"]["nvidia.com/gpu.count"] = str(GPUS_PER_NODE)
                for resources in (node["status"]["capacity"], node["status"]["allocatable"]):
                    resources["nvidia.com/gpu"] = str(GPUS_PER_NODE)
            out.append(node)
    return yaml.safe_dump_all(out)


class Table:
    """How many objects of ``resource`` in the namespace have rows for which ``counted(columns)``
    holds, read from the API server's table (the printer columns, computed server-side: a few
    bytes a row, where a full list or a custom-columns list sends every object whole, tens of MB
    at 2,000, on the cores the run measures), at most every :data:`TABLE_SECONDS`. A ``kubectl
    get --watch`` (tried first) went quiet under load and missed the last phases: a run waited
    600 s on 2,000 Healthy it had."""

    def __init__(self, kubeconfig: str, resource: str, counted: Any) -> None:
        self.command = ["kubectl", "--kubeconfig", kubeconfig, "get", resource, "-n", NAMESPACE, "--no-headers"]
        self.counted = counted
        self.read_at = -TABLE_SECONDS
        self.last = 0

    def count(self) -> int:
        """The rows counted (as of the last read)."""
        if time.monotonic() - self.read_at >= TABLE_SECONDS:
            rows = subprocess.run(self.command, capture_output=True, text=True).stdout.splitlines()
            self.last = sum(1 for row in rows if self.counted(row.split()))
            self.read_at = time.monotonic()
        return self.last


def healthy_table(kubeconfig: str) -> Table:
    """ModelDeployments that report phase Healthy."""
    return Table(kubeconfig, "md", lambda columns: "Healthy" in columns)


def scrape(port: int) -> list[str]:
    """The lines of the operator's /metrics."""
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode().splitlines()


def series(port: int, name: str) -> int:
    """How many series of metric ``name`` the operator exports now."""
    return sum(1 for line in scrape(port) if line.startswith(name + "{"))


PASSES = 'cutover_operator_reconciles_total{kind="ModelDeployment"}'
PASS_SECONDS = 'cutover_operator_reconcile_duration_seconds_sum{kind="ModelDeployment"}'


def passes(port: int) -> tuple[float, float]:
    """The operator's ModelDeployment passes so far, and their seconds in all."""
    values = dict(line.rsplit(" ", 1) for line in scrape(port) if line.startswith((PASSES, PASS_SECONDS)))
    return float(values.get(PASSES, 0)), float(values.get(PASS_SECONDS, 0))


POLL_SECONDS = 1.0
"""Between two looks at a condition."""
TABLE_SECONDS = 3.0
"""Between two reads of the ModelDeployments' table."""


def wait(what: str, done: Any, timeout: float, started: float) -> float:
    """Poll ``done()`` every :data:`POLL_SECONDS` until it is true; the seconds since ``started``
    (late by up to the poll interval)."""
    while not done():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"{what}: not reached within {timeout:.0f} s ({load()})")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


@dataclass
class Figures:
    count: int
    applied: float
    steady: float
    idle_mb: float
    """The operator's resident memory before the first apply."""
    peak_mb: float
    burst_cpu: float
    """The operator's CPU seconds from the first apply to all Healthy."""
    rest_cpu_per_min: float
    load: str
    requests: Counter[str]
    """The operator's API requests from the first apply until all were Healthy."""
    passes: float
    """Passes of ModelDeployments from the first apply until all were Healthy."""
    pass_seconds: float
    """Their mean wall time (API requests included), in seconds."""
    rest_requests_per_min: float
    alone: float | None = None
    """Seconds the control plane alone took for the same children (``--alone``)."""


def children_alone(names: range, shard: int = 0, shards: int = 1) -> str:
    """What the operator applies for each ModelDeployment of :func:`manifests` (its stable
    revision's Deployment and Service, and the fallback chain's stable Service), built by
    cutover's own builders, less the owner references: their owner does not exist here, and the
    garbage collector would delete them. As a JSON List: a revision hash such as ``276086e245``
    is a string to PyYAML's dumper and a number to kubectl's YAML reader."""
    from cutover.api.v1alpha1 import ModelDeployment
    from cutover.operator import builders
    from cutover.operator.rollout import Source, Workload
    from cutover.operator.rollout.types import revision_of

    docs = []
    for doc in yaml.safe_load_all(manifests(names, shard, shards)):
        md = ModelDeployment.model_validate(doc)
        wire = md.spec.wire()
        stable = Workload(
            revision_of(wire["model"], wire["runtime"]), "stable", 1, Source(wire["model"], wire["runtime"])
        )
        for child in builders.children(md, (stable,), []):
            child["metadata"].pop("ownerReferences", None)
            docs.append(child)
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


def apply_all(kubeconfig: str, names: range, render: Any = manifests) -> None:
    """Four clients at once, as a GitOps sync of a large repository would, each applying
    ``render(names, shard, 4)``."""
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
        applier.stdin.write(render(names, shard, len(appliers)))
        applier.stdin.close()
    for applier in appliers:
        if applier.wait() != 0:
            raise SystemExit("kubectl apply failed")


def cluster_up(count: int, workdir: Path) -> str:
    """A fresh control plane (auditing by ``workdir``'s policy) with nodes for ``count``
    ModelDeployments' pods; its kubeconfig."""
    subprocess.run([REPO / "hack" / "cluster", "down", CLUSTER], check=False)  # start from nothing
    up = subprocess.run(
        [REPO / "hack" / "cluster", "up", CLUSTER],
        env={**os.environ, "CUTOVER_AUDIT_POLICY": str(workdir / "audit.yaml")},
        stdout=subprocess.PIPE,  # its errors go to ours
        text=True,
        check=True,
    )
    kubeconfig = up.stdout.strip().splitlines()[-1]
    kubectl(kubeconfig, "apply", "--server-side", "-f", "-", input=nodes(count))
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "--timeout=120s", "node", "--all")
    return kubeconfig


def alone(count: int, args: argparse.Namespace) -> float:
    """Seconds from the first apply of ``count`` ModelDeployments' children (no operator) until
    every Deployment has its pod ready: what the control plane itself needs."""
    workdir = Path(tempfile.mkdtemp(prefix="cutover-scale-alone-"))
    (workdir / "audit.yaml").write_text(AUDIT_POLICY)
    kubeconfig = cluster_up(count, workdir)
    try:
        kubectl(kubeconfig, "create", "namespace", NAMESPACE)
        names = range(count)
        rendered = {shard: children_alone(names, shard, 4) for shard in range(4)}  # before the clock starts
        ready = Table(kubeconfig, "deployments", lambda row: row[1] == "1/1")
        started = time.monotonic()
        apply_all(kubeconfig, names, lambda _names, shard, _shards: rendered[shard])
        took = wait(f"{count} Deployments ready", lambda: ready.count() == count, args.timeout, started)
        print(f"  {count}: the control plane alone, every pod ready after {took:.1f} s ({load()})", file=sys.stderr)
        return took
    finally:
        subprocess.run([REPO / "hack" / "cluster", "down", CLUSTER], check=False)


def run(count: int, args: argparse.Namespace, last: bool) -> Figures:
    workdir = Path(tempfile.mkdtemp(prefix="cutover-scale-"))
    (workdir / "audit.yaml").write_text(AUDIT_POLICY)
    kubeconfig = cluster_up(count, workdir)
    port = bench.free_port()
    operator = None
    audit = Audit(Path(kubeconfig).parent / "logs" / "audit.log")
    try:
        kubectl(kubeconfig, "create", "namespace", NAMESPACE)
        phases = healthy_table(kubeconfig)
        log = (workdir / "operator.log").open("w")
        flags = ["--metrics-port", str(port), "--verdicts-from", str(workdir)]
        operator = subprocess.Popen(
            [sys.executable, "-m", "cutover.operator.cli", "operator", "-n", NAMESPACE, *flags],
            env={**os.environ, "KUBECONFIG": operator_kubeconfig(kubeconfig, workdir / "operator.kubeconfig")},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        pid = operator.pid
        wait("operator up", lambda: _answers(port), 60, time.monotonic())
        names = range(count)
        idle_cpu, idle_mb = bench.cpu_seconds(pid), memory_mb(pid, "VmRSS")
        audit.since_last()  # the operator's start: its watches
        passes_before, seconds_before = passes(port)
        started = time.monotonic()
        apply_all(kubeconfig, names)
        applied = time.monotonic() - started
        steady = wait(f"{count} Healthy", lambda: phases.count() == count, args.timeout, started)
        figures_load = load()
        peak = memory_mb(pid, "VmHWM")
        burst_cpu = bench.cpu_seconds(pid) - idle_cpu
        requests = audit.since_last()
        passes_now, seconds_now = passes(port)
        burst_passes = passes_now - passes_before
        pass_seconds = (seconds_now - seconds_before) / max(burst_passes, 1)
        time.sleep(10)  # the burst's last status writes and events
        cpu = bench.cpu_seconds(pid)
        audit.since_last()
        time.sleep(args.rest)
        per_min = (bench.cpu_seconds(pid) - cpu) * 60 / args.rest
        rest_requests = sum(audit.since_last().values()) * 60 / args.rest
        figures = Figures(
            count,
            applied,
            steady,
            idle_mb,
            peak,
            burst_cpu,
            per_min,
            figures_load,
            requests,
            burst_passes,
            pass_seconds,
            rest_requests,
        )
        print(
            f"  {count}: Healthy after {steady:.1f} s, peak {peak:.0f} MB, {per_min:.2f} CPU s/min at rest ({load()})",
            file=sys.stderr,
            flush=True,
        )
        if last and args.delete:
            churn(kubeconfig, phases, pid, port, count, args)
        return figures
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        shutil.copy(audit.log, workdir)
        print(f"  the operator's log and its requests' audit log: {workdir}", file=sys.stderr)
        subprocess.run([REPO / "hack" / "cluster", "down", CLUSTER], check=False)


def _answers(port: int) -> bool:
    try:
        series(port, "cutover_operator_leader")
    except OSError:
        return False
    return True


def churn(kubeconfig: str, phases: Table, pid: int, port: int, count: int, args: argparse.Namespace) -> None:
    """Delete ``args.delete`` of the ``count`` ModelDeployments, wait until their series are
    gone, then create them again; print the memory at each point."""
    gone = range(count - args.delete, count)
    before_rss, before_peak, before_series = memory_mb(pid, "VmRSS"), memory_mb(pid, "VmHWM"), series(port, PHASE)
    before_load = load()
    started = time.monotonic()
    kubectl(kubeconfig, "delete", "md", "-n", NAMESPACE, "--wait=false", *(f"model-{i:04d}" for i in gone))
    kept = before_series * (count - args.delete) // count  # each ModelDeployment exports one per phase
    freed = wait("per-object state freed", lambda: series(port, PHASE) <= kept, args.timeout, started)
    time.sleep(10)
    after_rss, after_series, after_load = memory_mb(pid, "VmRSS"), series(port, PHASE), load()
    started = time.monotonic()
    apply_all(kubeconfig, gone)
    again = wait(f"{args.delete} Healthy again", lambda: phases.count() == count, args.timeout, started)
    again_rss, again_peak, again_load = memory_mb(pid, "VmRSS"), memory_mb(pid, "VmHWM"), load()
    print(f"\nDeleting {args.delete} of {count} ModelDeployments, then creating them again\n")
    print(f"{'point':<46} {'RSS MB':>7} {'peak MB':>8} {PHASE + ' series':>36}  load (1, 5, 15 min)")
    rows = (
        ("before the delete", before_rss, f"{before_peak:.0f}", before_series, before_load),
        (f"{freed:.0f} s after the delete, state freed", after_rss, "", after_series, after_load),
        (f"created again, Healthy after {again:.0f} s", again_rss, f"{again_peak:.0f}", "", again_load),
    )
    for point, rss, peak, count_now, at in rows:
        print(f"{point:<46} {rss:>7.0f} {peak:>8} {count_now:>36}  {at}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="250,500,1000,2000", help="comma-separated (default 250,500,1000,2000)")
    parser.add_argument("--delete", type=int, default=1000, help="deleted after the largest count (0: none)")
    parser.add_argument("--rest", type=float, default=60, help="seconds of CPU measured at rest (default 60)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--alone",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the control plane alone with the same children, for each count (default: on)",
    )
    args = parser.parse_args()
    counts = sorted(int(c) for c in args.counts.split(","))
    args.delete = min(args.delete, counts[-1])
    os.environ["PATH"] = f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"
    results = []
    for count in counts:
        took = alone(count, args) if args.alone else None
        results.append(run(count, args, last=count == counts[-1]))
        results[-1].alone = took
    print(f"\noperator scale on {os.cpu_count()} cores, a third of the ModelDeployments on GPUs\n")
    header = (
        f"{'ModelDeployments':>16} {'applied s':>10} {'Healthy s':>10} {'idle MB':>8} {'peak MB':>8}"
        f" {'CPU s to Healthy':>17} {'CPU s/min at rest':>18}"
    )
    header += f" {'per 1,000':>10} {'passes per MD':>14} {'pass ms':>8} {'requests per MD':>16}"
    header += f" {'requests/min at rest per 1,000':>31}"
    print(f"{header}  load at Healthy (1, 5, 15 min)")
    for f in results:
        print(
            f"{f.count:>16} {f.applied:>10.1f} {f.steady:>10.1f} {f.idle_mb:>8.0f} {f.peak_mb:>8.0f}"
            f" {f.burst_cpu:>17.1f} {f.rest_cpu_per_min:>18.2f}"
            f" {f.rest_cpu_per_min * 1000 / f.count:>10.2f} {f.passes / f.count:>14.2f} {f.pass_seconds * 1000:>8.1f}"
            f" {sum(f.requests.values()) / f.count:>16.2f}"
            f" {f.rest_requests_per_min * 1000 / f.count:>31.1f}  {f.load}"
        )
    print("\nthe operator's API requests per ModelDeployment, from the first apply to all Healthy\n")
    print(f"{'verb resource':<40}" + "".join(f"{f.count:>8}" for f in results))
    kinds = sorted({k for f in results for k in f.requests}, key=lambda k: -results[-1].requests[k])
    shown = [k for k in kinds if any(f.requests[k] >= f.count / 100 for f in results)]
    rows = [(kind, [f.requests[kind] for f in results]) for kind in shown]
    rows.append(
        ("the rest (watches, lists, discovery)", [sum(f.requests[k] for k in kinds if k not in shown) for f in results])
    )
    for kind, counts in rows:
        print(f"{kind:<40}" + "".join(f"{n / f.count:>8.2f}" for n, f in zip(counts, results, strict=True)))
    if args.alone:
        print("\nthe operator against the control plane alone (the same children, applied by kubectl)\n")
        print(f"{'ModelDeployments':>16} {'alone s':>8} {'operator s':>11} {'ratio':>6}")
        for f in results:
            assert f.alone is not None
            print(f"{f.count:>16} {f.alone:>8.1f} {f.steady:>11.1f} {f.steady / f.alone:>6.2f}")
    top = results[-1]
    print(
        f"\ntargets at {top.count}: Healthy {top.steady:.1f} s of {TARGET_SECONDS} ({top.steady / TARGET_SECONDS:.2f}),"
        f" peak {top.peak_mb:.0f} MB of {TARGET_MB} ({top.peak_mb / TARGET_MB:.2f});"
        " CPU at rest per 1,000 ModelDeployments should not rise with the count"
    )


if __name__ == "__main__":
    main()
