"""The floor of cutover's gRPC server: grpc.aio as ``cutover serve`` runs it, returning one
ModelInfer answer, serialized once, for every call, with nothing decoded, checked or run.
``benchmarks/serving.py`` starts it as ``grpc-floor`` beside cutover serve and MLServer (both
grpc.aio servers), so the report shows what grpc.aio allows on this machine with cutover's
settings, and what is cutover's own work.

It runs as cutover serve runs its gRPC port: uvloop, grpc's poll-based I/O and the poller thread
at nice 10 (``cutover.serving.grpc_threads``), the same server options; it exits rather than run
otherwise. Those settings are chosen for calls in flight: at one call in flight the same server
with its poller left at nice 0 was faster in 4 of 5 alternated pairs, by up to 28%
(``benchmarks/README.md``, "gRPC"), so there this is the floor of cutover's configuration, not
of every grpc.aio server. An
HTTP port on the same event loop answers ``/v2/health/ready`` for the benchmark's readiness
check, and nothing else.

    .venv/bin/python benchmarks/grpc_floor.py (--answer FILE | --model FILE) --grpc-port N --http-port M

``--answer`` holds a serialized ``inference.ModelInferResponse`` (the benchmark writes the one its
fixed input should get, so the answer check passes). With ``--model`` (an ONNX model of FP32
inputs and outputs) it is instead the floor of answering with the model, ``grpc-model-floor``:
each call is parsed, its raw inputs are read as sent, onnxruntime runs them as cutover serve's
session does (``--threads 1``, sequential), and the outputs go back raw. That is the least work
any server running the model in process does; what cutover serve spends above it is what its
checks, statistics, metrics and request ids cost.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from cutover.serving.grpc_threads import poller_yields, use_poll_io

SERVICE = "inference.GRPCInferenceService"


def model_answers(path: Path) -> Callable[[bytes], bytes]:
    """A serialized ModelInferRequest's serialized answer by the ONNX model at ``path``: raw FP32
    inputs in, raw FP32 outputs out, nothing checked (a request the model cannot take raises)."""
    import numpy as np
    from tritonclient.grpc import service_pb2 as pb

    # benchmarks/serving.py, from this script's own folder (first on sys.path when run as a script).
    import serving as bench

    session = bench.serve_session(path)
    names = [output.name for output in session.get_outputs()]

    def answer(raw: bytes) -> bytes:
        request = pb.ModelInferRequest.FromString(raw)
        feeds = {
            tensor.name: np.frombuffer(data, "<f4").reshape(tuple(tensor.shape))
            for tensor, data in zip(request.inputs, request.raw_input_contents, strict=True)
        }
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        for name, value in zip(names, session.run(names, feeds), strict=True):
            response.outputs.add(name=name, datatype="FP32", shape=value.shape)
            response.raw_output_contents.append(value.tobytes())
        return response.SerializeToString()

    return answer


def fixed_answer(answer: bytes) -> Callable[[bytes], bytes]:
    """``answer`` to every request, unread."""
    return lambda request: answer


async def serve(answer: Callable[[bytes], bytes], grpc_port: int, http_port: int) -> None:
    """Serve ``answer(request)`` to every ModelInfer call on ``grpc_port`` and readiness on
    ``http_port`` until cancelled."""
    import grpc
    from aiohttp import web

    from cutover.serving.config import ServeConfig
    from cutover.serving.grpc_server import server_options

    async def model_infer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return answer(request)

    # No (de)serializers: the request stays bytes and the answer goes out as it is.
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)}
    )

    async def ready(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/v2/health/ready", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    server = grpc.aio.server(options=server_options(ServeConfig.max_request_bytes))  # serve's, by default
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    try:
        await server.start()
        if not poller_yields():
            raise SystemExit("grpc-floor: no grpc.aio poller thread to lower, unlike cutover serve")
        await web.TCPSite(runner, "127.0.0.1", http_port).start()
        await server.wait_for_termination()
    finally:
        await runner.cleanup()
        await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--answer", type=Path, help="a serialized inference.ModelInferResponse, the answer to every call"
    )
    given.add_argument("--model", type=Path, help="an ONNX model (FP32) to answer each call with")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    if not use_poll_io() and "grpc" in sys.modules:  # an operator's own GRPC_EXPERIMENTS stands, as in serve
        raise SystemExit("grpc-floor: grpc was imported before its poll-based I/O was asked for, unlike cutover serve")
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        answer = model_answers(args.model) if args.model else fixed_answer(args.answer.read_bytes())
        runner.run(serve(answer, args.grpc_port, args.http_port))


if __name__ == "__main__":
    main()
