"""The explain endpoint of `cutover serve` (serving/explain.py): latency and error of its
explanations, and what they cost the infer path while they run.

Two tabular ONNX models, an MLP of M -> 64 -> 64 -> 2 (tanh, softmax) with fixed random weights,
for M = 10 and M = 30 features, each served by `cutover serve` (1 intra-op thread) with training
statistics holding 1,000 exemplars; explanations use 50 of them as background. Figures:

- explanation latency, p50 and p99 over sequential requests of one row (the client's time): exact
  Shapley values at M = 10 (2^10 coalitions), 25 antithetic pairs of feature orders at M = 30;
- their error against shap's (0.51.0, installed into .bench/shap only for this benchmark):
  relative L2 of the attributions against ``shap.explainers.Exact`` with the same background
  (``maskers.Independent``: the same interventional Shapley values) at M = 10; at M = 30, where
  exact enumeration is out of reach (2^30 coalitions), against shap's PermutationExplainer with
  ``max_evals`` 200 x (2M + 1), a reference estimate, said so in the table;
- infer latency p50 on one row, alone and while explanations run at their concurrency limit
  (``--explain-max-in-flight 1``, a client sending them back to back), side by side in one run.

The server runs on CPU 1 and the clients on CPU 0 when both are available (the pinning helpers
of benchmarks/serving.py). Run: ``.venv/bin/python benchmarks/explain.py``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

# benchmarks/serving.py, from this script's own folder (first on sys.path when run as a script).
import serving as bench

SHAP = bench.Peer("shap", bench.PEERS / "shap-requirements.txt", ("shap", "onnxruntime", "numpy"))
HIDDEN = 64
EXEMPLARS = 1000
BACKGROUND = 50
MODEL = "tabular"

REFERENCE = """
import sys
import numpy as np
import onnxruntime as ort
import shap

data = np.load(sys.argv[1])
session = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
def f(rows):
    return session.run(None, {"input": rows.astype(np.float32)})[0]
masker = shap.maskers.Independent(data["background"], max_samples=len(data["background"]))
features = data["rows"].shape[1]
if sys.argv[3] == "exact":
    explainer = shap.explainers.Exact(f, masker)
    values = explainer(data["rows"]).values
else:
    explainer = shap.explainers.Permutation(f, masker, seed=0)
    values = explainer(data["rows"], max_evals=200 * (2 * features + 1)).values
np.save(sys.argv[4], values)
"""


def mlp(path: Path, features: int, seed: int) -> None:
    """Write the M -> 64 -> 64 -> 2 MLP (tanh, softmax) with weights drawn from ``seed``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    shapes = [(features, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, 2)]
    weights = [(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in shapes]
    initializers = [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)]
    nodes = [
        helper.make_node("MatMul", ["input", "w0"], ["h0"]),
        helper.make_node("Tanh", ["h0"], ["a0"]),
        helper.make_node("MatMul", ["a0", "w1"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["a1"]),
        helper.make_node("MatMul", ["a1", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))


def training_statistics(path: Path, features: int, seed: int) -> np.ndarray:
    """Statistics of a standard normal training set with EXEMPLARS exemplars; returns them."""
    rows = np.random.default_rng(seed).standard_normal((EXEMPLARS, features))
    path.write_text(
        json.dumps(
            {
                "mean": rows.mean(axis=0).tolist(),
                "covariance": np.cov(rows, rowvar=False).tolist(),
                "exemplars": {"ids": [str(i) for i in range(EXEMPLARS)], "rows": rows.tolist()},
            }
        )
    )
    return rows


def body(row: np.ndarray, **parameters: Any) -> bytes:
    tensor = {"name": "input", "shape": [1, row.size], "datatype": "FP32", "data": row.tolist()}
    return json.dumps({"inputs": [tensor], "parameters": parameters}).encode()


def post(connection: http.client.HTTPConnection, path: str, payload: bytes) -> tuple[float, dict[str, Any]]:
    """Seconds the answer took, and the answer (raises on any status but 200)."""
    started = time.perf_counter()
    connection.request("POST", path, payload, {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    took = time.perf_counter() - started
    if response.status != 200:
        raise SystemExit(f"{path}: {response.status} {answer}")
    return took, answer


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


class Served:
    """`cutover serve` for one model on the server CPU."""

    def __init__(self, folder: Path, features: int, *extra: str) -> None:
        self.port = bench.free_port()
        ood = json.dumps({"statisticsUri": str(folder / "statistics.json"), "input": "input", "threshold": 1000})
        command = [
            str(bench.CUTOVER),
            "serve",
            *("--name", MODEL, "--version", "1", "--format", "onnx", "--model-uri", str(folder / "model.onnx")),
            *("--host", "127.0.0.1", "--port", str(self.port), "--threads", "1", "--ood", ood),
            *("--explain-max-in-flight", "1", "--explain-timeout", "30"),
            *extra,
        ]
        self.log = (folder / f"serve-{self.port}.log").open("wb")
        self.process = subprocess.Popen(
            bench.pinned(bench.SERVER_CPU, command), stdout=self.log, stderr=subprocess.STDOUT
        )
        bench.wait_ready(
            f"http://127.0.0.1:{self.port}",
            "cutover serve",
            self.process,
            folder / f"serve-{self.port}.log",
            timeout=bench.READY_TIMEOUT,
        )

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def reference(python: Path, folder: Path, rows: np.ndarray, background: np.ndarray, kind: str) -> np.ndarray:
    """shap's attributions [n, M, 2] of ``rows`` with ``background``, in its own environment."""
    data, out, script = folder / f"{kind}.npz", folder / f"{kind}-shap.npy", folder / "reference.py"
    np.savez(data, rows=rows, background=background)
    script.write_text(REFERENCE)
    done = subprocess.run(
        [str(python), str(script), str(data), str(folder / "model.onnx"), kind, str(out)],
        capture_output=True,
        text=True,
    )
    if done.returncode:  # shap's progress bars otherwise fill the report
        raise SystemExit(f"shap failed:\n{done.stderr}")
    values: np.ndarray = np.load(out)
    return values


def explained(answer: dict[str, Any]) -> np.ndarray:
    """The attributions [M, 2] of the one row explained."""
    output = answer["explanations"][0]["outputs"][0]
    return np.array([a["attribution"] for a in output["attributions"]])


def run_model(features: int, args: argparse.Namespace, python: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"explain-{features}-") as name:
        folder = Path(name)
        mlp(folder / "model.onnx", features, seed=features)
        training_statistics(folder / "statistics.json", features, seed=features + 1)
        rows = np.random.default_rng(features + 2).standard_normal((args.explanations, features))
        served = Served(folder, features)
        try:
            connection = served.connection()
            kind = "exact" if features <= 10 else "permutation"
            latencies, attributions, backgrounds = [], [], []
            with bench.on_cpu(bench.WRK_CPU):
                post(connection, f"/v2/models/{MODEL}/explain", body(rows[0], seed=0))  # the second session, made
                for i, row in enumerate(rows):
                    took, answer = post(connection, f"/v2/models/{MODEL}/explain", body(row, seed=i))
                    latencies.append(took)
                    attributions.append(explained(answer))
                    chosen = np.random.default_rng(i).choice(EXEMPLARS, BACKGROUND, replace=False)
                    backgrounds.append(np.sort(chosen))
                infer_alone, infer_loaded = infer_latencies(served, features, args)
            method = answer["explanations"][0]["method"]
            evaluations = answer["explanations"][0]["model_evaluations"]
        finally:
            served.stop()
        statistics_rows = np.array(json.loads((folder / "statistics.json").read_text())["exemplars"]["rows"])
        errors = []
        for i in range(min(args.compared, len(rows))):
            shap_values = reference(python, folder, rows[i : i + 1], statistics_rows[backgrounds[i]], kind)[0]
            errors.append(np.linalg.norm(attributions[i] - shap_values) / np.linalg.norm(shap_values))
    return {
        "features": features,
        "method": method,
        "evaluations": evaluations,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "error": float(np.median(errors)),
        "error_max": float(np.max(errors)),
        "reference": "shap Exact" if kind == "exact" else "shap Permutation (estimate)",
        "infer_alone": infer_alone,
        "infer_loaded": infer_loaded,
    }


def infer_latencies(served: Served, features: int, args: argparse.Namespace) -> tuple[float, float]:
    """Infer p50 (ms) alone, and while a client keeps one explanation running (the limit),
    measured in alternating rounds so that load from elsewhere falls on both."""
    connection = served.connection()
    row = np.random.default_rng(0).standard_normal(features)
    alone: list[float] = []
    loaded: list[float] = []
    infer = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, row.size], "datatype": "FP32", "data": row.tolist()}]}
    ).encode()
    for _ in range(args.rounds):
        alone += [post(connection, f"/v2/models/{MODEL}/infer", infer)[0] for _ in range(args.infers)]
        stop, running = threading.Event(), threading.Event()
        thread = threading.Thread(target=explain_back_to_back, args=(served, row, stop, running))
        thread.start()
        running.wait(60)
        loaded += [post(connection, f"/v2/models/{MODEL}/infer", infer)[0] for _ in range(args.infers)]
        stop.set()
        thread.join(60)
    return percentile(alone, 50), percentile(loaded, 50)


def explain_back_to_back(served: Served, row: np.ndarray, stop: threading.Event, running: threading.Event) -> None:
    """Explanations one after the other until ``stop``; ``running`` is set once the first ended."""
    connection = served.connection()
    while not stop.is_set():
        post(connection, f"/v2/models/{MODEL}/explain", body(row))
        running.set()
    connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--explanations", type=int, default=200, help="explain requests per model (default 200)")
    parser.add_argument("--compared", type=int, default=5, help="of which compared with shap (default 5)")
    parser.add_argument("--infers", type=int, default=500, help="infer requests per round and phase (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = parser.parse_args()
    versions = bench.ensure_peer(SHAP)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    results = [run_model(features, args, SHAP.bin / "python") for features in (10, 30)]
    print(f"explanations: MLP M -> 64 -> 64 -> 2 in ONNX Runtime (1 thread), {BACKGROUND} background rows")
    print("  reference: " + ", ".join(f"{p} {v}" for p, v in versions.items()))
    pinned = f"server on CPU {bench.SERVER_CPU}, clients on CPU {bench.WRK_CPU}" if bench.pinning() else "not pinned"
    print(
        f"  {os.cpu_count()} cores, {pinned}; load average at the start {load}, at the end "
        + ", ".join(f"{value:.2f}" for value in os.getloadavg())
    )
    print(f"  {args.explanations} explanations per model; error over {args.compared} of them (median, max)")
    print(f"  infer: {args.rounds} rounds of {args.infers} requests alone, then as many with one explanation running")
    print()
    header = f"{'M':>3}  {'method':<20} {'model rows':>10}  {'p50 ms':>7} {'p99 ms':>7}  {'error vs reference':<36}"
    print(header + f"  {'infer p50 ms alone':>18} {'with explanations':>17} {'ratio':>6}")
    for r in results:
        error = f"{r['error']:.2%} (max {r['error_max']:.2%}) {r['reference']}"
        ratio = r["infer_loaded"] / r["infer_alone"]
        print(
            f"{r['features']:>3}  {r['method']:<20} {r['evaluations']:>10}  {r['p50']:>7.2f} {r['p99']:>7.2f}  "
            f"{error:<36}  {r['infer_alone']:>18.3f} {r['infer_loaded']:>17.3f} {ratio:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
