"""The prediction cache's hit path beside its miss path and beside no cache, in one run.

Two `cutover serve` processes serve the same ONNX model (cutover.serving.sample_models), one with
``--prediction-cache-entries`` (``runtime.cache``), one without. wrk (one thread, keep-alive
connections) POSTs Open Inference Protocol JSON bodies of one row to /v2/models/classifier/infer:

* no cache   the uncached server, a new row in every request (wrk's request() writes a counter
             into three features)
* miss       the cached server, the same stream of new rows: every request digests its input,
             calls the model and stores the answer
* hit        the cached server, one fixed body: after the first request every answer is a hit
             (the cache holds ENTRIES answers, the API's default, so the miss runs fill it and evict)

for two models: ``small`` (the sample classifier, a few microseconds per call) and ``slow`` (the
same with SLOW_WORK chained [512, 512] MatMuls on every call, about a millisecond), at each
concurrency. The three paths run in interleaved rounds and each figure is the median over the
rounds, so a burst of load from elsewhere on the machine does not land on one path only. After
each run the server's own cache counters say which path was measured (the hit ratio of the run is
printed; a miss run must have none, a hit run hits from its second request on). wrk is pinned to
one CPU and the servers to another when two are available, as benchmarks/serving.py does;
onnxruntime uses one thread. Last, the key's own cost in process, for a row and for an image.

    .venv/bin/python benchmarks/cache.py [--concurrency 1,16] [--duration 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# benchmarks/serving.py, from this script's own folder (first on sys.path when run as a script).
# Pinning, ports and wrk's installation as the serving benchmark does them.
import serving as bench

CUTOVER = [sys.executable, "-m", "cutover.operator.cli"]
INFER = "/v2/models/classifier/infer"
SLOW_WORK = 100
ENTRIES = 10000
IN_PROCESS_REQUESTS = 5000
"""The API's default maxEntries: the miss runs fill the cache and then evict, as a busy server does."""

BODY = '{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[0.1,1.2,-1.5,0.5]}]}'
FIXED = f"""\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{BODY}]==]
"""
UNIQUE = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
function init(args)
  counter = tonumber(args[1])
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[%.2f,%.2f,%.2f,0.5]}]}',
    (counter % 1000) / 100, math.floor(counter / 1000) % 1000 / 100, math.floor(counter / 1000000) / 100)
  return wrk.format(nil, nil, nil, body)
end
"""
RESULT = """
function done(summary, latency, requests)
  io.write(string.format("BENCH_RESULT %d %d %d %.0f %.0f\\n", summary.requests, summary.duration,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


runs_started = 0


@dataclass(frozen=True)
class Run:
    throughput: float
    p50_ms: float
    p99_ms: float
    hit_ratio: float


def cpus(server: Server) -> str:
    """Where the server's threads may run (/proc); a server off SERVER_CPU aborts the run (bench.check_cpu)."""
    bench.check_cpu("cutover serve", [server.process.pid], bench.SERVER_CPU)
    return ",".join(sorted(bench.cpus_allowed(server.process.pid)))


class Server:
    """One `cutover serve` on a free port, pinned to SERVER_CPU."""

    def __init__(self, model: Path, port: int, log: Path, *flags: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        command = [*CUTOVER, "serve", "--name", "classifier", "--version", "1", "--format", "onnx"]
        command += ["--model-uri", str(model), "--host", "127.0.0.1", "--port", str(port), "--threads", "1", *flags]
        self.process = subprocess.Popen(
            bench.pinned(bench.SERVER_CPU, command), stdout=subprocess.DEVNULL, stderr=log.open("w")
        )
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"cutover serve did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as answer:
                return answer.status == 200
        except OSError:
            return False

    def counters(self) -> tuple[float, float]:
        """The cache's hits and misses so far (0, 0 without a cache)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as answer:
            text = answer.read().decode()

        def total(name: str) -> float:
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

        return total("cutover_serving_cache_hits_total"), total("cutover_serving_cache_misses_total")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def wrk(script: Path, server: Server, connections: int, seconds: int) -> Run:
    """One wrk run; the unique-body script starts its counter past every earlier run's."""
    global runs_started
    runs_started += 1
    before = server.counters()
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency", "-s", str(script)]
    command += [server.url + INFER, "--", str(runs_started * 1_000_000)]
    done = bench.run_load(command)  # on WRK_CPU, checked there
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = next(line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT "))
    requests, duration_us, errors, p50, p99 = (float(v) for v in result.split()[1:])
    if errors:
        raise SystemExit(f"wrk: {errors:.0f} errors in {requests:.0f} requests\n{done.stdout}")
    hits, misses = (after - start for after, start in zip(server.counters(), before, strict=True))
    ratio = hits / (hits + misses) if hits + misses else float("nan")
    return Run(requests / (duration_us / 1e6), p50 / 1000, p99 / 1000, ratio)


def median(runs: Sequence[Run]) -> Run:
    """Each figure's median over the rounds (the hit ratios must agree anyway)."""
    return Run(
        statistics.median(r.throughput for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        statistics.median(r.hit_ratio for r in runs),
    )


def in_process(model: Path, requests: int) -> dict[str, float]:
    """Median microseconds per request through the HTTP-free request path (serving/pipeline.py)
    of the model in this process (onnxruntime on one thread), for each path: the same kinds of
    bodies as the wrk runs, without HTTP, the network or another process in the way, the paths
    taking turns request by request so that the machine's load falls on all three alike."""
    import uvloop

    from cutover.serving import adapters
    from cutover.serving.cache import PredictionCache
    from cutover.serving.config import ServeConfig
    from cutover.serving.loading import LoadedModel
    from cutover.serving.metrics import ServingMetrics
    from cutover.serving.pipeline import Admission, Pipeline

    def row(i: int) -> bytes:
        data = [i % 1000 / 100, i // 1000 % 1000 / 100, i // 1000000 / 100, 0.5]
        return json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": data}]}).encode()

    async def measure() -> dict[str, float]:
        adapter = adapters.local("onnx", model, threads=1, device="cpu")
        await adapter.load()
        pipelines = {}
        for path, cached in (("no cache", False), ("miss", True), ("hit", True)):
            metrics = ServingMetrics("bench", "classifier", "bench", lambda: 0, caches_predictions=cached)
            cache = PredictionCache("bench", ENTRIES, 1 << 30, metrics=metrics.cache) if cached else None
            loaded = LoadedModel(adapter, list(adapter.inputs), list(adapter.outputs), cache=cache)
            pipelines[path] = Pipeline(ServeConfig("classifier", "1", "onnx"), loaded, metrics, Admission(8))
        times: dict[str, list[float]] = {path: [] for path in pipelines}
        order = list(pipelines)
        for i in range(requests):  # the paths take turns, request by request, in a rotating order
            for path in order[i % 3 :] + order[: i % 3]:
                body = row(0 if path == "hit" else i)

                async def read(body: bytes = body) -> bytes:
                    return body

                started = time.perf_counter()
                await pipelines[path].infer(read)
                times[path].append(time.perf_counter() - started)
        await adapter.close()
        return {path: statistics.median(taken) * 1e6 for path, taken in times.items()}

    return uvloop.run(measure())


def digest_microseconds(shape: tuple[int, ...]) -> float:
    """The median time of one cache key over an input of ``shape``, in microseconds."""
    import numpy as np

    from cutover.serving.cache import digest

    inputs = {"input": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    times = []
    for _ in range(200):
        started = time.perf_counter()
        digest("rev", inputs, {})
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,16", help="comma-separated wrk connections (default 1,16)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per run (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before each point")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three paths, interleaved (default 3)")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    from cutover.serving import sample_models

    work = Path(tempfile.mkdtemp(prefix="cutover-bench-cache-"))
    fixed, unique = work / "fixed.lua", work / "unique.lua"
    fixed.write_text(FIXED + RESULT)
    unique.write_text(UNIQUE + RESULT)
    print("prediction cache: hit path, miss path and no cache, side by side")
    print(f"  {bench.ensure_wrk()}")
    pinning = f"wrk on CPU {bench.WRK_CPU}, servers on CPU {bench.SERVER_CPU}"
    print(f"  {pinning}" if bench.pinning() else "  not pinned (fewer than 2 CPUs)")
    print(
        f"  {args.rounds} interleaved rounds of {args.duration} s runs per point (medians shown), after "
        f"{args.warmup} s of warm-up per path; body: one row of 4 FP32; load average {os.getloadavg()[0]:.1f}"
    )
    rows: list[tuple[str, int, dict[str, Run]]] = []
    for name, variant in (("small", "good"), ("slow", "slow")):
        model = sample_models.onnx_classifier(work / f"{name}.onnx", variant, slow_work=SLOW_WORK)
        cached = Server(
            model, bench.free_port(), work / f"{name}-cached.log", "--prediction-cache-entries", str(ENTRIES)
        )
        plain = Server(model, bench.free_port(), work / f"{name}-plain.log")
        paths = (("no cache", plain, unique), ("miss", cached, unique), ("hit", cached, fixed))
        try:
            print(f"  {name}: servers on CPUs {cpus(cached)} and {cpus(plain)} (Cpus_allowed_list of every thread)")
            for connections in concurrencies:
                for _path, server, script in paths:
                    wrk(script, server, connections, args.warmup)
                runs: dict[str, list[Run]] = {path: [] for path, _, _ in paths}
                for _round in range(args.rounds):
                    for path, server, script in paths:
                        runs[path].append(wrk(script, server, connections, args.duration))
                rows.append((name, connections, {path: median(done) for path, done in runs.items()}))
        finally:
            cached.stop()
            plain.stop()

    print(f"  load average at the end {os.getloadavg()[0]:.1f}")
    print()
    print(f"in process, no HTTP (serving/pipeline.py, median us per request of {IN_PROCESS_REQUESTS}):")
    for name in ("small", "slow"):
        medians = in_process(work / f"{name}.onnx", IN_PROCESS_REQUESTS)
        print(
            f"  {name:<6} "
            + "  ".join(f"{path} {us:7.1f}" for path, us in medians.items())
            + f"  (hit/no cache {medians['hit'] / medians['no cache']:.2f}x, miss/no cache "
            f"{medians['miss'] / medians['no cache']:.2f}x)"
        )
    print()
    print("the key's cost in process (serving/cache.py digest, median of 200):")
    for label, shape in (("one row of 4 FP32", (1, 4)), ("one 3x224x224 FP32 image", (1, 3, 224, 224))):
        print(f"  {label:<26} {digest_microseconds(shape):8.1f} us")
    print()
    print(f"{'model':<6} {'c':>3}  {'path':<9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'hit ratio':>9}")
    for name, connections, point in rows:
        for path, run in point.items():
            print(
                f"{name:<6} {connections:>3}  {path:<9} {run.throughput:8.0f} {run.p50_ms:7.3f} {run.p99_ms:7.3f} "
                f"{run.hit_ratio:9.3f}"
            )
        hit, miss, plain_run = point["hit"], point["miss"], point["no cache"]
        print(
            f"{'':<6} {'':>3}  hit/miss: throughput {hit.throughput / miss.throughput:.2f}x, "
            f"p50 {hit.p50_ms / miss.p50_ms:.2f}x; miss/no cache: throughput "
            f"{miss.throughput / plain_run.throughput:.2f}x, p50 {miss.p50_ms / plain_run.p50_ms:.2f}x"
        )
    for name, _connections, point in rows:
        if point["miss"].hit_ratio != 0 or point["hit"].hit_ratio < 0.999:  # a hit run's first request may miss
            raise SystemExit(
                f"{name}: a miss run hit the cache or a hit run missed it; the figures are not what they say"
            )


if __name__ == "__main__":
    main()
