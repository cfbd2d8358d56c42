"""Serving with a SafetyPolicy file: the file followed like kubelet updates a ConfigMap volume
(a new policy applies to the next request, an invalid or missing one keeps the last good one,
none ever means 503 and not ready), the answers over HTTP (422 and 503 JSON bodies, never a 5xx
for a client's input), and a real `cutover serve --safety-policy` process with the real PII
filter in front of a local upstream."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cutover.api.contract import SAFETY_ESCALATION_URL_KEY
from cutover.serving.metrics import ServingMetrics
from cutover.serving.safety import policy as policy_module
from cutover.serving.safety import source
from cutover.serving.safety.guard import Guard
from cutover.serving.safety.source import PolicyFile
from cutover.serving.server import ModelServer
from tests.support.waiting import wait_until

from . import safety_fakes
from .safety_fakes import fake_builders
from .support import Serving, openai_error, threaded_http_server
from .test_pipeline import LABELS, Chat, config
from .test_safety_policy import document

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every filter built by the fake detectors."""
    for name, module in fake_builders.items():
        monkeypatch.setitem(policy_module.BUILDERS, name, module)  # type: ignore[index]


class Volume:
    """A ConfigMap volume as kubelet writes it: ``policy.json`` -> ``..data/policy.json``, and
    ``..data`` a symlink swapped atomically to a new timestamped directory on every update."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.version = 0
        self.path = root / "policy.json"

    def write(self, content: str | dict[str, Any]) -> None:
        self.version += 1
        target = self.root / f"..2026_{self.version}"
        target.mkdir()
        (target / "policy.json").write_text(content if isinstance(content, str) else json.dumps(content))
        link = self.root / "..data_tmp"
        link.symlink_to(target.name)
        os.replace(link, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to("..data/policy.json")


def guard() -> tuple[Guard, ServingMetrics]:
    metrics = ServingMetrics("tests", "classifier", "rev-1", lambda: 0)
    return Guard(metrics.safety, "tests", "classifier", "rev-1"), metrics


def failures(metrics: ServingMetrics) -> float | None:
    return metrics.registry.get_sample_value("cutover_safety_policy_load_failures_total", LABELS)


@pytest.mark.usefixtures("fakes")
async def test_the_policy_file_is_followed_through_kubelets_symlink_swaps(tmp_path: Path) -> None:
    volume = Volume(tmp_path / "policy")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    the_guard, metrics = guard()
    follower = PolicyFile(the_guard, volume.path, secrets)

    assert not await follower.poll() and not await follower.poll()
    assert the_guard.policy is None and "cannot read the safety policy" in (the_guard.error or "")
    assert failures(metrics) == 1  # counted once, not at every poll

    volume.write(document(generation=1, toxicity={}))
    assert await follower.poll()
    assert the_guard.policy is not None and the_guard.policy.generation == 1 and the_guard.error is None
    safety_fakes.BUILT.clear()
    assert not await follower.poll()  # unchanged content: nothing rebuilt
    assert safety_fakes.BUILT == []

    volume.write(document(generation=2, pii={}))
    assert await follower.poll()
    assert the_guard.policy.generation == 2 and [r.name for r in the_guard.policy.rules] == ["pii"]

    volume.write('{"spec": {"toxicity": {"threshold": 9}}')  # not even JSON: read as YAML, still invalid
    assert not await follower.poll() and not await follower.poll()
    assert the_guard.policy.generation == 2 and the_guard.error is None  # the last good one stays
    assert failures(metrics) == 2

    secret_hook = {"urlSecretRef": {"name": "pager", "key": "url"}}
    volume.write(document(generation=3, crisis={"escalationWebhook": secret_hook}))
    assert await follower.poll()
    assert the_guard.policy.escalation_url is None
    (secrets / SAFETY_ESCALATION_URL_KEY).write_text("https://pager.example/hook\n")
    assert await follower.poll()  # a rotated Secret is a change too
    assert the_guard.policy.escalation_url == "https://pager.example/hook"
    await the_guard.close()


@pytest.mark.usefixtures("fakes")
async def test_a_builder_that_crashes_is_refused_and_polling_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = Volume(tmp_path / "policy")
    volume.write(document(toxicity={}))
    the_guard, metrics = guard()
    monkeypatch.setattr(source, "compile_policy", lambda *a, **k: 1 / 0)

    assert not await PolicyFile(the_guard, volume.path).poll()
    assert "compiling failed: ZeroDivisionError" in (the_guard.error or "") and failures(metrics) == 1


# -- over HTTP, in process ----------------------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path, fakes: None) -> AsyncIterator[tuple[ModelServer, Client, Volume]]:
    volume = Volume(tmp_path / "policy")
    server = ModelServer(config(safety_policy=volume.path, safety_poll_interval=0.02), Chat())
    async with TestClient(TestServer(server.app())) as client:
        yield server, client, volume
    await server.close()


CHAT = "/v1/chat/completions"


def said(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


async def test_over_http_no_policy_is_503_and_not_ready_then_the_policy_answers(
    served: tuple[ModelServer, Client, Volume],
) -> None:
    server, client, volume = served
    await server.load()

    refused = await client.post(CHAT, json=said("hi"))
    ready = await client.get("/v2/health/ready")
    assert refused.status == 503 and "no safety policy can be applied" in openai_error(await refused.json())
    assert (
        ready.status == 503
        and "no safety policy applied: cannot read the safety policy" in (await ready.json())["error"]
    )

    volume.write(document(toxicity={}, pii={}, blockMessage="Refused by policy."))
    await wait_for(lambda: server.safety is not None and server.safety.policy is not None)

    assert (await client.get("/v2/health/ready")).status == 200
    answer = await client.post(CHAT, json=said("mail a@b.io"))
    assert (
        answer.status == 200
        and (await answer.json())["choices"][0]["message"]["content"] == "echo: mail [REDACTED:email]"
    )
    blocked = await client.post(CHAT, json=said("you idiot"))
    assert blocked.status == 422 and openai_error(await blocked.json()) == "Refused by policy."
    failed = await client.post(CHAT, json=said("BOOM"))
    assert failed.status == 503 and "failClosed" in openai_error(await failed.json())
    deep = await client.post(CHAT, data="[" * 200_000 + "]" * 200_000)
    assert deep.status == 400 and "nested too deeply" in openai_error(await deep.json())
    metrics = await (await client.get("/metrics")).text()
    assert (
        'cutover_serving_requests_total{code="422",model="classifier",namespace="tests",revision="rev-1"} 1.0'
        in metrics
    )
    info = 'cutover_safety_policy_info{generation="1",model="classifier",namespace="tests",policy="strict",'
    assert info + 'revision="rev-1"} 1.0' in metrics

    volume.write("kind: [unclosed")
    volume.write(document(generation=2, pii={"action": "block"}))
    await wait_for(
        lambda: server.safety is not None and server.safety.policy is not None and server.safety.policy.generation == 2
    )
    assert (await client.post(CHAT, json=said("you idiot"))).status == 200  # no toxicity filter any more
    assert (await client.post(CHAT, json=said("a@b.io"))).status == 422


async def test_an_escalation_reaches_the_webhook_from_the_secrets_dir_without_the_text(
    tmp_path: Path, fakes: None
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append({"body": await request.json(), "key": request.headers.get("Idempotency-Key")})
        return web.json_response({})

    receiver = web.Application()
    receiver.router.add_post("/page", hook)
    volume = Volume(tmp_path / "policy")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    async with TestServer(receiver) as webhook:
        (secrets / SAFETY_ESCALATION_URL_KEY).write_text(str(webhook.make_url("/page")))
        hook_ref = {"urlSecretRef": {"name": "pager", "key": "url"}, "timeoutSeconds": 2}
        volume.write(document(generation=7, crisis={"escalationWebhook": hook_ref, "responseMessage": "Call 988."}))
        server = ModelServer(config(safety_policy=volume.path, safety_secrets_dir=secrets), Chat())
        async with TestClient(TestServer(server.app())) as client:
            await server.load()
            await wait_for(lambda: server.safety is not None and server.safety.policy is not None)

            answer = await client.post(CHAT, json=said("I want to die"), headers={"X-Request-Id": "req-77"})

            assert answer.status == 200
            assert (await answer.json())["choices"][0]["message"]["content"] == "Call 988."
            await wait_for(lambda: len(received) == 1)
            await server.close()
        (delivery,) = received
        assert delivery["key"] == "req-77"
        assert delivery["body"]["requestId"] == "req-77" and delivery["body"]["policyGeneration"] == 7
        assert delivery["body"]["category"] == "suicidalIdeation" and delivery["body"]["scope"] == "input"
        assert "die" not in json.dumps(delivery["body"])
        assert (
            server.metrics.registry.get_sample_value(
                "cutover_safety_escalations_total", {**LABELS, "result": "delivered"}
            )
            == 1
        )


async def wait_for(condition: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# -- a real `cutover serve` process -------------------------------------------------------------


class Upstream(BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream answering ``reply``; ``asked`` records request bodies."""

    reply = "Sure. Reach our team at help@shop.example."
    asked: list[dict[str, Any]] = []

    def do_GET(self) -> None:
        self._send({"object": "list", "data": [{"id": "tiny"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Upstream.asked.append(body)
        message = {"role": "assistant", "content": Upstream.reply}
        self._send({"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": message}]})

    def _send(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    with threaded_http_server(Upstream) as url:
        yield url


def test_cutover_serve_follows_its_policy_file_with_the_real_pii_filter(tmp_path: Path, upstream: str) -> None:
    volume = Volume(tmp_path / "policy")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    audit = tmp_path / "audit.jsonl"
    serving = Serving(
        tmp_path,
        "--format",
        "llm",
        "--upstream",
        upstream,
        "--upstream-model",
        "tiny",
        "--audit-log",
        str(audit),
        "--safety-policy",
        str(volume.path),
        "--safety-secrets-dir",
        str(secrets),
        name="assistant",
    ).start(ready=False)
    try:
        status, answer = wait_until(
            lambda: (r := serving.get("/v2/health/ready"))[1].get("error") != "loading" and r, 30, "the model to load"
        )
        assert status == 503 and "no safety policy applied: cannot read the safety policy" in answer["error"]
        status, answer = serving.post("/v1/chat/completions", said("hi"))
        assert status == 503 and "no safety policy can be applied" in openai_error(answer)

        volume.write(document(generation=4, pii={"entities": ["email", "creditCard"]}))
        wait_until(lambda: serving.get("/v2/health/ready")[0] == 200, 30, "the policy to apply")
        status, answer = serving.post("/v1/chat/completions", said("my card is 4111 1111 1111 1111"))

        assert status == 200
        assert answer["choices"][0]["message"]["content"] == "Sure. Reach our team at [REDACTED:email]."
        assert Upstream.asked[-1]["messages"][0]["content"] == "my card is [REDACTED:creditCard]"
        assert serving.metric("cutover_safety_checks_total", filter="pii", scope="output") == 1
        assert (
            serving.metric(
                "cutover_safety_violations_total", filter="pii", category="email", action="redact", scope="output"
            )
            == 1
        )
        assert serving.metric("cutover_safety_policy_info", policy="strict", generation="4") == 1
        line = wait_until(lambda: audit.exists() and audit.read_text().strip(), 10, "the audit record")
        record = json.loads(line.splitlines()[-1])
        assert {(f["filter"], f["category"], f["scope"]) for f in record["safety"]} == {
            ("pii", "creditCard", "input"),
            ("pii", "email", "output"),
        }

        volume.write(document(generation=5, pii={"action": "block"}, blockMessage="No personal data, please."))
        wait_until(lambda: 'generation="5"' in serving.metrics(), 30, "generation 5 to apply")
        status, answer = serving.post("/v1/chat/completions", said("hello"))
        assert status == 422 and openai_error(answer) == "No personal data, please."
        assert "cutover_safety_policy_info{" in serving.metrics() and 'generation="4"' not in serving.metrics()
    finally:
        serving.stop()
