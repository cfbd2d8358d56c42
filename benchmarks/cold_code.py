"""What it costs to run code that has not run for a while: the CPU time of one piece of work done
back to back, and done after a gap in which the thread either slept or kept its CPU busy on other
code (a spin loop), side by side in one run. A server between the calls of a client with one call
in flight, or between the tokens of a streamed answer, meets such gaps.

    .venv/bin/python benchmarks/cold_code.py [--calls 2000] [--gaps-us 0,200,1000,20000] [--model FILE]

The work, each on the servers' CPU (benchmarks/serving.py's SERVER_CPU):

* ``ModelInfer``: cutover serve's gRPC handler answering the serving benchmark's fixed input in
  this process (the whole pipeline: decode, checks, onnxruntime, statistics, metrics, encode);
* ``onnxruntime``: the model's session run alone, with serve's settings (``--threads 1``);
* ``numpy``: a two-element array made and summed.

Each is timed by the thread's own CPU clock, so the time another program takes during the gap is
not counted: what grows with the gap is the work's own cost. On a machine that keeps a process's
code and data warm for milliseconds, every row reads about 1x. Where it does not (a virtual machine
whose host runs other work on the same core meanwhile), the work after a gap costs a multiple of the
same work back to back. Keeping the CPU busy through the gap (spun) takes some of that away and
not all of it: the time since this code last ran counts, not only whether the CPU idled. Every
request that finds its server's code cold pays it: the one-call-in-flight points of the serving
benchmarks and the first token of a streamed answer at a model's pace, and their floors
(grpc-floor, the streaming relays and proxies) on their own, smaller, work.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# benchmarks/serving.py, from this script's own folder (first on sys.path when run as a script).
import serving as bench


async def model_infer(model: Path) -> Callable[[], Any]:
    """cutover serve's gRPC ModelInfer over ``model``, called directly: one call per invocation."""
    from tritonclient.grpc import service_pb2 as pb

    from cutover.serving.grpc_server import InferenceService
    from cutover.serving.server import ModelServer, ServeConfig

    config = ServeConfig(
        name=bench.MODEL,
        version="1",
        format="onnx",
        revision="bench",
        namespace="bench",
        host="127.0.0.1",
        port=0,
        model_uri=str(model),
        threads=1,
        device="cpu",
    )
    server = ModelServer(config)
    await server.load()
    service = InferenceService(server)
    request = pb.ModelInferRequest(model_name=bench.MODEL, raw_input_contents=[np.float32([bench.FEATURES]).tobytes()])
    request.inputs.add(name="input", datatype="FP32", shape=[1, 4])

    class Context:  # what the handler asks of grpc.aio's context on a call that succeeds
        def invocation_metadata(self) -> tuple[()]:
            return ()

        def set_trailing_metadata(self, metadata: object) -> None:
            pass

    context = Context()
    serialized = request.SerializeToString()
    # The model runs on the event loop's thread, as it does for a small model under load, so that the
    # thread's clock covers the whole call: after long gaps its moving call time would pass
    # the adapter's inline limit and send it to the model's own thread (serving/adapters/base.py).
    server.loaded().model.adapter.INLINE_SECONDS = float("inf")
    for _ in range(100):  # the first call goes to the model's thread until its call time is known
        await service.ModelInfer(request, context, serialized)

    def call() -> Any:
        step = service.ModelInfer(request, context, serialized)
        try:
            step.send(None)  # nothing in the call waits: it ends at the first step
        except StopIteration as done:
            return done.value
        raise RuntimeError("ModelInfer waited, which this benchmark cannot time on the thread's clock")

    return call


def session_run(model: Path) -> Callable[[], Any]:
    session = bench.serve_session(model)
    features = {"input": np.float32([bench.FEATURES])}
    return lambda: session.run(None, features)


def spin(seconds: float) -> None:
    """Keep the CPU busy on this loop, and on nothing else, for ``seconds``."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def cpu_us(work: Callable[[], Any], gap_s: float, calls: int, wait: Callable[[float], None]) -> float:
    """The median CPU microseconds of one call of ``work``, each after ``wait(gap_s)``."""
    taken = []
    for _ in range(calls):
        if gap_s:
            wait(gap_s)
        started = time.thread_time_ns()
        work()
        taken.append(time.thread_time_ns() - started)
    return statistics.median(taken) / 1000


async def measure(model: Path, gaps: list[float], calls: int) -> None:
    """Print the table (in a running event loop, as ModelInfer runs in cutover serve)."""
    works = {
        "ModelInfer": await model_infer(model),
        "onnxruntime": session_run(model),
        "numpy": lambda: np.array([1.0, 2.0]).sum(),
    }
    for work in works.values():
        for _ in range(500):  # warm: first calls allocate
            work()
    print(f"CPU per call, median of {calls} (microseconds; x: over back to back), on CPU {bench.SERVER_CPU}")
    print(f"{'work':<12} {'gap':<6}" + "".join(f"{f'after {gap * 1e6:g} us':>20}" for gap in gaps))
    for name, work in works.items():
        warm = cpu_us(work, 0, calls, time.sleep)  # back to back: one figure for both kinds of gap
        for mode, wait in (("slept", time.sleep), ("spun", spin)):
            costs = [
                cpu_us(work, gap, calls if gap < 0.01 else max(50, calls // 20), wait) if gap else warm for gap in gaps
            ]
            cells = "".join(f"{f'{cost:.1f} ({cost / warm:.1f}x)':>20}" for cost in costs)
            print(f"{name:<12} {mode:<6}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per work and gap (default 2000)")
    parser.add_argument("--gaps-us", default="0,200,1000,20000", help="gaps before each call, in microseconds")
    parser.add_argument("--model", type=Path, help="the serving benchmark's model (default: built in .bench/model/)")
    args = parser.parse_args()
    model = args.model or bench.BENCH / "model" / "classifier.onnx"
    if not model.exists():
        bench.build_model(model)
    with bench.on_cpu(bench.SERVER_CPU):
        asyncio.run(measure(model, [int(gap) / 1e6 for gap in args.gaps_us.split(",")], args.calls))


if __name__ == "__main__":
    main()
