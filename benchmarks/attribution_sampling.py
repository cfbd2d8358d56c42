"""Attribution sampling in `cutover serve` (``--explain-sample-rate``, serving/attribution_sampling.py):
what explaining every answered row in the background costs the infer path, side by side in one run.

Two `cutover serve` processes of the same model (benchmarks/explain.py's MLP of M -> 64 -> 64 -> 2,
1 intra-op thread, training statistics with exemplars), one sampling nothing and one sampling every
row (rate 1): its sampler is saturated for the whole run (each exact explanation at M = 10 takes
2^10 coalitions x 50 background rows, far longer than an infer), so its queue stays full and most
sampled rows are dropped, the worst case of the sampler's bookkeeping. Both servers share the
server CPU, so the sampled server's explanations (nice 19) run beside both servers' rounds: the
ratio is what sampling costs inside the process that samples (the copy and queueing of the row,
the explanation thread's share of the interpreter), not the CPU it takes, which its nice value
yields to inference. Rounds alternate between the two servers so that load from elsewhere falls
on both. Run: ``.venv/bin/python benchmarks/attribution_sampling.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import explain as ex  # benchmarks/explain.py, from this script's own folder
import numpy as np

import serving as bench  # benchmarks/serving.py, likewise

FEATURES = 10


def samples(served: ex.Served) -> dict[str, float]:
    """The sampled server's ``cutover_attribution_samples_total`` by outcome."""
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("cutover_attribution_samples_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = float(line.rsplit(" ", 1)[1])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--infers", type=int, default=500, help="infer requests per round and server (default 500)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    args = parser.parse_args()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="attribution-sampling-") as name:
        folder = Path(name)
        ex.mlp(folder / "model.onnx", FEATURES, seed=FEATURES)
        ex.training_statistics(folder / "statistics.json", FEATURES, seed=FEATURES + 1)
        plain = ex.Served(folder, FEATURES)
        sampled = ex.Served(folder, FEATURES, "--explain-sample-rate", "1")
        try:
            row = np.random.default_rng(0).standard_normal(FEATURES)
            infer = json.dumps(
                {"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": row.tolist()}]}
            ).encode()
            times: dict[str, list[float]] = {"off": [], "rate 1": []}
            path = f"/v2/models/{ex.MODEL}/infer"
            with bench.on_cpu(bench.WRK_CPU):
                connections = {"off": plain.connection(), "rate 1": sampled.connection()}
                for connection in connections.values():
                    ex.post(connection, path, infer)  # warm
                for _ in range(args.rounds):
                    for which, connection in connections.items():
                        times[which] += [ex.post(connection, path, infer)[0] for _ in range(args.infers)]
            outcomes = samples(sampled)
        finally:
            plain.stop()
            sampled.stop()
    pinned = f"servers on CPU {bench.SERVER_CPU}, client on CPU {bench.WRK_CPU}" if bench.pinning() else "not pinned"
    print(f"attribution sampling: MLP {FEATURES} -> 64 -> 64 -> 2 in ONNX Runtime (1 thread), one row per infer")
    print(
        f"  {os.cpu_count()} cores, {pinned}; load average at the start {load}, at the end "
        + ", ".join(f"{value:.2f}" for value in os.getloadavg())
    )
    print(f"  {args.rounds} alternating rounds of {args.infers} infers per server")
    print()
    print(f"{'sampling':<10} {'infer p50 ms':>12} {'p99 ms':>8}")
    for which, took in times.items():
        print(f"{which:<10} {ex.percentile(took, 50):>12.3f} {ex.percentile(took, 99):>8.3f}")
    p50 = ex.percentile(times["rate 1"], 50) / ex.percentile(times["off"], 50)
    p99 = ex.percentile(times["rate 1"], 99) / ex.percentile(times["off"], 99)
    print(f"ratio rate 1 / off: p50 {p50:.2f}, p99 {p99:.2f}")
    print("sampled rows by outcome: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(outcomes.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
