"""What the gateway adds: the same `cutover serve` backend called directly, through `cutover gateway`
(with a real API key, rate limiting and the traffic table from a real control plane), through a
second gateway whose ModelDeployment sets spec.feedback (it parses every answer and keeps its id,
revision and class for ground-truth feedback: serving/gateway/feedback.py), and through an nginx
reverse proxy (Debian's package, upstream keepalive), by the same wrk load in one run. Each answer
gets an id of its own from serving, so the feedback store fills to its capacity and then drops its
oldest answer for each new one, as it does under steady traffic.

    .venv/bin/python benchmarks/gateway.py [--concurrency 1,8,32] [--duration 10]

wrk runs on CPU 0; the backend and the proxy in front of it share CPU 1, so each proxy pays for the
core it takes from the backend, as it would in a pod (each process's Cpus_allowed_list is read from /proc
and printed; one off its CPU aborts the run). Target: at most 0.3 ms added at p50.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# benchmarks/serving.py, from this script's own folder (first on sys.path when run as a script).
# The servers, wrk and pinning as the serving benchmark does them.
import serving as bench

REPO = Path(__file__).resolve().parent.parent

KEY = "cut_benchmark-key"
NGINX_PACKAGE = "nginx"
TARGET_ADDED_MS = 0.3
WRK_SCRIPT = bench.WRK_SCRIPT.replace(
    'wrk.headers["Content-Type"] = "application/json"',
    'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer ' + KEY + '"',
)
NGINX_CONF = """
worker_processes 1;
error_log {root}/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def ensure_nginx() -> str:
    found = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    if not found:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", NGINX_PACKAGE], check=True)
        found = "/usr/sbin/nginx"
    return str(found)


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            bench.pinned(bench.SERVER_CPU, command), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> None:
    subprocess.run(
        [str(REPO / ".venv/bin/kubectl"), "--kubeconfig", kubeconfig, *args], input=stdin, text=True, check=True,
        capture_output=True,
    )  # fmt: skip


def store_cost(answers: int = 50_000) -> str:
    """What keeping one answer costs the gateway's event loop, in process and side by side: the
    feedback store's keep() on a one-row answer of the sample classifier, against json.loads of
    the same answer (the least any reading of it costs), each over ``answers`` fresh answers."""
    from cutover.serving.gateway.feedback import Feedback, FeedbackSettings
    from cutover.serving.gateway.metrics import GatewayMetrics
    from cutover.serving.gateway.proxy import Answer
    from cutover.serving.gateway.routing import Backend, Route

    backend = Backend("r1", "stable", "http://127.0.0.1:1", 100)
    route = Route("bench", "clf", bench.MODEL, (backend,), feedback=FeedbackSettings())
    output = {"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [0.0862, 0.8276, 0.0862]}
    bodies = [
        json.dumps({"id": f"{n:036d}", "model_name": bench.MODEL, "model_version": "1", "outputs": [output]}).encode()
        for n in range(answers)
    ]
    store = Feedback(GatewayMetrics())
    started = time.perf_counter()
    for body in bodies:
        json.loads(body)
    parse = (time.perf_counter() - started) / answers
    started = time.perf_counter()
    for body in bodies:
        store.keep(route, Answer(200, body, {}, backend))
    keep = (time.perf_counter() - started) / answers
    return f"keep() {keep * 1e6:.1f} us an answer, json.loads {parse * 1e6:.1f} us: {keep / parse:.1f}x"


def deploy(kubeconfig: str, namespace: str, spec: dict[str, object]) -> None:
    """The benchmark's ModelDeployment in ``namespace`` (with ``spec`` added), its API key and its
    traffic table: all of it to the one backend, Service ``clf-r1``."""
    from cutover.serving.gateway.keys import secret_manifest

    kubectl(kubeconfig, "create", "namespace", namespace)
    md = {
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "clf", "namespace": namespace},
        "spec": {
            "model": {"name": bench.MODEL, "version": "1", "format": "onnx", "storageUri": "file:///m.onnx"},
            "strategy": {"type": "canary", "canary": {"steps": [{"setWeight": 20}]}},
            **spec,
        },
    }
    kubectl(kubeconfig, "apply", "-f", "-", stdin=json.dumps(md))
    kubectl(kubeconfig, "apply", "-f", "-", stdin=json.dumps(secret_manifest("bench-key", namespace, KEY, "admin")))
    traffic = {"status": {"traffic": [{"revision": "r1", "role": "stable", "weight": 100, "service": "clf-r1"}]}}
    patch = ["patch", "md", "clf", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(traffic)]
    kubectl(kubeconfig, *patch)


def start_gateway(kubeconfig: str, namespace: str, port: int, backends: Path, log: Path) -> subprocess.Popen[bytes]:
    """`cutover gateway` for ``namespace`` on ``port``, once it routes the benchmark's model."""
    gateway = [
        str(REPO / ".venv/bin/cutover"), "gateway", "-n", namespace, "--kubeconfig", kubeconfig,
        "--host", "127.0.0.1", "--port", str(port), "--backends", str(backends),
    ]  # fmt: skip
    process = start(gateway, log)
    bench.wait_ready(f"http://127.0.0.1:{port}", "cutover gateway", process, log)
    deadline = time.monotonic() + 10
    while bench.http("POST", f"http://127.0.0.1:{port}{bench.INFER_PATH}", bench.BODY)[0] != 401:
        if time.monotonic() > deadline:  # the route is there once unauthenticated calls get 401, not 404
            raise SystemExit("the gateway never learned the route")
        time.sleep(0.1)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    bench.ensure_wrk()
    nginx = ensure_nginx()
    from cutover.serving import sample_models

    work = Path(tempfile.mkdtemp(prefix="cutover-bench-gateway-"))
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT.replace("{{BODY}}", bench.BODY))
    model = sample_models.onnx_classifier(work / "good.onnx", "good")
    kubeconfig = (
        subprocess.run([str(REPO / "hack/cluster"), "up", "bench-gateway"], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        ports = {name: bench.free_port() for name in ("backend", "gateway", "feedback", "nginx")}
        serve = [
            str(REPO / ".venv/bin/cutover"), "serve", "--name", bench.MODEL, "--version", "1", "--format", "onnx",
            "--model-uri", str(model), "--host", "127.0.0.1", "--port", str(ports["backend"]), "--threads", "1",
        ]  # fmt: skip
        processes.append(backend := start(serve, work / "backend.log"))
        bench.wait_ready(f"http://127.0.0.1:{ports['backend']}", "cutover serve", backend, work / "backend.log")

        backend_url = f"http://127.0.0.1:{ports['backend']}"
        backends = work / "backends.json"
        backends.write_text(json.dumps({"bench/clf-r1": backend_url, "bench-feedback/clf-r1": backend_url}))
        deploy(kubeconfig, "bench", {})
        deploy(kubeconfig, "bench-feedback", {"feedback": {}})
        processes.append(gw := start_gateway(kubeconfig, "bench", ports["gateway"], backends, work / "gateway.log"))
        log = work / "gateway-feedback.log"
        processes.append(fb := start_gateway(kubeconfig, "bench-feedback", ports["feedback"], backends, log))

        (work / "nginx").mkdir()
        (work / "nginx.conf").write_text(
            NGINX_CONF.format(root=work / "nginx", backend=ports["backend"], port=ports["nginx"])
        )
        processes.append(ngx := start([nginx, "-c", str(work / "nginx.conf"), "-g", "daemon off;"], work / "nginx.log"))
        time.sleep(0.5)
        if ngx.poll() is not None:
            raise SystemExit(f"nginx exited; see {work / 'nginx.log'} and {work / 'nginx/error.log'}")

        targets = {
            "direct": f"http://127.0.0.1:{ports['backend']}",
            "cutover gateway": f"http://127.0.0.1:{ports['gateway']}",
            "gateway+feedback": f"http://127.0.0.1:{ports['feedback']}",
            "nginx": f"http://127.0.0.1:{ports['nginx']}",
        }
        print(
            f"wrk -t1 on CPU {bench.WRK_CPU}; backend and proxy on CPU {bench.SERVER_CPU}; {args.duration:g} s a point"
        )
        print(f"  feedback store, in process: {store_cost()}")
        for name, process in (
            ("cutover serve", backend),
            ("cutover gateway", gw),
            ("gateway+feedback", fb),
            ("nginx", ngx),
        ):
            group = [pid for pid, _fields in bench.group_stats(process.pid)]  # nginx: master and worker
            print("  " + bench.check_cpu(name, group, bench.SERVER_CPU))
        results: dict[str, dict[int, object]] = {name: {} for name in targets}
        for connections in concurrencies:
            for name, url in targets.items():
                bench.wrk(script, url, connections, args.warmup)
                run = bench.wrk(script, url, connections, args.duration)
                if run.errors:
                    raise SystemExit(f"{name}: {run.errors} errors at c={connections}")
                results[name][connections] = run
                print(
                    f"  {name:<16} c={connections:<3} {run.throughput:8.0f} req/s  p50 {run.p50_us / 1000:6.3f} ms  "
                    f"p99 {run.p99_us / 1000:6.3f} ms",
                    flush=True,
                )
        print("\nadded latency over calling cutover serve directly (p50, ms) and throughput ratio:")
        for connections in concurrencies:
            direct = results["direct"][connections]
            line = [f"  c={connections:<3}"]
            for name in ("cutover gateway", "gateway+feedback", "nginx"):
                run = results[name][connections]
                added = (run.p50_us - direct.p50_us) / 1000  # type: ignore[attr-defined]
                ratio = run.throughput / direct.throughput  # type: ignore[attr-defined]
                line.append(f"{name}: +{added:.3f} ms p50, {ratio:.2f}x throughput")
            print("   ".join(line))
        c1 = concurrencies[0]
        added = (results["cutover gateway"][c1].p50_us - results["direct"][c1].p50_us) / 1000  # type: ignore[attr-defined]
        verdict = "meets" if added <= TARGET_ADDED_MS else "misses"
        print(f"\ngateway adds {added:.3f} ms at p50 (c={c1}): {verdict} the {TARGET_ADDED_MS} ms target")
        print("keeping answers for feedback, over the gateway without it (p50, ms; throughput ratio):")
        for connections in concurrencies:
            plain, kept = results["cutover gateway"][connections], results["gateway+feedback"][connections]
            extra = (kept.p50_us - plain.p50_us) / 1000  # type: ignore[attr-defined]
            ratio = kept.throughput / plain.throughput  # type: ignore[attr-defined]
            print(f"  c={connections:<3} +{extra:.3f} ms p50, {ratio:.2f}x throughput")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run([str(REPO / "hack/cluster"), "down", "bench-gateway"], capture_output=True)


if __name__ == "__main__":
    main()
