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

    .venv/bin/python benchmarks/grpc_floor.py --answer FILE --grpc-port N --http-port M

``--answer`` holds a serialized ``inference.ModelInferResponse`` (the benchmark writes the one its
fixed input should get, so the answer check passes).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from cutover.serving.grpc_threads import poller_yields, use_poll_io

SERVICE = "inference.GRPCInferenceService"


async def serve(answer: bytes, grpc_port: int, http_port: int) -> None:
    """Serve ``answer`` to every ModelInfer call on ``grpc_port`` and readiness on ``http_port``
    until cancelled."""
    import grpc
    from aiohttp import web

    from cutover.serving.config import ServeConfig
    from cutover.serving.grpc_server import server_options

    async def model_infer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return answer

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
    parser.add_argument("--answer", type=Path, required=True, help="a serialized inference.ModelInferResponse")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    if not use_poll_io() and "grpc" in sys.modules:  # an operator's own GRPC_EXPERIMENTS stands, as in serve
        raise SystemExit("grpc-floor: grpc was imported before its poll-based I/O was asked for, unlike cutover serve")
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.answer.read_bytes(), args.grpc_port, args.http_port))


if __name__ == "__main__":
    main()
