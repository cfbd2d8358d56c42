"""Bad input against the running server: random bytes, random JSON, near-valid requests with one
field broken, lying header lengths, truncated binary bodies and oversized payloads. Every answer
is 2xx or a 4xx with a JSON error; the process never answers 5xx, never dies, and does not grow.
The same requests, with random keys, paths and headers, through the gateway in front of it."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutover.serving import sample_models
from cutover.serving.gateway.app import Gateway, GatewayConfig
from cutover.serving.http import JsonErrorsRunner
from cutover.serving.protocol import DATATYPES, HEADER_LENGTH

from .support import Serving, key_secret, samples_sum

MAX_BYTES = 200_000
PATHS = ["/v2/models/classifier/infer", "/v2/models/classifier/versions/1/infer", "/v1/chat/completions"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    workdir = tmp_path_factory.mktemp("fuzz")
    model = sample_models.onnx_classifier(workdir / "good.onnx", "good")
    inputs = json.dumps([{"name": "input", "datatype": "FP32", "shape": [-1, 4], "range": {"min": -100, "max": 100}}])
    statistics = sample_models.write_training_statistics(workdir / "statistics.json")
    ood = json.dumps({"statisticsUri": str(statistics), "input": "input", "threshold": 4})
    serving = Serving(
        workdir,
        "--format",
        "onnx",
        "--model-uri",
        str(model),
        "--inputs",
        inputs,
        "--max-batch-size",
        "8",
        "--max-request-bytes",
        str(MAX_BYTES),
        "--audit-log",
        str(workdir / "audit.jsonl"),
        "--ood",  # scoring every accepted request: an empty batch once made it fail (500)
        ood,
    ).start()
    yield serving
    assert serving.stop() == 0


class Client:
    """One keep-alive connection, reopened when the server closes it (as after a 413)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.connection.request("POST", path, body=body, headers=headers)
                response = self.connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def check(status: int, body: bytes) -> None:
    assert status < 500, f"{status}: {body[:300]!r}"
    if status >= 400:
        error = json.loads(body)
        assert isinstance(error, dict), error
        reason = error.get("error")  # OpenAI's error object on /v1, {"error": "..."} on /v2
        reason = reason.get("message") if isinstance(reason, dict) else reason
        assert isinstance(reason, str) and reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A valid request with one or more of its fields replaced by something plausible but wrong."""
    rows = draw(st.integers(0, 4))
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(["input", "input", "Input", ""])),
        "datatype": draw(st.sampled_from([*DATATYPES, "BF16", "FP32", "FP32", "float"])),
        "shape": draw(st.sampled_from([[rows, 4], [rows, 4], [4], [rows, 4, 1], [-1, 4], [2**40, 4]])),
    }
    binary = draw(st.booleans())
    payload = b""
    if binary:
        payload = draw(st.binary(max_size=64))
        tensor["parameters"] = {"binary_data_size": draw(st.sampled_from([len(payload), 0, 16, -1, "16"]))}
    else:
        tensor["data"] = draw(
            st.one_of(
                st.lists(st.floats(-200, 200, allow_nan=False), min_size=rows * 4, max_size=rows * 4),
                st.lists(st.floats(-200, 200, allow_nan=False), max_size=20),
                json_values,
            )
        )
    request: dict[str, Any] = {"inputs": [tensor]}
    if draw(st.booleans()):
        request["outputs"] = draw(st.sampled_from([[{"name": "probabilities"}], [{"name": "x"}], "all", [1]]))
    if draw(st.booleans()):
        request["parameters"] = draw(st.sampled_from([{"binary_data_output": True}, {"priority": 3}, [], "p"]))
    header = json.dumps(request).encode()
    length = draw(st.sampled_from([str(len(header)), str(len(header) + 3), "0", "-5", "x", None]))
    headers = {HEADER_LENGTH: length} if binary and length is not None else {}
    return header + payload, headers


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=512), path=st.sampled_from(PATHS), length=st.none() | st.integers(-2, 600).map(str))
def test_random_bytes(server: Serving, body: bytes, path: str, length: str | None) -> None:
    client = Client(server.port)
    check(*client.post(path, body, {HEADER_LENGTH: length} if length is not None else {}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values, path=st.sampled_from(PATHS))
def test_random_json(server: Serving, value: Any, path: str) -> None:
    check(*Client(server.port).post(path, json.dumps(value).encode(), {}))


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=near_valid())
def test_near_valid_requests(server: Serving, request: tuple[bytes, dict[str, str]]) -> None:
    check(*Client(server.port).post(PATHS[0], *request))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_oversized_bad_and_good_requests_in_a_loop_leave_no_leak_and_a_live_server(server: Serving) -> None:
    assert server.process is not None
    client = Client(server.port)
    good = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 1.0, -2.0, 0.5]}]}
    ).encode()
    huge = b'{"inputs": [' + b" " * (MAX_BYTES + 10) + b"]}"
    truncated = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]}
    ).encode()

    def round_of_requests() -> None:
        for _ in range(100):
            check(*client.post(PATHS[0], good, {}))
            status, body = client.post(PATHS[0], huge, {})
            assert status == 413, body
            status, body = client.post(PATHS[0], truncated + b"\x00" * 7, {HEADER_LENGTH: str(len(truncated))})
            assert status == 400 and b"truncated" in body

    round_of_requests()  # warm: allocator pools, metric series, caches
    before = rss_kib(server.process.pid)
    for _ in range(5):
        round_of_requests()
    after = rss_kib(server.process.pid)
    assert after - before < 20_000, f"RSS grew by {after - before} KiB over 1500 requests"
    assert server.get("/v2/health/ready")[0] == 200
    assert server.metric("cutover_serving_requests_total", code="500") == 0


@pytest.fixture(scope="module")
def gateway(server: Serving) -> Iterator[int]:
    """`cutover gateway`'s app on its own loop and thread, in front of the fuzzed server, with an
    admin and a free key and a table that splits the model's traffic with a cookie-sticky A/B and a
    mirror to the same server."""
    loop = asyncio.new_event_loop()
    gw = Gateway(GatewayConfig(backend_timeout=10))
    gw.keys.replace([key_secret("admin", "cut_fuzz-admin", "admin"), key_secret("free", "cut_fuzz-free", "free")])
    gw.set_resolver(lambda namespace, service: server.url)
    gw.replace_deployments(
        [
            {
                "metadata": {"namespace": "tests", "name": "clf"},
                "spec": {
                    "model": {"name": "classifier"},
                    "strategy": {"abTest": {"assignment": {"by": "cookie", "name": "arm"}}},
                },
                "status": {
                    "traffic": [
                        {"revision": "a", "role": "stable", "weight": 50, "service": "clf-a"},
                        {"revision": "b", "role": "candidate", "weight": 50, "mirrorPercent": 50, "service": "clf-b"},
                    ]
                },
            }
        ]
    )
    runner = JsonErrorsRunner(gw.app(), access_log=None)  # as serving.http.listening runs it
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    good = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 1, -2, 0.5]}]})
    assert Client(port).post(PATHS[0], good.encode(), {"Authorization": "Bearer cut_fuzz-admin"})[0] == 200
    yield port
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    asyncio.run_coroutine_threadsafe(gw.close(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


header_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)
header_bytes = st.lists(st.integers(0x20, 0x7E) | st.integers(0x80, 0xFF), max_size=40).map(
    lambda values: bytes(values).decode("latin-1")
)
"""Any printable bytes, UTF-8 or not, as http.client sends a latin-1 string."""


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    request=near_valid() | st.tuples(st.binary(max_size=256), st.just({})),
    path=st.sampled_from([*PATHS * 5, "/v2/models/nope/infer", "/v2/models/classifier", "/gateway/routes", "/x"])
    | st.text("abc/%?=&C3A9", max_size=30).map(lambda p: "/v2/models/" + p),
    key=st.sampled_from(["cut_fuzz-admin"] * 8 + ["cut_fuzz-free", "", "Bearer", "cut_unknown"]) | header_text,
    extra=st.dictionaries(st.sampled_from(["X-Request-Id", "X-User-Id", "Cookie", "Content-Type"]), header_text),
    raw=st.dictionaries(st.sampled_from(["Authorization", "X-API-Key", "X-User-Id", "Cookie"]), header_bytes),
)
def test_the_gateway_answers_bad_requests_with_4xx(
    gateway: int,
    request: tuple[bytes, dict[str, str]],
    path: str,
    key: str,
    extra: dict[str, str],
    raw: dict[str, str],
) -> None:
    """Whatever a client sends, the gateway answers 2xx or a 4xx JSON error (429 when the free tier
    runs dry), never 5xx, and keeps answering, header values that are not UTF-8 (``raw``) included."""
    body, headers = request
    headers = {**headers, **extra, "Authorization": f"Bearer {key}"}
    encoded = {k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}  # UTF-8 bytes on the wire
    check(*Client(gateway).post(path, body, {**encoded, **raw}))


INFER = b"POST /v2/models/classifier/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer cut_fuzz-admin\r\n"
UNPARSABLE = {
    "a header line over aiohttp's 8190 bytes (a large token)": INFER + b"Cookie: " + b"a" * 9000 + b"\r\n\r\n",
    "a Content-Length that is not a number": INFER + b"Content-Length: 12x\r\n\r\n{}",
    "a chunk size that is not hex": INFER + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "both Content-Length and chunked": INFER + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    "a space in a header name": INFER + b"Bad Header: y\r\n\r\n",
    "a control character in a header value": INFER + b"X-Request-Id: a\x01b\r\n\r\n",
    "a control character in a credential": INFER.replace(b"cut_fuzz-admin", b"cut_secret\x01") + b"\r\n",
    "an unknown HTTP version": b"GET /v2/health/ready HTTP/9.9\r\nHost: x\r\n\r\n",
    "a request line of garbage": b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
    "TLS to the plain-text port": bytes.fromhex("160301020001") + b"\x00" * 64,
    "an absolute-form target with a bad port": b"GET http://x:99999/v2 HTTP/1.1\r\nHost: x\r\n\r\n",
}
"""Requests aiohttp's HTTP parser refuses (400), each a kind of byte it checks."""
UNEXPECTED = INFER + b"Expect: 200-ok\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
"""An Expect header aiohttp's application refuses (417) before the application's middleware runs."""


def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is and read the answer until the server closes the connection: its
    status, headers (lower-cased names) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):  # the server closes after an error it answered itself
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def gateway_requests(port: int) -> float:
    """The sum of the gateway's ``cutover_gateway_requests_total`` samples."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    return samples_sum(text, "cutover_gateway_requests_total")


@pytest.mark.parametrize("process", ["server", "gateway"])
@pytest.mark.parametrize(
    ("data", "refused"),
    [*((data, 400) for data in UNPARSABLE.values()), (UNEXPECTED, 417)],
    ids=[*UNPARSABLE, "Expect"],
)
def test_a_request_aiohttp_refuses_itself_is_a_json_4xx_that_counts_against_nothing(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, process: str, data: bytes, refused: int
) -> None:
    """Requests aiohttp refuses before the app's middleware never reach its error handling; aiohttp
    answered them itself in ``text/plain`` (KServe's client and tritonclient then show no reason)
    and logged a traceback at error level for each parser error, so any client could fill the logs
    with alarms. Now: the same status typed exactly application/json with aiohttp's reason, the
    connection closed, nothing logged above debug and nothing counted against the revision."""
    served = request.getfixturevalue(process)
    if process == "server":
        port, counted = served.port, lambda: served.metric("cutover_serving_requests_total")
        logged_from = served.log_path.stat().st_size
    else:
        port, counted = served, lambda: gateway_requests(served)
    before = counted()
    with caplog.at_level(logging.DEBUG):
        status, headers, body = raw_exchange(port, data)
    assert status == refused, body
    assert headers["content-type"] == "application/json"  # and the server closed (raw_exchange read to the end)
    reason = json.loads(body)["error"]
    assert isinstance(reason, str) and reason and "\n" not in reason
    assert counted() == before
    if process == "server":
        logged = served.log_path.read_bytes()[logged_from:].decode(errors="replace")
    else:
        logged = "\n".join(record.getMessage() for record in caplog.records if record.levelno > logging.DEBUG)
    assert "Error handling request" not in logged and "Traceback" not in logged, logged
    # The reason quotes the client's bytes back to it; the logs, debug included, keep none of them.
    assert "cut_secret" not in (logged if process == "server" else caplog.text)
