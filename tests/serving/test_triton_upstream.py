"""The Triton adapter's answers when its upstream fails, through a real `cutover serve --format
triton`: overload stays overload with the upstream's Retry-After, a refusal of the request is the
client's 400, cutover's own credentials or a missing upstream model are a 502 that says so, and a
timeout says it timed out. The upstream is a small Open Inference Protocol server that fails on
demand (the number of rows picks how), since a real Triton cannot be made to answer each of these."""

from __future__ import annotations

import http.client
import http.server
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cutover.serving.protocol import HEADER_LENGTH

from .support import Serving, threaded_http_server

FAILURES: dict[int, tuple[int, dict[str, str], bytes]] = {
    1: (503, {"Retry-After": "7"}, b'{"error": "Server not ready: too many requests queued"}'),
    2: (429, {"Retry-After": "3"}, b'{"error": "rate limit exceeded"}'),
    3: (401, {}, b'{"error": "invalid credentials"}'),
    4: (404, {}, b'{"error": "Request for unknown model: \'up\' is not found"}'),
    5: (400, {}, b'{"error": "unexpected shape for input \'input\'"}'),
    6: (500, {"Content-Type": "text/html"}, b"<html><body>Internal Server Error</body></html>"),
}
"""The upstream's answer to a request of this many rows: status, headers, body."""
SLOW_ROWS = 7
"""A request of this many rows is answered after the front's --upstream-timeout."""
METADATA = {
    "name": "up",
    "platform": "onnxruntime_onnx",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
}


class FailingTriton(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/v2/models/up":
            self._send(200, {}, json.dumps(METADATA).encode())
        elif self.path == "/v2/models/up/ready":
            self._send(200, {}, b"")
        else:
            self._send(404, {}, b'{"error": "not found"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        header = json.loads(body[: int(self.headers.get(HEADER_LENGTH) or len(body))])
        rows = header["inputs"][0]["shape"][0]
        if rows == SLOW_ROWS:
            time.sleep(1.5)  # the front has given up by now: nothing to answer
            return
        self._send(*FAILURES.get(rows, (500, {}, b'{"error": "unexpected request"}')))

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    with threaded_http_server(FailingTriton) as upstream:
        serving = Serving(
            tmp_path_factory.mktemp("triton-upstream"),
            "--format",
            "triton",
            "--upstream",
            upstream,
            "--upstream-model",
            "up",
            "--upstream-timeout",
            "0.5",
        ).start()
        yield serving
        serving.stop()


def infer(serving: Serving, rows: int) -> tuple[int, str | None, str]:
    """Status, Retry-After and error message of a JSON request of ``rows`` rows."""
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 4], "data": [0.5] * rows * 4}]})
    connection = http.client.HTTPConnection("127.0.0.1", serving.port, timeout=30)
    try:
        connection.request("POST", "/v2/models/classifier/infer", body=body)
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, response.getheader("Retry-After"), json.loads(response.read())["error"]
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("rows", "status", "retry_after", "says"),
    [
        (1, 503, "7", "is unavailable or overloaded (503): Server not ready: too many requests queued"),
        (2, 429, "3", "is rate-limiting (429): rate limit exceeded"),
        (3, 502, None, "refused cutover's credentials (401): invalid credentials"),
        (4, 502, None, "failed (404): Request for unknown model"),
        (5, 400, None, "refused the request (400): unexpected shape for input 'input'"),
        (6, 502, None, "failed (500): <html><body>Internal Server Error</body></html>"),
        (SLOW_ROWS, 502, None, "did not answer within 0.5 s"),
    ],
)
def test_upstream_failures_reach_the_client_as_what_they_mean(
    front: Serving, rows: int, status: int, retry_after: str | None, says: str
) -> None:
    answered = infer(front, rows)
    assert answered[:2] == (status, retry_after), answered
    assert answered[2].startswith("upstream Triton http://127.0.0.1:") and says in answered[2], answered[2]
