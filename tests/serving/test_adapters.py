"""The PyTorch, Triton and LLM adapters, model loading over http with a checksum, and the
fallback chain, each through a real `cutover serve` process."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import http.server
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from aiohttp import web
from aiohttp.test_utils import TestServer

from cutover.serving import sample_models
from cutover.serving.adapters.llm import LLMAdapter
from cutover.serving.errors import UpstreamError
from tests.support.waiting import wait_until

from .support import Serving, openai_error, threaded_http_server

INPUTS = json.dumps([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])
OUTPUTS = json.dumps([{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}])


def reference(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"input": x})[0]
    return result


def infer(serving: Serving, x: np.ndarray, model: str = "classifier") -> tuple[np.ndarray, dict[str, Any]]:
    client = httpclient.InferenceServerClient(serving.url.removeprefix("http://"))
    try:
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(model, [tensor])
        return np.asarray(result.as_numpy("probabilities")), result.get_response()
    finally:
        client.close()


@pytest.fixture(scope="module")
def onnx_good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_models.onnx_classifier(tmp_path_factory.mktemp("m") / "good.onnx", "good")


def test_torchscript_model_with_declared_tensors(tmp_path: Path, onnx_good: Path) -> None:
    model = sample_models.torchscript_classifier(tmp_path / "good.pt", "good")
    serving = Serving(
        tmp_path, "--format", "pytorch", "--model-uri", str(model), "--inputs", INPUTS, "--outputs", OUTPUTS
    ).start()
    try:
        x = sample_models.sample_inputs(6, seed=1)
        answer, _ = infer(serving, x)
        np.testing.assert_allclose(answer, reference(onnx_good, x), rtol=1e-5, atol=1e-6)
        assert serving.get("/v2/models/classifier")[1]["platform"] == "pytorch_torchscript"
    finally:
        serving.stop()


def test_torchscript_without_declared_tensors_is_not_ready_and_says_why(tmp_path: Path) -> None:
    model = sample_models.torchscript_classifier(tmp_path / "good.pt", "good")
    serving = Serving(tmp_path, "--format", "pytorch", "--model-uri", str(model)).start(ready=False)
    try:
        status, answer = serving.load_error()
        assert status == 503 and "declare model.inputs" in answer["error"]
    finally:
        serving.stop()


def test_exported_program_describes_itself(tmp_path: Path, onnx_good: Path) -> None:
    model = sample_models.exported_program_classifier(tmp_path / "good.pt2", "good")
    serving = Serving(tmp_path, "--format", "pytorch", "--model-uri", str(model)).start()
    try:
        metadata = serving.get("/v2/models/classifier")[1]
        assert metadata["platform"] == "pytorch_exportedprogram"
        assert metadata["inputs"][0]["datatype"] == "FP32" and metadata["inputs"][0]["shape"] == [-1, 4]
        name = metadata["inputs"][0]["name"]
        x = sample_models.sample_inputs(3, seed=2)
        body = {"inputs": [{"name": name, "datatype": "FP32", "shape": [3, 4], "data": x.ravel().tolist()}]}
        status, answer = serving.post("/v2/models/classifier/infer", body)
        assert status == 200
        values = np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(3, 3)
        np.testing.assert_allclose(values, reference(onnx_good, x), rtol=1e-5, atol=1e-6)
    finally:
        serving.stop()


@pytest.mark.parametrize(("dtype", "datatype"), [("uint16", "UINT16"), ("uint32", "UINT32"), ("uint64", "UINT64")])
async def test_an_exported_program_takes_every_unsigned_type_the_protocol_has(
    tmp_path: Path, dtype: str, datatype: str
) -> None:
    """The PyTorch adapter kept its own table of types, which stopped at uint8: a program taking
    uint16, uint32 or uint64 failed to load with a bare KeyError."""
    import torch

    from cutover.serving.adapters.pytorch import PyTorchAdapter

    class Widen(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.to(torch.int64) + 1

    torch.export.save(
        torch.export.export(Widen(), (torch.zeros((2, 3), dtype=getattr(torch, dtype)),)), tmp_path / "m.pt2"
    )
    adapter = PyTorchAdapter(tmp_path / "m.pt2", threads=1, device="cpu")
    try:
        await adapter.load()
        assert [(t.name, t.datatype) for t in adapter.inputs] == [("x", datatype)]
        answer = await adapter.infer({"x": np.full((2, 3), 7, dtype=dtype)})
        assert answer["output__0"].tolist() == [[8, 8, 8], [8, 8, 8]]
    finally:
        await adapter.close()


async def test_an_exported_program_of_a_type_the_protocol_cannot_carry_fails_its_load_saying_which(
    tmp_path: Path,
) -> None:
    import torch

    from cutover.serving.adapters.pytorch import PyTorchAdapter

    class Halve(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x / 2).to(torch.bfloat16)

    torch.export.save(torch.export.export(Halve(), (torch.zeros((2, 3)),)), tmp_path / "m.pt2")
    adapter = PyTorchAdapter(tmp_path / "m.pt2", threads=1, device="cpu")
    try:
        with pytest.raises(ValueError, match="output output__0 is bfloat16, which the protocol cannot carry"):
            await adapter.load()
    finally:
        await adapter.close()


def test_triton_adapter_forwards_to_an_upstream_server(tmp_path: Path, onnx_good: Path) -> None:
    upstream = Serving(tmp_path, "--format", "onnx", "--model-uri", str(onnx_good), name="upstream-model").start()
    front = Serving(
        tmp_path,
        "--format",
        "triton",
        "--upstream",
        upstream.url,
        "--upstream-model",
        "upstream-model",
        "--inputs",
        json.dumps([{"name": "input", "datatype": "FP32", "shape": [-1, 4], "range": {"min": -100, "max": 100}}]),
    ).start()
    try:
        x = sample_models.sample_inputs(4, seed=3)
        answer, _ = infer(front, x)
        np.testing.assert_allclose(answer, reference(onnx_good, x), rtol=1e-6)
        assert front.get("/v2/models/classifier")[1]["inputs"] == [
            {"name": "input", "datatype": "FP32", "shape": [-1, 4]}
        ]
        too_big = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 1000]}]}
        status, error = front.post("/v2/models/classifier/infer", too_big)
        assert status == 400 and "maximum" in error["error"]
        upstream.stop()
        status, error = front.post(
            "/v2/models/classifier/infer", {**too_big, "inputs": [{**too_big["inputs"][0], "data": [0] * 4}]}
        )  # type: ignore[dict-item]
        assert status == 502 and "upstream" in error["error"]
        wait_until(lambda: front.get("/v2/health/ready")[0] == 503, 10, "readiness to follow the upstream")
    finally:
        front.stop()
        upstream.stop()


FAULTS = {429: "Rate limit reached for requests", 401: "Incorrect API key provided"}
"""The upstream's reason for a fault status, as OpenAI words it."""


class ChatUpstream(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible chat server, as a vLLM would be: it answers ``reply``, or the text
    after ``say:`` in the last message, whole or streamed a word per event (with a usage chunk
    when ``stream_options.include_usage`` asks), and ``GET /v1/models`` (any other path is a
    404). A last message naming a fault gets it: a status in brackets (``[429]``, ``[401]``, …)
    that status with an OpenAI error body (and ``Retry-After: 7`` for 429 and 503), ``[garbage]``
    a 200 that is HTML, ``[slow]`` an answer after 3 s, ``[broken]`` an error event
    after the first word of a stream, ``[cut]`` a stream that ends after it without [DONE],
    ``[hold]`` a stream that waits after it until ``release`` is set. The key ``sk-revoked``
    is refused (401) everywhere."""

    reply = "Write to jane.doe@example.com for help."
    seen: list[dict[str, Any]] = []
    release = threading.Event()

    def do_GET(self) -> None:
        if self.headers.get("Authorization") == "Bearer sk-revoked":
            self._send(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "tiny-llm"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ChatUpstream.seen.append(
            {
                "body": body,
                "authorization": self.headers.get("Authorization"),
                "traceparent": self.headers.get("traceparent"),
            }
        )
        last = str(body["messages"][-1].get("content"))
        if body.get("max_tokens") == -1:
            self._send(400, {"error": {"message": "max_tokens must be positive"}})
        elif fault := re.search(r"\[(\d{3})\]", last):
            status = int(fault.group(1))
            wait = {"Retry-After": "7"} if status in (429, 503) else {}
            self._send(status, {"error": {"message": FAULTS.get(status, f"failed with {status}")}}, wait)
        elif "[garbage]" in last:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>502 Bad Gateway</html>")
        else:
            if "[slow]" in last:
                time.sleep(3)
            reply = last.partition("say:")[2].strip() or self.reply
            if body.get("stream"):
                self._stream(body, reply, last)
                return
            message = {"role": "assistant", "content": reply}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            self._send(
                200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"], "choices": [choice]}
            )

    def _stream(self, body: dict[str, Any], reply: str, last: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes
        head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
        words = reply.split(" ")
        deltas = [{"role": "assistant", "content": ""}] + [
            {"content": w if i == 0 else f" {w}"} for i, w in enumerate(words)
        ]
        events = [{**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        if "[broken]" in last or "[cut]" in last:
            events = events[:2] + ([{"error": {"message": "CUDA out of memory"}}] if "[broken]" in last else [])
        else:
            events.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}
                events.append({**head, "choices": [], "usage": usage})
        for sent, event in enumerate(events):
            if sent == 2 and "[hold]" in last:
                ChatUpstream.release.wait(30)
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()
        if "[cut]" not in last and "[broken]" not in last:
            self.wfile.write(b"data: [DONE]\n\n")

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def chat_upstream() -> Iterator[str]:
    with threaded_http_server(ChatUpstream) as url:
        yield url


def test_llm_chat_is_forwarded_audited_and_redacted(
    tmp_path: Path, chat_upstream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUTOVER_UPSTREAM_API_KEY", "sk-upstream")
    audit = tmp_path / "audit.jsonl"
    serving = Serving(
        tmp_path,
        "--format",
        "llm",
        "--upstream",
        chat_upstream,
        "--upstream-model",
        "tiny-llm",
        "--audit-log",
        str(audit),
        name="assistant",
    ).start()
    try:
        request = {"model": "assistant", "messages": [{"role": "user", "content": "help me"}]}
        status, answer = serving.post("/v1/chat/completions", request)
        assert status == 200 and answer["model"] == "assistant"
        assert answer["choices"][0]["message"]["content"] == ChatUpstream.reply
        assert ChatUpstream.seen[-1]["body"]["model"] == "tiny-llm"
        assert ChatUpstream.seen[-1]["authorization"] == "Bearer sk-upstream"
        line = wait_until(lambda: audit.exists() and audit.read_text().strip(), 10, "the audit record")
        record = json.loads(line.splitlines()[-1])
        assert "jane.doe@example.com" not in line and "[REDACTED:email]" in json.dumps(record["outputs"])
        status, error = serving.post("/v1/chat/completions", {**request, "max_tokens": -1})
        assert status == 400 and "max_tokens must be positive" in openai_error(error)
        status, error = serving.post("/v1/chat/completions", {"messages": "hi"})
        assert status == 400 and "messages" in openai_error(error)
        body = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]}
        status, answer = serving.post("/v2/models/assistant/infer", body)
        assert status == 200 and answer["outputs"][0]["data"] == [ChatUpstream.reply]
    finally:
        serving.stop()


def test_chat_on_a_tensor_model_is_a_clear_404(tmp_path: Path, onnx_good: Path) -> None:
    serving = Serving(tmp_path, "--format", "onnx", "--model-uri", str(onnx_good)).start()
    try:
        status, error = serving.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
        assert status == 404 and "takes tensors" in openai_error(error)
    finally:
        serving.stop()


async def test_streamed_chats_reuse_one_upstream_connection() -> None:
    """A keep-alive upstream that ends each event stream with a chunked body's last chunk, as
    vLLM's (uvicorn) does: the adapter reads past ``[DONE]`` to that end, or the client closes the
    connection and every streamed answer pays a new one before its first token."""
    peers: list[Any] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        delta = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
        await response.write(b"data: " + json.dumps(delta).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response  # aiohttp sends the last chunk (0 CRLF CRLF) after this, on its own

    async with adapter_for(chat) as adapter:
        for _ in range(3):
            chunks = [c async for c in adapter.chat_stream({"model": "a", "messages": []})]
            assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["hi"]
    assert len(peers) == 3 and len(set(peers)) == 1, peers


class RecordingExecutor(concurrent.futures.ThreadPoolExecutor):
    """A default executor that remembers what was handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.handed: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.handed.append(getattr(fn, "__qualname__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


async def test_requests_to_the_upstream_hand_nothing_to_a_thread() -> None:
    """Every hand-off to a thread and back delays the first token: aiohttp's ``trust_env`` looked up
    the proxy and ``~/.netrc`` on a thread for every request (a millisecond of the first token in
    benchmarks/streaming.py). The proxy is looked up once, when the session is made."""
    executor = RecordingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body["stream"]:
            return web.json_response({"choices": [{"index": 0, "message": {"content": "hi"}}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\ndata: [DONE]\n\n')
        return response

    async with adapter_for(chat) as adapter:
        for _ in range(2):
            assert [c async for c in adapter.chat_stream({"model": "a", "messages": []})]
            assert (await adapter.chat({"model": "a", "messages": []}))["choices"]
    assert executor.handed == []


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy in the environment, whatever the machine's: each test names its own."""
    for name in ("http", "https", "all", "no"):
        monkeypatch.delenv(f"{name}_proxy", raising=False)
        monkeypatch.delenv(f"{name.upper()}_PROXY", raising=False)


@pytest.mark.usefixtures("no_proxies")
async def test_the_upstream_is_reached_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``HTTP_PROXY`` (and ``HTTPS_PROXY``) carry the upstream's requests, ``NO_PROXY`` exempts
    hosts, as curl and aiohttp's ``trust_env`` read them."""
    through: list[str] = []

    async def proxied(request: web.Request) -> web.Response:
        through.append(str(request.url))  # a proxy is sent the absolute URL
        return web.json_response({"choices": [{"index": 0, "message": {"content": "via proxy"}}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", proxied)
    async with TestServer(app) as proxy:
        monkeypatch.setenv("HTTP_PROXY", str(proxy.make_url("/")))
        adapter = LLMAdapter("http://llm.upstream.invalid:8000", "tiny-llm", timeout=5)
        try:
            answer = await adapter.chat({"model": "a", "messages": []})
        finally:
            await adapter.close()
        assert answer["choices"][0]["message"]["content"] == "via proxy"
        assert through == ["http://llm.upstream.invalid:8000/v1/chat/completions"]

        monkeypatch.setenv("NO_PROXY", "upstream.invalid")
        adapter = LLMAdapter("http://llm.upstream.invalid:8000", "tiny-llm", timeout=5)
        try:
            with pytest.raises(UpstreamError, match=re.escape("llm.upstream.invalid")):
                await adapter.chat({"model": "a", "messages": []})
        finally:
            await adapter.close()
        assert len(through) == 1


async def test_streamed_events_are_read_however_the_upstream_frames_and_splits_them() -> None:
    """Server-sent events end their lines with CRLF, LF or CR, and a line may come in several
    writes (a CRLF torn between two, a UTF-8 character torn between two): each chunk arrives
    whole. One event of 300 KB (an answer in one piece) is more than aiohttp's own line reader
    takes (128 KiB)."""
    long_text = "x" * 300_000
    deltas = ["a", "b", "c", long_text, "é"]

    def event(text: str) -> bytes:
        body = {"choices": [{"index": 0, "delta": {"content": text}}]}
        return b"data: " + json.dumps(body, ensure_ascii=False).encode()

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": a comment\r\n\r\n" + event("a") + b"\r")  # the CRLF torn in two
        await response.write(b"\n\r\n" + event("b")[:7])
        await response.write(event("b")[7:] + b"\r\r" + event("c") + b"\n\n")
        await response.write(event(long_text)[:100_000])
        await response.write(event(long_text)[100_000:] + b"\n\n")
        accented = event("é")
        torn = accented.index("é".encode()) + 1  # inside the character's two bytes
        await response.write(accented[:torn])
        await response.write(accented[torn:] + b"\n\ndata: [DONE]\n\n")
        return response

    chunks = await streamed_from(chat)
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == deltas
    assert all(c["model"] == "a" for c in chunks)


async def test_an_upstream_that_never_ends_a_line_is_cut_off_with_a_named_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cutover.serving.adapters import llm

    monkeypatch.setattr(llm, "MAX_EVENT_LINE_BYTES", 64 << 10)

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"y" * 4096)
        return response

    with pytest.raises(UpstreamError, match="a line of over"):
        await streamed_from(chat)


@asynccontextmanager
async def adapter_for(chat: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[LLMAdapter]:
    """An LLM adapter whose upstream's chat completions ``chat`` answers, closed after."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with TestServer(app) as server:
        adapter = LLMAdapter(str(server.make_url("/")), "tiny-llm")
        try:
            yield adapter
        finally:
            await adapter.close()


async def streamed_from(chat: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> list[dict[str, Any]]:
    """The chunks the adapter streams from an upstream whose chat completions ``chat`` answers."""
    async with adapter_for(chat) as adapter:
        return [c async for c in adapter.chat_stream({"model": "a", "messages": []})]


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    with threaded_http_server(Quiet) as url:
        yield url, root


def test_http_model_is_downloaded_and_verified(tmp_path: Path, onnx_good: Path, file_server: tuple[str, Path]) -> None:
    url, root = file_server
    (root / "model.onnx").write_bytes(onnx_good.read_bytes())
    digest = "sha256:" + hashlib.sha256(onnx_good.read_bytes()).hexdigest()
    serving = Serving(
        tmp_path,
        "--format",
        "onnx",
        "--model-uri",
        f"{url}/model.onnx",
        "--checksum",
        digest,
        "--cache-dir",
        str(tmp_path / "cache"),
    ).start()
    try:
        x = sample_models.sample_inputs(2, seed=4)
        np.testing.assert_allclose(infer(serving, x)[0], reference(onnx_good, x), rtol=1e-6)
    finally:
        serving.stop()
    wrong = "sha256:" + "0" * 64
    refused = Serving(
        tmp_path,
        "--format",
        "onnx",
        "--model-uri",
        f"{url}/model.onnx",
        "--checksum",
        wrong,
        "--cache-dir",
        str(tmp_path / "c2"),
    ).start(ready=False)
    try:
        status, answer = refused.load_error()
        assert status == 503 and "refusing to serve a changed file" in answer["error"]
    finally:
        refused.stop()


def test_low_confidence_answers_come_from_the_fallback_chain(tmp_path: Path, onnx_good: Path) -> None:
    uncertain = sample_models.onnx_classifier(tmp_path / "uncertain.onnx", "uncertain")
    previous = Serving(tmp_path, "--format", "onnx", "--model-uri", str(onnx_good), version="0").start()
    fallback = {
        "confidenceThreshold": 0.6,
        "previousVersion": True,
        "baseline": {"format": "onnx", "storageUri": f"file://{onnx_good}"},
        "safeDefault": {"outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [1, 0, 0]}]},
        "circuitBreaker": {"failureThreshold": 2, "openSeconds": 60},
    }
    serving = Serving(
        tmp_path,
        "--format",
        "onnx",
        "--model-uri",
        str(uncertain),
        "--fallback",
        json.dumps(fallback),
        "--previous-url",
        previous.url,
    ).start()
    try:
        x = sample_models.sample_inputs(1, seed=5)
        answer, response = infer(serving, x)
        assert response["parameters"]["fallback"] == "previous"
        np.testing.assert_allclose(answer, reference(onnx_good, x), rtol=1e-6)
        previous.stop()
        for _ in range(3):  # two failures open the previous version's breaker; then it is skipped
            answer, response = infer(serving, x)
            assert response["parameters"]["fallback"] == "baseline"
        assert serving.metric("cutover_serving_circuit_breaker_state", link="previous") == 2
        assert serving.metric("cutover_serving_fallbacks_total", link="baseline") == 3
        assert serving.metric("cutover_prediction_confidence_count") == 4
    finally:
        serving.stop()
        previous.stop()


def test_safe_default_is_the_last_word(tmp_path: Path) -> None:
    uncertain = sample_models.onnx_classifier(tmp_path / "uncertain.onnx", "uncertain")
    fallback = {
        "confidenceThreshold": 0.9,
        "previousVersion": False,
        "safeDefault": {"outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [1, 0, 0]}]},
    }
    serving = Serving(
        tmp_path, "--format", "onnx", "--model-uri", str(uncertain), "--fallback", json.dumps(fallback)
    ).start()
    try:
        answer, response = infer(serving, sample_models.sample_inputs(1, seed=6))
        assert response["parameters"]["fallback"] == "safe_default"
        np.testing.assert_array_equal(answer, [[1, 0, 0]])
    finally:
        serving.stop()


@pytest.mark.usefixtures("no_proxies")
async def test_proxy_failures_and_bad_upstream_urls_are_named_as_what_they_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy that cannot be reached or refuses cutover's credentials is named as the proxy (not
    as the upstream refusing its API key); an upstream URL that does not parse is a 502 naming the
    upstream, never a ValueError out of the adapter."""
    request = {"model": "a", "messages": []}

    credentials: list[str | None] = []

    async def refuse(request: web.Request) -> web.Response:
        credentials.append(request.headers.get("Proxy-Authorization"))
        return web.Response(status=407, headers={"Proxy-Authenticate": 'Basic realm="proxy"'})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", refuse)
    async with TestServer(app) as proxy:
        monkeypatch.setenv("HTTP_PROXY", str(proxy.make_url("/")).replace("http://", "http://who:secret@"))
        adapter = LLMAdapter("http://llm.upstream.invalid:8000", "tiny-llm", timeout=5)
        try:
            with pytest.raises(UpstreamError, match=r"the proxy http://127\.0\.0\.1:[0-9]+/? refused") as refused:
                await adapter.chat(request)
        finally:
            await adapter.close()
        assert "secret" not in str(refused.value)
        assert credentials == ["Basic " + base64.b64encode(b"who:secret").decode()]  # sent, and only to the proxy

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    adapter = LLMAdapter("http://llm.upstream.invalid:8000", "tiny-llm", timeout=5)
    try:
        with pytest.raises(UpstreamError, match="cannot connect to the proxy for the upstream"):
            await adapter.chat(request)
    finally:
        await adapter.close()

    for url in ("http://host:99999", "http://[::1"):
        adapter = LLMAdapter(url, "tiny-llm", timeout=5)
        try:
            with pytest.raises(UpstreamError):
                await adapter.chat(request)
            assert not await adapter.ready() and adapter.not_ready_reason
        finally:
            await adapter.close()
