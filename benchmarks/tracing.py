"""What tracing costs on the REST path, off and on, in one run.

Three `cutover serve` processes serve the same ONNX model (cutover.serving.sample_models):

* off      no ``--otlp-endpoint``: the pipeline's stages call no OpenTelemetry code at all
* on       ``--otlp-endpoint`` to a local OTLP/HTTP receiver: every request traced (the SDK's
           default sampler), a SERVER span and one per stage, exported in batches
* on 1%    the same with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` and
           ``OTEL_TRACES_SAMPLER_ARG=0.01``, as a busy production server would sample

wrk (one thread, keep-alive connections, no ``traceparent``: each request is the root of its
trace) POSTs one row of Open Inference Protocol JSON to /v2/models/classifier/infer. The three
take turns in interleaved rounds, each first in turn, and each figure is the median over the rounds, so a burst of
load from elsewhere lands on all three alike. The receiver (on wrk's CPU) counts the spans it got,
to show they were exported and not dropped. Beside wall-clock figures, which other programs on
a shared machine disturb, each server's own CPU time per request (all its threads, the exporter's
included, read from /proc around each run) says what tracing costs in work. wrk and the receiver
are pinned to one CPU and the servers to another when two are available, as benchmarks/serving.py
does. Last, in process, what the tracing calls of one request cost when tracing is off (the
pipeline's six stage spans and the audit record's ids), beside OpenTelemetry's no-op tracer.

    .venv/bin/python benchmarks/tracing.py [--concurrency 1,8] [--duration 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.server
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path

# benchmarks/serving.py, from this script's own folder (first on sys.path when run as a script).
# Pinning, servers and wrk as the serving benchmark does them.
import serving as bench

SAMPLED = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}


class Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that counts the spans of each export (``GET /spans``: the count)."""

    spans = 0

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        exported = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
        Receiver.spans += sum(len(s.spans) for r in exported.resource_spans for s in r.scope_spans)
        self._answer(b"", "application/x-protobuf")

    def do_GET(self) -> None:
        self._answer(str(Receiver.spans).encode(), "text/plain")

    def _answer(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def receive(port: int) -> None:
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()


def spans_received(url: str) -> int:
    with urllib.request.urlopen(url + "/spans", timeout=5) as answer:
        return int(answer.read())


def exported(url: str) -> None:
    """Wait until the receiver has had no spans for half a second (the servers' exports done)."""
    count, quiet_since = spans_received(url), time.monotonic()
    while time.monotonic() - quiet_since < 0.5:
        time.sleep(0.1)
        now = spans_received(url)
        if now != count:
            count, quiet_since = now, time.monotonic()


def off_calls(repeat: int = 200_000) -> None:
    """Microseconds per request of the calls an untraced request makes (six ``Tracing.span``
    blocks and ``Tracing.ids``), and of the same six spans through OpenTelemetry's no-op tracer."""
    from opentelemetry.trace import NoOpTracer

    from cutover.serving.tracing import Tracing

    off, noop = Tracing(), NoOpTracer()

    def ours() -> None:
        for _ in range(6):
            with off.span("stage"):
                pass
        off.ids()

    def theirs() -> None:
        for _ in range(6):
            with noop.start_as_current_span("stage"):
                pass

    for name, calls in (("tracing off (cutover)", ours), ("OpenTelemetry's no-op tracer", theirs)):
        per_request = min(timeit.repeat(calls, number=repeat // 10, repeat=5)) / (repeat // 10) * 1e6
        print(f"{name}: {per_request:.2f} us per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8", help="wrk connections, comma-separated (default 1,8)")
    parser.add_argument("--duration", type=float, default=3, help="seconds per wrk run (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)  # run as the OTLP receiver on this port
    args = parser.parse_args()
    if args.receive:
        receive(args.receive)
        return
    concurrency = [int(c) for c in args.concurrency.split(",")]
    bench.ensure_wrk()
    folder = Path(tempfile.mkdtemp(prefix="cutover-tracing-"))
    model = folder / "classifier.onnx"
    bench.build_model(model)
    script = folder / "infer.lua"
    script.write_text(bench.WRK_SCRIPT.replace("{{BODY}}", bench.BODY))
    port = bench.free_port()
    collector = f"http://127.0.0.1:{port}"
    receiver = subprocess.Popen(bench.pinned(bench.WRK_CPU, [sys.executable, __file__, "--receive", str(port)]))
    serve = [str(bench.CUTOVER), "serve", "--name", bench.MODEL, "--version", "1", "--format", "onnx"]
    serve += ["--host", "127.0.0.1", "--model-uri", str(model), "--threads", "1", "--device", "cpu"]

    def server(label: str, flags: list[str], env: dict[str, str]) -> bench.Server:
        return bench.Server(label, label, lambda ports: [*serve, "--port", str(ports["http"]), *flags], env=env)

    configs = [
        server("off", [], {}),
        server("on", ["--otlp-endpoint", collector], {}),
        server("on 1%", ["--otlp-endpoint", collector], SAMPLED),
    ]
    running = [bench.Running(config) for config in configs]
    runs: dict[tuple[str, int], list[bench.Run]] = {}
    try:
        for each in running:
            each.wait_ready()
        for round in range(args.rounds):
            for connections in concurrency:
                for each in running[round % 3 :] + running[: round % 3]:  # each goes first in turn
                    used = bench.cpu_seconds(each.process.pid)
                    run = bench.wrk(script, each.url, connections, args.duration)
                    if run.errors:
                        raise SystemExit(f"{each.server.label}: {run.errors} errors in {run.requests} requests")
                    exported(collector)  # so that a traced server's export does not run into the next one's
                    run.server_cpu = (bench.cpu_seconds(each.process.pid) - used) / run.requests * 1e6
                    runs.setdefault((each.server.label, connections), []).append(run)
        for each in running:
            each.stop()  # exports what each still holds
        spans = spans_received(collector)
    finally:
        for each in running:
            each.stop()
        receiver.terminate()
    off_calls()
    print(f"pinned: {bench.pinning()}; {args.rounds} rounds of {args.duration:g} s; spans received: {spans}")
    header = f"{'server':8} {'c':>3} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'req/s vs off':>13} {'p50 +us':>8}"
    print(header + f" {'CPU us/req':>10} {'CPU +us':>8}")
    for connections in concurrency:
        base = runs[("off", connections)]
        base_throughput = statistics.median(r.throughput for r in base)
        base_p50 = statistics.median(r.p50_us for r in base)
        base_cpu = statistics.median(r.server_cpu for r in base)
        for each in running:
            measured = runs[(each.server.label, connections)]
            throughput = statistics.median(r.throughput for r in measured)
            p50 = statistics.median(r.p50_us for r in measured)
            p99 = statistics.median(r.p99_us for r in measured)
            cpu = statistics.median(r.server_cpu for r in measured)
            print(
                f"{each.server.label:8} {connections:>3} {throughput:>8.0f} {p50 / 1000:>7.3f} {p99 / 1000:>7.3f} "
                f"{throughput / base_throughput:>12.2f}x {p50 - base_p50:>8.0f} {cpu:>10.0f} {cpu - base_cpu:>8.0f}"
            )


if __name__ == "__main__":
    main()
