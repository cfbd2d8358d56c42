"""Serving overhead, side by side: cutover's model server against MLServer, KServe and Triton on one ONNX model.

The same small ONNX classifier (cutover.serving.sample_models.onnx_classifier: 4 FP32 features in,
3 class probabilities out) is served by

* cutover             `cutover serve --format onnx` (aiohttp), batching off
* cutover-batching    the same with dynamic batching: --max-batch-size 32 --max-queue-delay 1ms
* mlserver            MLServer with our custom runtime (benchmarks/peers/mlserver_runtime.py) wrapping
                      onnxruntime, parallel_workers 0 (inference in the main process) and debug off (no
                      access-log line per request)
* mlserver-defaults   the same runtime with MLServer's default settings (one parallel inference worker
                      process beside the main one, access log on)
* mlserver-batching   mlserver plus MLServer's adaptive batching: max_batch_size 32, max_batch_time 1 ms
* kserve              the KServe Python model server with our kserve.Model (benchmarks/peers/kserve_server.py),
                      1 worker, gRPC off, no access-log or latency-log line per request
* kserve-defaults     the same model with KServe's default flags
* triton              Triton Inference Server 2.51.0 (the tritonserver binary shipped in the nvidia-pytriton 0.7.0
                      wheel) with its Python backend running benchmarks/peers/triton_model.py over onnxruntime: one
                      model instance, no dynamic batching, gRPC off, readiness by the model's ready endpoint
* triton-batching     the same with Triton's dynamic batcher: max_batch_size 32, max_queue_delay_microseconds 1000
                      (model.py runs the rows of the requests it is handed as one batch)

and driven by the same load generator: wrk, one thread, a fixed number of keep-alive connections (the
concurrency), POSTing the same Open Inference Protocol JSON body (batch 1, input `input` FP32 [1,4]) to
/v2/models/classifier/infer, with a warm-up before each measured run. wrk is pinned to CPU 0 and each
server (one process; every thread it starts inherits the pin) to CPU 1 with taskset, so the two never
compete for a core. Whether to pin is decided from the CPUs the script may use when it starts, and after
every run each thread of wrk and of the server's processes is checked in /proc (Cpus_allowed_list, printed
with a server's first point): a process off its CPU aborts the run. Every onnxruntime session uses one
intra-op and one inter-op thread. Before any load, each server must answer the fixed input with the
in-process probabilities (within 1e-5); any non-2xx response or socket error during a run aborts the
benchmark. Each run also records the server's CPU use
and the CPU taken by everything else on the machine; a point during which other programs took more than
10% of a core is measured again (--attempts, default 3) and the report warns if none was quiet.

Then Triton's perf_analyzer (the binary in the tritonclient 2.51.0 wheel, installed by hack/perf-analyzer)
drives a fresh cutover-batching server at batch sizes 1 and 8 with 1 and 8 requests in flight, pinned like
wrk, and its own report is printed as it wrote it.

Then gRPC (the Open Inference Protocol's inference.GRPCInferenceService): cutover serve with --grpc-port
(cutover-grpc) against the tuned MLServer's gRPC port (mlserver-grpc), driven by ghz (github.com/bojand/ghz,
built with `go install` into .bench/) pinned to CPU 0 with GOMAXPROCS 1: the same fixed input in
raw_input_contents (what tritonclient.grpc sends), a fixed number of calls in flight (the concurrency) on one
HTTP/2 connection, calls in flight at the end waited for; each server must first answer the fixed input over
gRPC with the in-process probabilities, and a call that is not OK aborts the run. Beside them two floors
(benchmarks/grpc_floor.py), grpc.aio run as cutover serve runs it: grpc-floor answers every call with one
serialized answer and nothing decoded or run, the most cutover's gRPC server could do here; grpc-model-floor
runs the model on each call's raw inputs and sends the outputs back raw, nothing checked or counted, the most
a server running the model in process could do. `--servers
cutover-grpc,mlserver-grpc,grpc-floor,grpc-model-floor` runs this part alone.

The limit is onnxruntime called in this process on the same input (pinned to CPU 1 as well); the cost of
decoding the JSON body and encoding the response with the standard library is printed beside it.

Targets (issue 6): at least 2x MLServer's throughput at equal or lower p99, at every concurrency; cutover's
p50 at concurrency 1 within 0.5 ms of the in-process call. Issue 17: the same 2x over gRPC.

    .venv/bin/python benchmarks/serving.py [--concurrency 1,8,32,64] [--duration 10] [--quick]

MLServer, KServe and Triton are installed by this script into their own virtual environments under .bench/
from the pinned benchmarks/peers/*-requirements.txt (reused while the file is unchanged); wrk is installed
with apt-get when missing, ghz with Go. Run: `make bench-serving`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO / "benchmarks" / "peers"
BENCH = REPO / ".bench"
CUTOVER = REPO / ".venv" / "bin" / "cutover"

MODEL = "classifier"
INFER_PATH = f"/v2/models/{MODEL}/infer"
READY_PATH = "/v2/health/ready"
FEATURES = [0.1, 1.2, -1.5, 0.5]  # a typical row of the sample model's training distribution
BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": FEATURES}]})
TOLERANCE = 1e-5

WRK_PACKAGE = "wrk=4.1.0-3+b2"  # Debian 12 (bookworm)
WRK_CPU = 0
SERVER_CPU = 1
READY_TIMEOUT = 180.0
PERF_ANALYZER = REPO / "hack" / "perf-analyzer"  # installs Triton's perf_analyzer (tritonclient 2.51.0 wheel)
PERF_BATCH_SIZES = (1, 8)
PERF_CONCURRENCY = "1:8:7"  # perf_analyzer's start:end:step: 1, then 8 requests in flight
UNSTABLE = "Failed to obtain stable measurement"  # perf_analyzer's words for a point it could not measure

TARGET_THROUGHPUT_RATIO = 2.0
TARGET_OVERHEAD_MS = 0.5
OTHER_CPU_LIMIT = 10.0  # percent of one core used by other programs during a run before the report warns

# wrk prints its own report; done() adds one JSON line that this script parses (latencies in microseconds).
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{{BODY}}]==]

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "BENCH_RESULT {\\"requests\\": %d, \\"duration_us\\": %d, \\"connect\\": %d, \\"read\\": %d, " ..
    "\\"write\\": %d, \\"status\\": %d, \\"timeout\\": %d, \\"p50_us\\": %.0f, \\"p99_us\\": %.0f, " ..
    "\\"mean_us\\": %.1f, \\"max_us\\": %.0f}\\n",
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class Peer:
    """A peer server's virtual environment under .bench/, built from a pinned requirements file."""

    name: str
    requirements: Path
    reported: tuple[str, ...]

    @property
    def root(self) -> Path:
        return BENCH / self.name

    @property
    def bin(self) -> Path:
        return self.root / "bin"


MLSERVER = Peer("mlserver", PEERS / "mlserver-requirements.txt", ("mlserver", "onnxruntime", "uvicorn", "fastapi"))
KSERVE = Peer("kserve", PEERS / "kserve-requirements.txt", ("kserve", "onnxruntime", "uvicorn", "fastapi"))
TRITON = Peer("triton", PEERS / "triton-requirements.txt", ("nvidia-pytriton", "onnxruntime", "numpy"))
TRITON_VERSION = "2.51.0"  # the tritonserver binary in nvidia-pytriton 0.7.0


@dataclass
class Run:
    """One wrk run: totals and latency percentiles from wrk's done() callback."""

    requests: int
    duration_us: int
    connect: int
    read: int
    write: int
    status: int
    timeout: int
    p50_us: float
    p99_us: float
    mean_us: float
    max_us: float
    server_cpu: float = 0.0  # percent of one core, during the run
    other_cpu: float = 0.0  # percent of one core used by everything else on the machine
    wrk_cpus: str = ""  # check_cpu's line for wrk during the run

    @property
    def throughput(self) -> float:
        return self.requests / (self.duration_us / 1e6)

    @property
    def errors(self) -> int:
        return self.connect + self.read + self.write + self.status + self.timeout


@dataclass
class Server:
    """How to start one server configuration; `ports` names the free ports its command uses."""

    label: str
    description: str
    command: Callable[[dict[str, int]], list[str]]
    ports: tuple[str, ...] = ("http",)
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[dict[str, int]], None] | None = None
    ready_path: str = READY_PATH


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_ready(
    url: str, what: str, process: subprocess.Popen[bytes], log: Path, path: str = READY_PATH, timeout: float = 60
) -> None:
    """Wait until GET ``url`` + ``path`` answers 200; raise SystemExit (naming ``what`` and its
    ``log``) when ``process`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited; see {log}")
        try:
            if http("GET", url + path, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} not ready; see {log}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used (every thread), in seconds, from
    ``/proc/PID/stat`` (fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The CPUs this process may use, read once at import, before on_cpu() narrows its own affinity: a check made
# inside on_cpu(WRK_CPU) saw only CPU 0 and pinned nothing, so every server and wrk shared CPU 0 (serving
# figures published before 2026-12-01 were measured that way).
CPUS = frozenset(os.sched_getaffinity(0))


def pinning() -> bool:
    """Whether wrk and the servers get a CPU each: both CPUs were available to the script when it started."""
    return {WRK_CPU, SERVER_CPU} <= CPUS


def pinned(cpu: int, command: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if pinning() else list(command)


@contextmanager
def on_cpu(cpu: int) -> Iterator[None]:
    """Run this process on one CPU for the block (the in-process baseline runs where the servers run)."""
    before = os.sched_getaffinity(0)
    if pinning():
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def group_stats(group: int) -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name) for each process in a process group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group:  # pgrp is the third field after the command name
            yield int(entry.name), fields


def cpus_allowed(pid: int) -> set[str]:
    """The Cpus_allowed_list values of every thread of a process, as /proc/PID/task/TID/status shows them."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended
        found |= {line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list")}
    return found


def check_cpu(what: str, pids: Sequence[int], cpu: int) -> str:
    """Where `pids` may run, read from /proc, as one line of the report (`pid (command) cpus`).

    Raises SystemExit when pinning is on and a thread of one of them may run anywhere but `cpu`: the run
    would not measure what the report says it does.
    """
    described = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/comm").read_text().strip()
            lists = cpus_allowed(pid)
        except OSError:
            continue  # the process ended
        described.append(f"{pid} ({command}) {' '.join(sorted(lists))}")
        if pinning() and lists != {str(cpu)}:
            raise SystemExit(f"{what}: process {pid} ({command}) may run on CPUs {sorted(lists)}, not CPU {cpu} alone")
    return f"{what} Cpus_allowed_list: " + "; ".join(described)


# ---------------------------------------------------------------------------------------------- installs


def ensure_peer(peer: Peer) -> dict[str, str]:
    """Create or reuse the peer's virtual environment; return the versions of its reported packages."""
    digest = hashlib.sha256(peer.requirements.read_bytes() + sys.version.encode()).hexdigest()
    stamp = peer.root / ".stamp"
    if not (stamp.exists() and stamp.read_text() == digest):
        print(f"installing {peer.name} into {peer.root.relative_to(REPO)} from {peer.requirements.relative_to(REPO)}")
        shutil.rmtree(peer.root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(peer.root)], check=True)
        pip = [str(peer.bin / "python"), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
        subprocess.run([*pip, "--no-deps", "-r", str(peer.requirements)], check=True)
        subprocess.run([str(peer.bin / "python"), "-m", "pip", "check"], check=True, stdout=subprocess.DEVNULL)
        stamp.write_text(digest)
    return package_versions(peer.bin / "python", peer.reported)


def package_versions(python: Path, packages: Sequence[str]) -> dict[str, str]:
    code = "import importlib.metadata as m, json, sys; print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
    done = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, check=True)
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def ensure_wrk() -> str:
    """wrk from Debian's archive, installed with apt-get when missing; returns its version line."""
    if shutil.which("wrk") is None:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        print(f"installing {WRK_PACKAGE} with apt-get")
        subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-q", WRK_PACKAGE], check=True, stdout=subprocess.DEVNULL)
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0]


def ensure_perf_analyzer() -> Path:
    """The folder hack/perf-analyzer installs perf_analyzer into (cached; its last line of output):
    bin/perf_analyzer, and lib/ for LD_LIBRARY_PATH."""
    done = subprocess.run([str(PERF_ANALYZER)], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def build_model(path: Path) -> None:
    from cutover.serving.sample_models import onnx_classifier

    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_classifier(path, "good")


# ---------------------------------------------------------------------------------------------- servers


def servers(model: Path) -> list[Server]:
    cutover = [str(CUTOVER), "serve", "--name", MODEL, "--version", "1", "--format", "onnx", "--revision", "bench"]
    cutover += ["--namespace", "bench", "--host", "127.0.0.1", "--model-uri", str(model), "--threads", "1"]
    cutover += ["--device", "cpu"]
    batching = ["--max-batch-size", "32", "--max-queue-delay", "1ms", "--max-queue-size", "1024"]

    def mlserver(label: str, settings: dict[str, Any], model_settings: dict[str, Any]) -> Server:
        folder = BENCH / "run" / label

        def prepare(ports: dict[str, int]) -> None:
            shutil.rmtree(folder, ignore_errors=True)
            (folder / MODEL).mkdir(parents=True)
            ports_settings = {"http_port": ports["http"], "grpc_port": ports["grpc"], "metrics_port": ports["metrics"]}
            (folder / "settings.json").write_text(json.dumps({"host": "127.0.0.1", **ports_settings, **settings}))
            (folder / MODEL / "model-settings.json").write_text(
                json.dumps(
                    {
                        "name": MODEL,
                        "implementation": "mlserver_runtime.OnnxRuntime",
                        "parameters": {"uri": str(model), "version": "1"},
                        **model_settings,
                    }
                )
            )

        described = ", ".join(f"{key} {value}" for key, value in {**settings, **model_settings}.items()) or "defaults"
        return Server(
            label,
            f"MLServer, custom onnxruntime runtime: {described}",
            lambda ports: [str(MLSERVER.bin / "mlserver"), "start", str(folder)],
            ports=("http", "grpc", "metrics"),
            env={"PYTHONPATH": str(PEERS)},
            prepare=prepare,
        )

    def port_flags(ports: dict[str, int]) -> list[str]:
        return ["--http_port", str(ports["http"]), "--grpc_port", str(ports["grpc"])]

    def kserve(label: str, flags: list[str], described: str) -> Server:
        script = [str(KSERVE.bin / "python"), str(PEERS / "kserve_server.py"), "--model-path", str(model)]
        return Server(
            label,
            f"KServe ModelServer, kserve.Model over onnxruntime: {described}",
            lambda ports: [*script, "--model_name", MODEL, *port_flags(ports), *flags],
            ports=("http", "grpc"),
        )

    def triton(label: str, max_batch_size: int) -> Server:
        """Triton's Python backend; with max_batch_size > 0, Triton's dynamic batcher (1 ms queue delay)."""
        folder = BENCH / "run" / label
        python = f"{sys.version_info.major}.{sys.version_info.minor}"  # the Triton venv's, made from this Python
        site = TRITON.root / "lib" / f"python{python}" / "site-packages"
        dist = site / "pytriton" / "tritonserver"
        backend = folder / "backends" / "python"
        version = folder / "models" / MODEL / "1"

        def prepare(ports: dict[str, int]) -> None:
            # The backend folder as PyTriton lays it out: the Python backend with the stub for this Python.
            shutil.rmtree(folder, ignore_errors=True)
            backend.mkdir(parents=True)
            for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
                shutil.copy(dist / "backends" / "python" / name, backend)
            shutil.copy(dist / "python_backend_stubs" / python / "triton_python_backend_stub", backend)
            version.mkdir(parents=True)
            shutil.copy(PEERS / "triton_model.py", version / "model.py")
            batch = "" if max_batch_size else "-1, "  # with batching, the batch dimension is implied
            (version.parent / "config.pbtxt").write_text(
                f'name: "{MODEL}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
                f'input [{{ name: "input", data_type: TYPE_FP32, dims: [ {batch}4 ] }}]\n'
                f'output [{{ name: "probabilities", data_type: TYPE_FP32, dims: [ {batch}3 ] }}]\n'
                "instance_group [{ count: 1, kind: KIND_CPU }]\n"
                f'parameters: {{ key: "onnx_model", value: {{ string_value: "{model}" }} }}\n'
                + ("dynamic_batching { max_queue_delay_microseconds: 1000 }\n" if max_batch_size else "")
            )

        def command(ports: dict[str, int]) -> list[str]:
            return [
                str(dist / "bin" / "tritonserver"), f"--model-repository={version.parent.parent}",
                f"--backend-directory={backend.parent}", "--http-address=127.0.0.1", f"--http-port={ports['http']}",
                "--allow-grpc=false", f"--grpc-port={ports['grpc']}", "--metrics-address=127.0.0.1",
                f"--metrics-port={ports['metrics']}",
            ]  # fmt: skip

        # The stub embeds libpython: the base Python's LIBDIR comes first, or it loads Debian's libpython3.x (a
        # different build from the venv's base) and the backend fails; the venv's bin first on PATH makes the stub
        # run in the venv (numpy < 2, onnxruntime). nvidia_pytriton.libs holds tritonserver's own libraries.
        libraries = [str(sysconfig.get_config_var("LIBDIR")), str(site / "nvidia_pytriton.libs")]
        described = (
            f"dynamic batching: max_batch_size {max_batch_size}, max_queue_delay_microseconds 1000"
            if max_batch_size
            else "no dynamic batching"
        )
        return Server(
            label,
            f"Triton {TRITON_VERSION} (nvidia-pytriton's binary), Python backend: model.py over onnxruntime, "
            f"1 instance, {described}, gRPC off",
            command,
            ports=("http", "grpc", "metrics"),
            env={
                "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [*libraries, os.environ.get("LD_LIBRARY_PATH")])),
                "PATH": os.pathsep.join([str(TRITON.bin), os.environ["PATH"]]),
            },
            prepare=prepare,
            ready_path=f"/v2/models/{MODEL}/ready",
        )

    tuned = {"parallel_workers": 0, "debug": False}
    return [
        Server(
            "cutover",
            "cutover serve --format onnx --threads 1 --device cpu, batching off",
            lambda ports: [*cutover, "--port", str(ports["http"])],
        ),
        Server(
            "cutover-batching",
            "cutover serve, dynamic batching: " + " ".join(batching),
            lambda ports: [*cutover, "--port", str(ports["http"]), *batching],
        ),
        mlserver("mlserver", tuned, {}),
        mlserver("mlserver-defaults", {}, {}),
        mlserver("mlserver-batching", tuned, {"max_batch_size": 32, "max_batch_time": 0.001}),
        kserve(
            "kserve",
            ["--workers", "1", "--enable_grpc", "false", "--enable_latency_logging", "false", "--quiet"],
            "workers 1, gRPC off, no access or latency log lines",
        ),
        kserve("kserve-defaults", [], "defaults (workers 1, gRPC on, access and latency log lines)"),
        triton("triton", 0),
        triton("triton-batching", 32),
    ]


def http(method: str, url: str, body: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body.encode() if body is not None else None, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Running:
    """A started server: its process group (for MLServer's worker processes too), port and log."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.ports = {name: free_port() for name in server.ports}
        if server.prepare is not None:
            server.prepare(self.ports)
        self.log = BENCH / "logs" / f"{server.label}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **server.env}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                pinned(SERVER_CPU, server.command(self.ports)),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=BENCH,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.ports['http']}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.server.label} exited with {self.process.returncode}; see {self.log}")
            try:
                if http("GET", self.url + self.server.ready_path, timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.server.label} not ready after {READY_TIMEOUT:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def verify(running: Running, expected: np.ndarray) -> None:
    """The server must answer the fixed input with the in-process probabilities."""
    status, payload = http("POST", running.url + INFER_PATH, BODY)
    if status != 200:
        raise SystemExit(f"{running.server.label} answered {status}: {payload[:500]!r}; see {running.log}")
    outputs = {output["name"]: output for output in json.loads(payload)["outputs"]}
    if "probabilities" not in outputs:
        raise SystemExit(f"{running.server.label}: no output 'probabilities' in {payload[:500]!r}")
    output = outputs["probabilities"]
    got = np.asarray(output["data"], dtype=np.float64).reshape(output["shape"])
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=TOLERANCE):
        raise SystemExit(f"{running.server.label} answered {got.tolist()}, in-process {expected.tolist()}")


# ---------------------------------------------------------------------------------------------- load


class CpuMeter:
    """CPU time during a run: the server's process group, and everything else on the machine.

    Everything else is the machine's busy time (/proc/stat) less the server, wrk and this process. It
    should stay near zero (kernel work the processes are not charged for); when other programs share
    the machine, figures from the run are not comparable and the report says so.
    """

    def __init__(self, server_group: int) -> None:
        self.server_group = server_group
        self.tick = os.sysconf("SC_CLK_TCK")

    def _busy(self) -> float:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        )
        return (user + nice + system + irq + softirq + steal) / self.tick

    def _server(self) -> float:
        # utime and stime are fields 14 and 15 of stat
        total = sum(int(fields[11]) + int(fields[12]) for _pid, fields in group_stats(self.server_group))
        return total / self.tick

    @staticmethod
    def _ours() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def start(self) -> None:
        self.started = (time.monotonic(), self._busy(), self._server(), self._ours())

    def stop(self, run: Run) -> None:
        wall, busy, server, ours = (
            now - then
            for now, then in zip(
                (time.monotonic(), self._busy(), self._server(), self._ours()), self.started, strict=True
            )
        )
        run.server_cpu = 100 * server / wall
        run.other_cpu = max(0.0, 100 * (busy - server - ours) / wall)


@dataclass(frozen=True)
class LoadRun:
    """A finished load generator: exit status, output, and check_cpu's line for it while it ran."""

    returncode: int
    stdout: str
    stderr: str
    placed: str


def run_load(command: Sequence[str], env: dict[str, str] | None = None) -> LoadRun:
    """Run a load generator to its end on WRK_CPU; where it may run is read from /proc once taskset has exec'd
    it (its /proc comm is the program's name), and a load generator off WRK_CPU aborts the benchmark."""
    name = Path(command[0]).name[:15]  # /proc/PID/comm keeps 15 characters
    with subprocess.Popen(
        pinned(WRK_CPU, command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        comm = Path(f"/proc/{process.pid}/comm")
        while process.poll() is None and comm.read_text().strip() != name:
            time.sleep(0.001)
        placed = check_cpu(name, [process.pid], WRK_CPU)
        stdout, stderr = process.communicate()
    return LoadRun(process.returncode, stdout, stderr, placed)


def wrk(script: Path, url: str, connections: int, seconds: float) -> Run:
    """One wrk run on WRK_CPU (Run.wrk_cpus: where it ran)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "--latency"]
    done = run_load([*command, "-s", str(script), url + INFER_PATH])
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return Run(**json.loads(lines[-1].removeprefix("BENCH_RESULT ")), wrk_cpus=done.placed)


def perf_analyzer(tool: Path, server: Server, expected: np.ndarray, seconds: float) -> bool:
    """Triton's perf_analyzer against a fresh `server` at each of PERF_BATCH_SIZES rows a request, 1 and 8
    requests in flight (synchronous HTTP requests, binary tensor data, random inputs, perf_analyzer's own
    stability rule over measurement windows of `seconds`), on WRK_CPU. Prints its own report; returns False
    when a run failed or a point never stabilised (perf_analyzer 2.51 says so but still exits 0)."""
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(tool / "lib"), os.environ.get("LD_LIBRARY_PATH")])),
    }
    running = Running(server)
    passed = True
    try:
        running.wait_ready()
        verify(running, expected)
        for batch_size in PERF_BATCH_SIZES:
            command = [str(tool / "bin" / "perf_analyzer"), "-m", MODEL, "-u", running.url.removeprefix("http://")]
            command += ["-i", "http", "-b", str(batch_size), "--concurrency-range", PERF_CONCURRENCY]
            command += ["--measurement-interval", f"{seconds * 1000:.0f}"]
            print(f"\n$ perf_analyzer {' '.join(command[1:])}   (against {server.label})", flush=True)
            done = run_load(command, env)
            server_cpus = check_cpu(
                server.label, [pid for pid, _fields in group_stats(running.process.pid)], SERVER_CPU
            )
            print(f"  {done.placed}\n  {server_cpus}\n{done.stdout}{done.stderr}", end="", flush=True)
            if done.returncode != 0 or UNSTABLE in done.stdout + done.stderr:
                print(f"perf_analyzer -b {batch_size} failed (exit status {done.returncode})")
                passed = False
    finally:
        running.stop()
    return passed


def measure_each(
    servers: Sequence[Server],
    check: Callable[[Running], None],
    drive: Callable[[Running, int, float], Run],
    concurrencies: Sequence[int],
    args: argparse.Namespace,
) -> dict[str, dict[int, Run]]:
    """Each server in turn, with this script on WRK_CPU: started, its answers checked (``check``
    raises when they are wrong), measured at each concurrency (:func:`measure`, with ``args``'
    duration, warmup and attempts) and stopped. The runs by server label, then concurrency."""
    results: dict[str, dict[int, Run]] = {}
    with on_cpu(WRK_CPU):
        for server in servers:
            running = Running(server)
            try:
                running.wait_ready()
                check(running)
                results[server.label] = measure(
                    running, drive, concurrencies, args.duration, args.warmup, args.attempts
                )
            finally:
                running.stop()
    return results


def measure(
    running: Running,
    drive: Callable[[Running, int, float], Run],
    concurrencies: Sequence[int],
    duration: float,
    warmup: float,
    attempts: int,
) -> dict[int, Run]:
    """Warm up, then measure, at each concurrency; a point during which other programs took more than
    OTHER_CPU_LIMIT of a core is measured again (up to `attempts` in all) and the quietest attempt kept.
    After every run each process of the server is checked to be on SERVER_CPU (wrk on WRK_CPU during it);
    where they were is printed with the first point."""
    runs: dict[int, Run] = {}
    meter = CpuMeter(running.process.pid)
    placed: list[str] = []

    def load(connections: int, seconds: float, kind: str) -> Run:
        meter.start()
        run = drive(running, connections, seconds)
        meter.stop(run)
        server = [pid for pid, _fields in group_stats(running.process.pid)]
        placed[:] = [run.wrk_cpus, check_cpu(running.server.label, server, SERVER_CPU)]
        if run.errors or running.process.poll() is not None:
            raise SystemExit(
                f"{running.server.label}, concurrency {connections}, {kind}: {run.errors} errors in "
                f"{run.requests} requests (non-2xx {run.status}, connect {run.connect}, read {run.read}, "
                f"write {run.write}, timeout {run.timeout}); see {running.log}"
            )
        return run

    for connections in concurrencies:
        tries: list[Run] = []
        while len(tries) < attempts and (not tries or tries[-1].other_cpu > OTHER_CPU_LIMIT):
            load(connections, warmup, "warm-up")
            tries.append(load(connections, duration, "run"))
        run = runs[connections] = min(tries, key=lambda attempt: attempt.other_cpu)
        if len(runs) == 1:
            print("".join(f"  {line}\n" for line in placed), end="")
        print(
            f"  {running.server.label:<18} c={connections:<3} {run.throughput:9.0f} req/s  "
            f"p50 {run.p50_us / 1000:7.2f} ms  p99 {run.p99_us / 1000:7.2f} ms  "
            f"server cpu {run.server_cpu:3.0f}%  other cpu {run.other_cpu:3.0f}%"
            + (f"  (quietest of {len(tries)} tries)" if len(tries) > 1 else ""),
            flush=True,
        )
    return runs


@dataclass
class InProcess:
    calls_per_s: float
    p50_us: float
    p99_us: float
    json_p50_us: float
    json_p99_us: float
    expected: np.ndarray


def serve_session(model: Path) -> Any:
    """An onnxruntime session of ``model`` with the servers' settings, those of cutover serve's
    ``--threads 1 --device cpu`` (serving/adapters/onnx.py): one intra-op and one inter-op thread,
    sequential, the CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def in_process(model: Path, seconds: float) -> InProcess:
    """onnxruntime.run on the fixed input in a loop, with the servers' session settings, on the servers' CPU."""
    session = serve_session(model)
    features = np.asarray([FEATURES], dtype=np.float32)
    expected = session.run(["probabilities"], {"input": features})[0]

    def codec() -> bytes:
        request = json.loads(BODY)["inputs"][0]
        decoded = np.asarray(request["data"], dtype=np.float32).reshape(request["shape"])
        assert decoded.shape == features.shape
        output = {"name": "probabilities", "shape": list(expected.shape), "datatype": "FP32"}
        response = {"model_name": MODEL, "outputs": [{**output, "data": expected.ravel().tolist()}]}
        return json.dumps(response).encode()

    def loop(call: Callable[[], object]) -> tuple[np.ndarray, float]:
        for _ in range(1000):
            call()
        times: list[int] = []
        start = time.perf_counter_ns()
        deadline = start + int(seconds * 1e9)
        now = start
        while now < deadline:
            call()
            after = time.perf_counter_ns()
            times.append(after - now)
            now = after
        return np.asarray(times) / 1000, len(times) / ((now - start) / 1e9)

    with on_cpu(SERVER_CPU):
        run_times, calls_per_s = loop(lambda: session.run(["probabilities"], {"input": features}))
        codec_times, _ = loop(codec)
    return InProcess(
        calls_per_s=calls_per_s,
        p50_us=float(np.percentile(run_times, 50)),
        p99_us=float(np.percentile(run_times, 99)),
        json_p50_us=float(np.percentile(codec_times, 50)),
        json_p99_us=float(np.percentile(codec_times, 99)),
        expected=expected.astype(np.float64),
    )


# ---------------------------------------------------------------------------------------------- report


def report(
    results: dict[str, dict[int, Run]],
    limit: InProcess,
    concurrencies: Sequence[int],
    duration: float,
    warmup: float,
) -> None:
    ms = 1000.0
    print()
    print(
        f"in process (onnxruntime.run, 1 intra-op thread, CPU {SERVER_CPU}): {limit.calls_per_s:,.0f} calls/s, "
        f"p50 {limit.p50_us / ms:.3f} ms, p99 {limit.p99_us / ms:.3f} ms"
    )
    print(
        f"in process, JSON decode + encode of the same body (stdlib json, no model): "
        f"p50 {limit.json_p50_us / ms:.3f} ms, p99 {limit.json_p99_us / ms:.3f} ms"
    )
    for connections in concurrencies:
        print()
        print(f"concurrency {connections} (wrk -t1 -c{connections}, {duration:g} s after {warmup:g} s warm-up)")
        print(
            f"{'server':<20} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'server cpu':>11}"
            f" {'other cpu':>10}"
        )
        for label, runs in results.items():
            run = runs[connections]
            print(
                f"{label:<20} {run.throughput:9.0f} {run.p50_us / ms:8.2f} {run.p99_us / ms:8.2f} {run.errors:7d} "
                f"{run.server_cpu:10.0f}% {run.other_cpu:9.0f}%"
            )

    def ratio_table(peer: str) -> None:
        if "cutover" not in results or peer not in results:
            return
        print()
        print(f"cutover / {peer} (batching off in both)")
        header = f"{'concurrency':<12} {'throughput x':>12} {'p99 cutover':>12} {'p99 ' + peer:>22} {'p99 ratio':>10}"
        if peer == "mlserver":
            header += f"  target (>= {TARGET_THROUGHPUT_RATIO:g}x at equal or lower p99)"
        print(header)
        for connections in concurrencies:
            ours, theirs = results["cutover"][connections], results[peer][connections]
            ratio = ours.throughput / theirs.throughput
            line = (
                f"{connections:<12} {ratio:12.2f} {ours.p99_us / ms:12.2f} {theirs.p99_us / ms:22.2f} "
                f"{ours.p99_us / theirs.p99_us:10.2f}"
            )
            if peer == "mlserver":
                met = ratio >= TARGET_THROUGHPUT_RATIO and ours.p99_us <= theirs.p99_us
                line += f"  {'met' if met else 'NOT met'}"
            print(line)

    ratio_table("mlserver")
    ratio_table("mlserver-defaults")
    ratio_table("kserve")
    ratio_table("triton")

    if "cutover" in results and 1 in concurrencies:
        overhead = (results["cutover"][1].p50_us - limit.p50_us) / ms
        met = "met" if overhead <= TARGET_OVERHEAD_MS else "NOT met"
        print()
        print(
            f"cutover p50 at concurrency 1 minus in-process p50: {overhead:.3f} ms per request "
            f"(target <= {TARGET_OVERHEAD_MS} ms: {met}); of which JSON decode + encode in process: "
            f"{limit.json_p50_us / ms:.3f} ms"
        )

    print()
    print("throughput (req/s) against concurrency")
    print(f"{'server':<20}" + "".join(f"{'c=' + str(c):>9}" for c in concurrencies))
    for label in ("cutover", "cutover-batching", "mlserver", "mlserver-batching", "triton", "triton-batching"):
        if label in results:
            print(f"{label:<20}" + "".join(f"{results[label][c].throughput:9.0f}" for c in concurrencies))
    for batched, plain in (
        ("cutover-batching", "cutover"),
        ("mlserver-batching", "mlserver"),
        ("triton-batching", "triton"),
    ):
        if batched in results and plain in results:
            gains = "".join(
                f"{results[batched][c].throughput / results[plain][c].throughput:9.2f}" for c in concurrencies
            )
            print(f"{plain + ' batching x':<20}" + gains)

    busiest = max((run.other_cpu for runs in results.values() for run in runs.values()), default=0.0)
    if busiest > OTHER_CPU_LIMIT:
        print()
        print(
            f"WARNING: other programs used up to {busiest:.0f}% of a core during the runs (limit "
            f"{OTHER_CPU_LIMIT:.0f}%): the machine was shared, so these figures are not comparable; run again idle."
        )


# ---------------------------------------------------------------------------------------------- gRPC

GHZ_VERSION = "v0.93.0"  # github.com/bojand/ghz, the newest its module path resolves to on the Go proxy
GRPC_CALL = "inference.GRPCInferenceService/ModelInfer"
GRPC_LABELS = ("cutover-grpc", "mlserver-grpc", "grpc-floor", "grpc-model-floor")


def ensure_ghz() -> Path:
    """ghz, the gRPC load generator, built with `go install` into .bench/ghz-<version>/ (kept while it exists)."""
    folder = BENCH / f"ghz-{GHZ_VERSION}"
    binary = folder / "ghz"
    if not binary.exists():
        go = shutil.which("go") or "/usr/local/go/bin/go"
        print(f"building ghz {GHZ_VERSION} with {go} into {folder.relative_to(REPO)}")
        env = {**os.environ, "GOBIN": str(folder), "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
        subprocess.run([go, "install", f"github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION}"], check=True, env=env)
    return binary


def grpc_request_files(folder: Path) -> tuple[Path, Path]:
    """The service's descriptors as a protoset (from tritonclient's generated modules, which both servers'
    protocol matches: KServe v2's inference.GRPCInferenceService) and ghz's request: the benchmark's fixed
    input in raw_input_contents, as tritonclient.grpc sends it."""
    import base64

    from google.protobuf import descriptor_pb2
    from tritonclient.grpc import model_config_pb2, service_pb2

    descriptors = descriptor_pb2.FileDescriptorSet()
    for module in (model_config_pb2, service_pb2):
        module.DESCRIPTOR.CopyToProto(descriptors.file.add())
    protoset, data = folder / "oip.protoset", folder / "grpc-request.json"
    protoset.write_bytes(descriptors.SerializeToString())
    raw = base64.b64encode(np.asarray([FEATURES], dtype="<f4").tobytes()).decode()
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 4]}
    data.write_text(json.dumps({"model_name": MODEL, "inputs": [tensor], "raw_input_contents": [raw]}))
    return protoset, data


def grpc_servers(model: Path, expected: np.ndarray) -> list[Server]:
    """cutover serve with its gRPC port, the tuned MLServer (whose gRPC port is always on), as above, and two
    floors (benchmarks/grpc_floor.py): of cutover's gRPC server (the ``expected`` answer, serialized once, for
    every call), and of answering with the model on it (each call's raw inputs through onnxruntime, nothing
    checked or counted)."""
    from tritonclient.grpc import service_pb2

    by_label = {server.label: server for server in servers(model)}
    cutover, mlserver = by_label["cutover"], by_label["mlserver"]
    answer_file = BENCH / "run" / "grpc-floor-answer.pb"

    def write_answer(ports: dict[str, int]) -> None:
        answer = service_pb2.ModelInferResponse(model_name=MODEL, model_version="1", id="floor")
        answer.outputs.add(name="probabilities", datatype="FP32", shape=list(expected.shape))
        answer.raw_output_contents.append(expected.astype("<f4").tobytes())
        answer_file.parent.mkdir(parents=True, exist_ok=True)
        answer_file.write_bytes(answer.SerializeToString())

    def floor_command(*given: str) -> Callable[[dict[str, int]], list[str]]:
        script = [sys.executable, str(REPO / "benchmarks" / "grpc_floor.py"), *given]
        return lambda ports: [*script, "--grpc-port", str(ports["grpc"]), "--http-port", str(ports["http"])]

    settings = "uvloop, poll-based I/O, poller at nice 10, as cutover serve"
    floor = Server(
        label="grpc-floor",
        description=f"grpc.aio answering every call with one serialized answer, nothing decoded or run "
        f"(benchmarks/grpc_floor.py; {settings})",
        command=floor_command("--answer", str(answer_file)),
        ports=("http", "grpc"),
        prepare=write_answer,
    )
    model_floor = Server(
        label="grpc-model-floor",
        description=f"grpc.aio answering each call by onnxruntime on its raw inputs, nothing checked or counted "
        f"(benchmarks/grpc_floor.py --model; {settings}; onnxruntime as cutover serve --threads 1)",
        command=floor_command("--model", str(model)),
        ports=("http", "grpc"),
    )
    return [
        replace(
            cutover,
            label="cutover-grpc",
            description=f"{cutover.description}, --grpc-port",
            command=lambda ports: [*cutover.command(ports), "--grpc-port", str(ports["grpc"])],
            ports=("http", "grpc"),
        ),
        replace(mlserver, label="mlserver-grpc", description=f"{mlserver.description}, its gRPC port"),
        floor,
        model_floor,
    ]


def verify_grpc(running: Running, expected: np.ndarray) -> None:
    """The server must answer the fixed input over gRPC (raw contents in) with the in-process probabilities,
    in raw_output_contents or typed contents (MLServer answers typed)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[np.float32([FEATURES]).tobytes()])
    request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    with grpc.insecure_channel(f"127.0.0.1:{running.ports['grpc']}") as channel:
        try:
            response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        except grpc.RpcError as error:
            raise SystemExit(f"{running.server.label} answered {error.code()}: {error.details()}") from None
    output = response.outputs[0]
    if response.raw_output_contents:
        got = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    else:
        got = np.asarray(output.contents.fp32_contents, dtype=np.float32)
    got = got.astype(np.float64).reshape(list(output.shape))
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=TOLERANCE):
        raise SystemExit(f"{running.server.label} answered {got.tolist()} over gRPC, in-process {expected.tolist()}")


def ghz(tool: Path, protoset: Path, data: Path, running: Running, connections: int, seconds: float) -> Run:
    """One ghz run on WRK_CPU (GOMAXPROCS 1, as wrk runs one thread): `connections` calls in flight on one HTTP/2
    connection (a gRPC client's one channel), for `seconds`, then waiting for the calls in flight to end."""
    target = f"127.0.0.1:{running.ports['grpc']}"
    command = [str(tool), "--insecure", "--protoset", str(protoset), "--call", GRPC_CALL, "--data-file", str(data)]
    command += ["--concurrency", str(connections), "--connections", "1", "--duration", f"{seconds:g}s"]
    command += ["--duration-stop", "wait", "--timeout", "10s", "--format", "json", target]
    done = run_load(command, {**os.environ, "GOMAXPROCS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"ghz failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = json.loads(done.stdout)
    percentiles = {point["percentage"]: point["latency"] / 1000 for point in result.get("latencyDistribution") or []}
    answered = result["statusCodeDistribution"].get("OK", 0)
    return Run(
        requests=answered,
        duration_us=int(result["total"] / 1000),
        connect=0,
        read=0,
        write=0,
        status=result["count"] - answered,
        timeout=0,
        p50_us=percentiles.get(50, 0.0),
        p99_us=percentiles.get(99, 0.0),
        mean_us=result["average"] / 1000,
        max_us=result["slowest"] / 1000,
        wrk_cpus=done.placed,
    )


def grpc_benchmark(
    model: Path, expected: np.ndarray, wanted: Sequence[str] | None, args: argparse.Namespace
) -> dict[str, dict[int, Run]]:
    """cutover serve against MLServer over gRPC, as the wrk runs above but driven by ghz (pinned the same way)."""
    chosen = [server for server in grpc_servers(model, expected) if wanted is None or server.label in wanted]
    if not chosen:
        return {}
    tool = ensure_ghz()
    protoset, data = grpc_request_files(BENCH / "run")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    print(f"\ngRPC: ghz {GHZ_VERSION}, {GRPC_CALL}, raw_input_contents (tritonclient.grpc's default), one connection")
    for server in chosen:
        print(f"  {server.label:<18} {server.description}")

    def drive(running: Running, connections: int, seconds: float) -> Run:
        return ghz(tool, protoset, data, running, connections, seconds)

    return measure_each(chosen, lambda running: verify_grpc(running, expected), drive, concurrencies, args)


def grpc_report(results: dict[str, dict[int, Run]], concurrencies: Sequence[int]) -> None:
    """The gRPC pair side by side, and the target: >= TARGET_THROUGHPUT_RATIO x MLServer at equal or lower p99.
    With the floors measured too, each one's throughput over MLServer's is the most a server doing no more than
    it could show here: grpc-floor, grpc.aio as cutover runs it answering without work; grpc-model-floor, the
    same running the model on each call's raw inputs. A point whose throughput misses the target where a floor's
    misses it too is marked out of reach for that floor's kind of server."""
    if {"cutover-grpc", "mlserver-grpc"} - set(results):
        return
    ours, theirs = results["cutover-grpc"], results["mlserver-grpc"]
    floors = [
        (label, short, results[label])
        for label, short in (("grpc-floor", "floor"), ("grpc-model-floor", "model floor"))
        if label in results
    ]
    print()
    print("gRPC: cutover / mlserver (ghz, one connection, batching off in both)")
    print(
        f"{'concurrency':<12} {'req/s cutover':>14} {'req/s mlserver':>15} {'throughput x':>13} "
        f"{'p99 cutover':>12} {'p99 mlserver':>13} {'cpu us/call cutover':>20} {'mlserver':>9} {'cpu x':>6}"
        + "".join(f" {'req/s ' + short:>18} {short + ' x':>14} {'cutover/' + short:>20}" for _, short, _ in floors)
        + f"  target (>= {TARGET_THROUGHPUT_RATIO:g}x at equal or lower p99)"
    )
    kinds = {"grpc-floor": "grpc.aio as cutover runs it", "grpc-model-floor": "the model run on that grpc.aio"}
    for connections in concurrencies:
        a, b = ours[connections], theirs[connections]
        ratio = a.throughput / b.throughput
        met = ratio >= TARGET_THROUGHPUT_RATIO and a.p99_us <= b.p99_us
        verdict = "met" if met else "NOT met"
        line = (
            f"{connections:<12} {a.throughput:14.0f} {b.throughput:15.0f} {ratio:13.2f} "
            f"{a.p99_us / 1000:12.2f} {b.p99_us / 1000:13.2f} {cpu_per_call(a):20.0f} {cpu_per_call(b):9.0f} "
            f"{cpu_per_call(b) / cpu_per_call(a):6.2f}"
        )
        out_of_reach = ""
        for label, _, floor in floors:
            f = floor[connections]
            reach = f.throughput / b.throughput
            line += f" {f.throughput:18.0f} {reach:14.2f} {a.throughput / f.throughput:20.2f}"
            if ratio < TARGET_THROUGHPUT_RATIO and reach < TARGET_THROUGHPUT_RATIO and not out_of_reach:
                out_of_reach = f" (out of reach for {kinds[label]}: its floor is {reach:.2f}x)"
        print(f"{line}  {verdict}{out_of_reach}")
    print(
        "cpu us/call: the server's CPU time per answered call (its CPU share over its throughput), which other "
        "programs on the machine change less than req/s: a single-threaded server's req/s on an idle core is about "
        "1e6 over it, so 'cpu x' is the throughput ratio an idle machine would show"
    )
    if floors:
        print(
            "floor: grpc.aio answering one serialized answer to every call, nothing decoded or run; model floor: "
            "the same answering each call by onnxruntime on its raw inputs, nothing checked or counted "
            "(benchmarks/grpc_floor.py, grpc.aio with cutover's settings). 'x' is a floor's throughput over "
            "MLServer's, the most a server doing no more than it reaches here; 'cutover/' is cutover's share of it"
        )


def cpu_per_call(run: Run) -> float:
    """Microseconds of server CPU per answered request during a run."""
    return run.server_cpu / 100 / run.throughput * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32,64", help="wrk connections per point (default 1,8,32,64)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per point (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each point (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: concurrency 1,8, 3 s, 1 s warm-up")
    parser.add_argument("--servers", help="comma-separated subset of the servers (default: all)")
    parser.add_argument(
        "--attempts", type=int, default=3, help="tries per point while other programs take CPU (default 3)"
    )
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.duration, args.warmup = "1,8", 3.0, 1.0
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    BENCH.mkdir(exist_ok=True)
    wrk_version = ensure_wrk()
    versions = {"mlserver": ensure_peer(MLSERVER), "kserve": ensure_peer(KSERVE), "triton": ensure_peer(TRITON)}
    versions["cutover"] = package_versions(Path(sys.executable), ("cutover", "onnxruntime", "aiohttp"))
    tool = ensure_perf_analyzer()
    model = BENCH / "model" / "classifier.onnx"
    build_model(model)

    chosen = servers(model)
    if args.servers:
        wanted = args.servers.split(",")
        unknown = set(wanted) - {server.label for server in chosen} - set(GRPC_LABELS)
        if unknown:
            parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
        chosen = [server for server in chosen if server.label in wanted]

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    print(f"serving overhead: one small ONNX model (4 -> 3 softmax), batch 1 JSON requests, on {os.cpu_count()} cores")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"  cpu: {cpu}; python {platform.python_version()}; {wrk_version}; load average {load}")
    for name, found in versions.items():
        print(f"  {name}: " + ", ".join(f"{package} {version}" for package, version in found.items()))
    if pinning():
        print(f"  load: wrk, 1 thread, pinned to CPU {WRK_CPU}; each server (all its processes) on CPU {SERVER_CPU}")
    else:
        print("  load: wrk, 1 thread; fewer than 2 CPUs available, so nothing is pinned (figures are not comparable)")
    print("  onnxruntime everywhere: 1 intra-op thread, 1 inter-op thread, sequential, CPU provider")
    print(f"  body: {BODY}")
    print(f"  concurrency {','.join(map(str, concurrencies))}; {args.duration:g} s per point after {args.warmup:g} s")
    for server in chosen:
        print(f"  {server.label:<18} {server.description}")
    print(flush=True)

    limit = in_process(model, min(args.duration, 5.0))
    script = BENCH / "run" / "wrk.lua"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(WRK_SCRIPT.replace("{{BODY}}", BODY))

    results = measure_each(
        chosen,
        lambda running: verify(running, limit.expected),
        lambda running, connections, seconds: wrk(script, running.url, connections, seconds),
        concurrencies,
        args,
    )
    report(results, limit, concurrencies, args.duration, args.warmup)
    grpc_report(
        grpc_benchmark(model, limit.expected, args.servers.split(",") if args.servers else None, args), concurrencies
    )

    batching = [server for server in chosen if server.label == "cutover-batching"]
    if batching:
        print(f"\nperf_analyzer (tritonclient 2.51.0's, {tool}), its own report; batch sizes need a batching server")
        with on_cpu(WRK_CPU):
            passed = perf_analyzer(tool, batching[0], limit.expected, args.duration / 2)
        if not passed:
            raise SystemExit("perf_analyzer failed (above); the wrk figures stand")


if __name__ == "__main__":
    main()
