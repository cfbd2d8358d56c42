"""The floor of a gRPC server on grpc.aio: one ModelInfer answer, serialized once, returned for
every call, with nothing decoded, checked or run. ``benchmarks/serving.py`` starts it as
``grpc-floor`` beside cutover serve and MLServer (both grpc.aio servers) so the report shows what
grpc.aio alone allows on this machine: no server built on it answers faster than this one.

It runs as cutover serve runs its gRPC port: uvloop, grpc's poll-based I/O and the poller thread
at nice 10 (``cutover.serving.grpc_threads``), the same server options. An HTTP port on the same
event loop answers ``/v2/health/ready`` for the benchmark's readiness check, and nothing else.

    .venv/bin/python benchmarks/grpc_floor.py --answer FILE --grpc-port N --http-port M

``--answer`` holds a serialized ``inference.ModelInferResponse`` (the benchmark writes the one its
fixed input should get, so the answer check passes).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from cutover.serving.grpc_threads import poller_yields, use_poll_io

SERVICE = "inference.GRPCInferenceService"


async def serve(answer: bytes, grpc_port: int, http_port: int) -> None:
    """Serve ``answer`` to every ModelInfer call on ``grpc_port`` and readiness on ``http_port``
    until cancelled."""
    import grpc
    from aiohttp import web

    async def model_infer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return answer

    # No (de)serializers: the request stays bytes and the answer goes out as it is.
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)}
    )
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.max_send_message_length", -1)]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    poller_yields()

    async def ready(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/v2/health/ready", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    try:
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
    use_poll_io()  # before grpc's first import
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.answer.read_bytes(), args.grpc_port, args.http_port))


if __name__ == "__main__":
    main()
