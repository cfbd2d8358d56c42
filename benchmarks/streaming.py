"""What streaming chat adds to the time to the first token: an OpenAI-compatible upstream that
streams (a stand-in for vLLM: a role chunk, then one word per event), called directly, through
`cutover serve`, through `cutover gateway` in front of that `cutover serve`, and through a
`cutover serve` with a SafetyPolicy (every filter), one request of each in turn, in one run.

    .venv/bin/python benchmarks/streaming.py [--requests 500] [--paced-requests 40] [--token-ms 0,20]

The time to the first token is from sending the request to reading the first event that
carries answer text, each request on a kept-alive connection, read to its end. With
``--token-ms 0`` the upstream writes every word at once, so what is measured is what each hop
adds; with a model's pace (20 ms a token) the SafetyPolicy's cost shows: it releases no text
before the first sentence is complete and screened (``--paced-requests`` of them: each takes
the upstream's whole answer, 0.7 s). Target: the whole path (the gateway, then `cutover serve`)
adds at most 1 ms to the upstream's own time to the first token; each hop's share is printed.
Beside them, two byte relays (uvloop, nothing parsed) in the places of the gateway and `cutover
serve` give the floor: what two hops add on this machine whatever runs in them, so the report
can tell the machine's share of the added time from cutover's.
The upstream and the client share CPU 0, the servers and the gateway CPU 1, when both are there
(``--float``: nowhere in particular, for a machine where other work is pinned to CPU 1).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
MODEL = "assistant"
KEY = "cut_streaming-benchmark"
TARGET_ADDED_MS = 1.0
ANSWER = (
    "Sure, here is a short answer to your question about the weather in town today. "
    "It will be sunny in the morning and cloudy later on. Take a light jacket with you."
)
FIRST_WORD = ANSWER.split(" ")[0]
CHAT_PATH = "/v1/chat/completions"


# ---- the processes ------------------------------------------------------------------------------


async def upstream(port: int, token_ms: float) -> None:
    """An OpenAI-compatible server streaming ANSWER a word per event, ``token_ms`` apart."""
    from aiohttp import web

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench-llm"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
        deltas = [{"role": "assistant", "content": ""}]
        deltas += [{"content": word if i == 0 else f" {word}"} for i, word in enumerate(ANSWER.split(" "))]
        for i, delta in enumerate(deltas):
            if i > 1 and token_ms:
                await asyncio.sleep(token_ms / 1000)
            event = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        end = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post(CHAT_PATH, chat)
    await _serve_forever(app, port)


async def gateway(port: int, backend: str) -> None:
    """`cutover gateway`'s app with one route (MODEL to ``backend``) and one API key, as the
    operator's table and a key Secret would give it, without the control plane."""
    from cutover.serving.gateway.app import Gateway, GatewayConfig
    from cutover.serving.gateway.keys import secret_manifest

    gw = Gateway(GatewayConfig(host="127.0.0.1", port=port))
    manifest = secret_manifest("bench-key", "bench", KEY, "admin")
    data = {k: base64.b64encode(v.encode()).decode() for k, v in manifest["stringData"].items()}
    gw.keys.replace([{"metadata": manifest["metadata"], "data": data}])
    gw.unlisted = set()
    gw.set_resolver(lambda namespace, service: backend)
    traffic = [{"revision": "r1", "role": "stable", "weight": 100, "service": "assistant-r1"}]
    gw.replace_deployments(
        [
            {
                "metadata": {"namespace": "bench", "name": MODEL},
                "spec": {"model": {"name": MODEL}},
                "status": {"traffic": traffic},
            }
        ]
    )
    try:
        await _serve_forever(gw.app(), port)
    finally:
        await gw.close()


async def _serve_forever(app: object, port: int) -> None:
    from aiohttp import web

    from cutover.serving.lifecycle import until_signalled

    assert isinstance(app, web.Application)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await until_signalled()
    await runner.cleanup()


async def relay(port: int, target: int) -> None:
    """A byte relay: each connection accepted on ``port`` gets one of its own to ``target``, and
    whatever either side sends is written to the other as it is read, nothing parsed. Two of them
    in the places of the gateway and cutover serve are the floor of two hops on this machine."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
        finally:
            writer.close()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        onward_reader, onward_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(reader, onward_writer), pipe(onward_reader, writer))

    server = await asyncio.start_server(connected, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def proxy(port: int, target: int) -> None:
    """An HTTP proxy written with aiohttp, the HTTP library of the gateway and cutover serve,
    doing the least such a hop can: each request's body is posted to ``target`` on a kept-alive
    connection, and the answer's bytes are written back as they come, nothing parsed or checked.
    It is aiohttp at its leanest: the low-level server (no application, router or middleware), a
    client without cookies, timeouts or default headers, URLs built once, the headers sent with
    the first bytes. Two of them in the places of the gateway and cutover serve are the floor of
    two aiohttp hops."""
    import aiohttp
    from aiohttp import web
    from yarl import URL

    from cutover.serving.lifecycle import until_signalled

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
    )
    urls = {path: URL(f"http://127.0.0.1:{target}{path}", encoded=True) for path in ("/v1/models", CHAT_PATH)}
    json_body = {"Content-Type": "application/json"}

    class Streamed(web.StreamResponse):
        _send_headers_immediately = False  # the headers go out with the first bytes, as serve's EventStream

    async def forward(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            async with session.get(urls["/v1/models"]) as upstream:
                return web.Response(body=await upstream.read(), content_type=upstream.content_type)
        body = await request.read()
        async with session.post(urls[CHAT_PATH], data=body, headers=json_body) as upstream:
            response = Streamed(status=upstream.status, headers={"Content-Type": upstream.headers["Content-Type"]})
            await response.prepare(request)
            while data := await upstream.content.readany():
                await response.write(data)
            await response.write_eof()
            return response

    server = await asyncio.get_running_loop().create_server(web.Server(forward, access_log=None), "127.0.0.1", port)
    try:
        await until_signalled()
    finally:
        server.close()
        await session.close()


def role(argv: list[str]) -> None:
    """``--role upstream PORT TOKEN_MS``, ``--role gateway PORT BACKEND``, ``--role relay PORT
    TARGET_PORT`` or ``--role proxy PORT TARGET_PORT``: run one process on uvloop."""
    import uvloop

    kind, port = argv[0], int(argv[1])
    if kind in ("relay", "proxy"):
        main = (relay if kind == "relay" else proxy)(port, int(argv[2]))
    else:
        main = upstream(port, float(argv[2])) if kind == "upstream" else gateway(port, argv[2])
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


# ---- the client -----------------------------------------------------------------------------------


class Client:
    """One kept-alive HTTP/1.1 connection that posts a streamed chat request and times the first
    event carrying answer text; the answer is read to its end (chunked, as every hop sends it)."""

    def __init__(self, port: int, path: str, body: bytes, headers: str = "") -> None:
        self.port = port
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def first_token(self) -> float:
        """Seconds to the first answer text, after which the answer is read whole."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        started = time.perf_counter()
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
            raise SystemExit(f"unexpected answer: {head!r}")
        first = None
        while True:  # chunked transfer: size line, data, CRLF; the last chunk has size 0
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            data = await self.reader.readexactly(size + 2)
            if first is None and FIRST_WORD.encode() in data:
                first = time.perf_counter() - started
            if size == 0:
                break
        if first is None:
            raise SystemExit(f"no answer text from port {self.port}")
        return first


def run(args: argparse.Namespace, bench: ModuleType, safety: ModuleType) -> None:
    work = Path(tempfile.mkdtemp(prefix="cutover-bench-streaming-"))
    processes: list[subprocess.Popen[bytes]] = []

    def start(cpu: int, command: list[str], name: str) -> subprocess.Popen[bytes]:
        with (work / f"{name}.log").open("wb") as out:
            placed = list(command) if args.float else bench.pinned(cpu, command)
            process = subprocess.Popen(placed, stdout=out, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    def ready(port: int, path: str, process: subprocess.Popen[bytes], name: str) -> None:
        bench.wait_ready(f"http://127.0.0.1:{port}", name, process, work / f"{name}.log", path, timeout=120)

    policy = work / "policy.json"
    policy.write_text(json.dumps(safety.policy_document(["crisis", "toxicity", "pii", "advice", "bias"])))
    try:
        for token_ms in args.token_ms:
            names = ("upstream", "serve", "guarded", "gateway", "near", "far", "near proxy", "far proxy")
            ports = {name: bench.free_port() for name in names}
            me = [sys.executable, str(Path(__file__).resolve()), "--role"]
            up = start(bench.WRK_CPU, [*me, "upstream", str(ports["upstream"]), str(token_ms)], "upstream")
            ready(ports["upstream"], "/v1/models", up, "upstream")
            for name, extra in (("serve", []), ("guarded", ["--safety-policy", str(policy)])):
                serve = [
                    str(REPO / ".venv/bin/cutover"), "serve", "--name", MODEL, "--version", "1", "--format", "llm",
                    "--upstream", f"http://127.0.0.1:{ports['upstream']}", "--upstream-model", "bench-llm",
                    "--host", "127.0.0.1", "--port", str(ports[name]), "--threads", "1", *extra,
                ]  # fmt: skip
                ready(ports[name], "/v2/health/ready", start(bench.SERVER_CPU, serve, name), name)
            backend = f"http://127.0.0.1:{ports['serve']}"
            gw = start(bench.SERVER_CPU, [*me, "gateway", str(ports["gateway"]), backend], "gateway")
            ready(ports["gateway"], "/v2/health/ready", gw, "gateway")
            # The floor: two byte relays where the gateway and cutover serve run (near: the client's side).
            far = start(bench.SERVER_CPU, [*me, "relay", str(ports["far"]), str(ports["upstream"])], "far relay")
            near = start(bench.SERVER_CPU, [*me, "relay", str(ports["near"]), str(ports["far"])], "near relay")
            ready(ports["near"], "/v1/models", near, "relays")
            # The floor of the HTTP library: two aiohttp proxies in the same places.
            proxies = [
                start(bench.SERVER_CPU, [*me, "proxy", str(ports[name]), str(ports[onward])], name)
                for name, onward in (("far proxy", "upstream"), ("near proxy", "far proxy"))
            ]
            ready(ports["near proxy"], "/v1/models", proxies[1], "proxies")

            body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True})
            path = CHAT_PATH
            clients = {
                "upstream directly": Client(ports["upstream"], path, body.encode()),
                "cutover serve": Client(ports["serve"], path, body.encode()),
                "gateway → serve": Client(ports["gateway"], path, body.encode(), f"Authorization: Bearer {KEY}\r\n"),
                "serve + SafetyPolicy": Client(ports["guarded"], path, body.encode()),
                "two byte relays": Client(ports["near"], path, body.encode()),
                "two aiohttp proxies": Client(ports["near proxy"], path, body.encode()),
            }
            requests = args.paced_requests if token_ms else args.requests
            print(f"upstream {token_ms:g} ms a token; {requests} requests each, interleaved", flush=True)
            for name, process, cpu in (
                ("upstream", up, bench.WRK_CPU),
                ("cutover serve", processes[1], bench.SERVER_CPU),
                ("cutover serve + policy", processes[2], bench.SERVER_CPU),
                ("cutover gateway", gw, bench.SERVER_CPU),
                ("far relay", far, bench.SERVER_CPU),
                ("near relay", near, bench.SERVER_CPU),
                ("far proxy", proxies[0], bench.SERVER_CPU),
                ("near proxy", proxies[1], bench.SERVER_CPU),
            ):
                if not args.float:
                    print("  " + bench.check_cpu(name, [process.pid], cpu))
            before = {
                name: bench.cpu_seconds(process.pid) for name, process in (("serve", processes[1]), ("gateway", gw))
            }
            with contextlib.nullcontext() if args.float else bench.on_cpu(bench.WRK_CPU):  # beside the upstream
                times = asyncio.run(measure(clients, requests, args.warmup if not token_ms else 2))
            medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
            for name, values in times.items():
                p90 = statistics.quantiles(values, n=10)[-1] * 1000
                print(f"  {name:<22} time to first token p50 {medians[name]:8.3f} ms  p90 {p90:8.3f} ms")
            # Each round's difference, then their median: the rounds share whatever else the machine ran.
            whole = paired(times["gateway → serve"], times["upstream directly"])
            verdict = "met" if whole <= TARGET_ADDED_MS else "NOT met"
            print(
                f"  the gateway and cutover serve add {whole:.3f} ms to the upstream's (median of paired rounds):"
                f" target {TARGET_ADDED_MS:g} ms {verdict}"
            )
            serve_added = paired(times["cutover serve"], times["upstream directly"])
            added = paired(times["gateway → serve"], times["cutover serve"])
            print(f"    of which cutover serve {serve_added:.3f} ms, the gateway {added:.3f} ms")
            floor = paired(times["two byte relays"], times["upstream directly"])
            above = paired(times["gateway → serve"], times["two byte relays"])
            print(
                f"  two byte relays in their places add {floor:.3f} ms (the floor of two hops here): "
                f"cutover's own work adds {above:.3f} ms above it"
            )
            library = paired(times["two aiohttp proxies"], times["upstream directly"])
            beyond = paired(times["gateway → serve"], times["two aiohttp proxies"])
            print(
                f"  two aiohttp proxies in their places add {library:.3f} ms (the floor of two hops written with"
                f" aiohttp, nothing parsed): cutover adds {beyond:.3f} ms above them"
            )
            # CPU time is what a busy machine cannot inflate: the gateway's own work per streamed answer.
            rounds = requests + (args.warmup if not token_ms else 2)
            spent = {name: (bench.cpu_seconds(process.pid) - before[name]) / rounds * 1000 for name, process in (
                ("serve", processes[1]), ("gateway", gw))}  # fmt: skip
            # cutover serve answered its own requests and the gateway's: two per round.
            print(
                f"  CPU per streamed answer: cutover serve {spent['serve'] / 2:.3f} ms, "
                f"gateway {spent['gateway']:.3f} ms"
            )
            held = paired(times["serve + SafetyPolicy"], times["cutover serve"])
            print(f"  the SafetyPolicy adds {held:.3f} ms: the first sentence is held until complete and screened")
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
            processes.clear()
    finally:
        for process in processes:
            process.kill()


def paired(slower: list[float], faster: list[float]) -> float:
    """The median of the rounds' differences, in milliseconds."""
    return statistics.median(a - b for a, b in zip(slower, faster, strict=True)) * 1000


async def measure(clients: dict[str, Client], requests: int, warmup: int) -> dict[str, list[float]]:
    """Each client's times to the first token, one request of each in turn."""
    times: dict[str, list[float]] = {name: [] for name in clients}
    for round_ in range(warmup + requests):
        for name, client in clients.items():
            took = await client.first_token()
            if round_ >= warmup:
                times[name].append(took)
    return times


def main() -> None:
    if sys.argv[1:2] == ["--role"]:
        role(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--paced-requests", type=int, default=40)
    parser.add_argument(
        "--float", action="store_true", help="pin nothing (when other work holds CPU 1, every hop there waits for it)"
    )
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--token-ms", type=lambda s: [float(v) for v in s.split(",")], default=[0.0, 20.0])
    # benchmarks/serving.py and safety.py, from this script's own folder (first on sys.path when run as
    # a script); imported here, so the --role processes above start without them.
    import safety

    import serving

    run(parser.parse_args(), serving, safety)


if __name__ == "__main__":
    main()
