"""Delivering alert notifications to real HTTP receivers on loopback: success, Slack format,
a receiver that hangs, answers 500, refuses with 400 or redirects, URLs from a Secret (read
through cutover's Kubernetes client from a small fake API server) and a Secret that is missing.
Every failure is counted and says what went wrong; none raises."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cutover.api.v1alpha1 import AlertRule
from cutover.operator.alerts.instances import Instance
from cutover.operator.alerts.notify import DeliveryResult, Message, Notifier, NotifyMemory, plan
from cutover.serving.kube import Credentials, Kube

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Receiver:
    """A webhook receiver: records every POST by path and answers as the path says."""

    posts: dict[str, list[tuple[dict[str, str], Any]]] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    down: bool = False
    """While True, ``/hooks/outage`` answers 503."""
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        self.posts.setdefault(kind, []).append((dict(request.headers), await request.json()))
        if kind == "hang":
            await self.release.wait()
        if kind == "error" or (kind == "outage" and self.down):
            return web.Response(status=500, text="database is down")
        if kind == "flaky" and len(self.posts[kind]) < 3:
            return web.Response(status=503, text="try later")
        if kind == "limited" and len(self.posts[kind]) < 2:
            return web.Response(status=429, headers={"Retry-After": "0"})
        if kind == "redirect":
            raise web.HTTPFound(location="/hooks/ok")
        if kind == "slack":
            return self.slack(await request.json())
        return web.Response(text="ok")

    @staticmethod
    def slack(body: Any) -> web.Response:
        """Answer like Slack's incoming webhooks: ``ok``, or 400 ``invalid_payload``."""
        valid = (
            isinstance(body.get("text"), str)
            and body["text"]
            and isinstance(body.get("blocks"), list)
            and len(body["blocks"]) <= 50
            and all(b.get("type") in ("header", "section", "context", "divider") for b in body["blocks"])
        )
        return web.Response(text="ok") if valid else web.Response(status=400, text="invalid_payload")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{kind}", hooks.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    hooks.url = str(server.make_url("/hooks")).rstrip("/")
    try:
        yield hooks
    finally:
        hooks.release.set()
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@dataclass
class FakeApiServer:
    """Serves Secrets by path; 404 with a Status body for anything else."""

    secrets: dict[str, dict[str, str]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        data = self.secrets.get(request.path)
        if data is None:
            return web.json_response({"kind": "Status", "reason": "NotFound", "code": 404}, status=404)
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        return web.json_response({"kind": "Secret", "apiVersion": "v1", "data": encoded})


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeApiServer, Kube]]:
    fake = FakeApiServer()
    app = web.Application()
    app.router.add_get("/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    kube = Kube(Credentials(str(server.make_url("")).rstrip("/"), False, {}))
    try:
        yield fake, kube
    finally:
        await kube.close()
        await server.close()


def rule(*notifications: dict[str, Any]) -> AlertRule:
    return AlertRule.model_validate(
        {
            "metadata": {"name": "risk-errors", "namespace": "payments"},
            "spec": {
                "target": {"name": "fraud"},
                "metric": {"builtin": "errorRate"},
                "condition": {"operator": ">", "threshold": 1.5, "relativeTo": "stable"},
                "severity": "critical",
                "grouping": {"by": ["model"], "wait": "0s"},
                "notifications": list(notifications),
                "action": "rollback",
            },
        }
    )


def _instance(model: str, revision: str) -> Instance:
    return Instance(f"payments/{model}", model, revision, "candidate", "Firing", 2.4, 1.5, 3, T0, T0)


def firing(alert: AlertRule, *revisions: tuple[str, str]) -> list[Message]:
    """The messages of ``alert`` when the given (model, revision)s fire (one group per model)."""
    instances = [_instance(model, revision) for model, revision in revisions or [("fraud", "c4")]]
    return plan(alert, instances, NotifyMemory(), T0, silenced=False)[0]


def resolved(alert: AlertRule) -> list[Message]:
    """The resolved message of ``alert``'s fraud group after it fired."""
    memory = plan(alert, [_instance("fraud", "c4")], NotifyMemory(), T0, silenced=False)[1]
    return plan(alert, [], memory, T0, silenced=False)[0]


def notifier(http: httpx.AsyncClient, kube: Kube | None = None, **options: Any) -> Notifier:
    return Notifier(http, kube, **({"attempts": 3, "base_delay": 0.01, "timeout": 5.0} | options))


async def test_a_grouped_message_reaches_the_webhook_and_the_slack_receiver_once_each(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    alert = rule({"url": f"{receiver.url}/ok"}, {"type": "slack", "url": f"{receiver.url}/slack"})
    messages = firing(alert, ("fraud", "c4"), ("fraud", "c5"))
    result = await notifier(http).deliver(alert, messages)
    assert (result.sent, result.failed, result.errors) == (2, 0, [])
    ((headers, body),) = receiver.posts["ok"]
    assert body["rule"] == "payments/risk-errors" and body["state"] == "firing"
    assert [i["revision"] for i in body["instances"]] == ["c4", "c5"]
    assert headers["Idempotency-Key"] == messages[0].idempotency_key
    assert headers["Content-Type"] == "application/json"
    ((_, slack),) = receiver.posts["slack"]
    assert slack["text"].startswith(":red_circle: [FIRING] payments/risk-errors (critical) model=fraud: 2 instances")


async def test_a_receiver_that_hangs_times_out_on_every_attempt_and_is_counted_failed(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    alert = rule({"url": f"{receiver.url}/hang", "timeoutSeconds": 1}, {"url": f"{receiver.url}/ok"})
    result = await notifier(http, timeout=0.2).deliver(alert, firing(alert))
    assert (result.sent, result.failed) == (1, 1)
    assert len(receiver.posts["hang"]) == 3
    assert result.errors == [
        f"notifications[0] (webhook, {receiver.url.removesuffix('/hooks')}): no answer within 0.2s (3 attempts)"
    ]


async def test_a_500_is_retried_then_counted_failed_with_what_the_receiver_said(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    alert = rule({"url": f"{receiver.url}/error"})
    result = await notifier(http, attempts=4).deliver(alert, firing(alert))
    assert (result.sent, result.failed) == (0, 1) and len(receiver.posts["error"]) == 4
    (error,) = result.errors
    assert error.endswith("answered 500 Internal Server Error: database is down (4 attempts)")


async def test_5xx_and_429_are_retried_until_the_receiver_takes_the_message(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    alert = rule({"url": f"{receiver.url}/flaky"}, {"url": f"{receiver.url}/limited"})
    result = await notifier(http).deliver(alert, firing(alert))
    assert (result.sent, result.failed, result.errors) == (2, 0, [])
    assert (len(receiver.posts["flaky"]), len(receiver.posts["limited"])) == (3, 2)
    # Every attempt of one message carries the same Idempotency-Key.
    assert len({h["Idempotency-Key"] for h, _ in receiver.posts["flaky"]}) == 1


async def test_a_redirect_is_not_followed_and_fails_at_once_saying_so(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    alert = rule({"url": f"{receiver.url}/redirect"})
    result = await notifier(http).deliver(alert, firing(alert))
    assert (result.sent, result.failed) == (0, 1)
    assert len(receiver.posts["redirect"]) == 1 and "ok" not in receiver.posts
    (error,) = result.errors
    assert "answered 302 Found: a redirect to /hooks/ok, which is not followed; set the webhook's final URL" in error


async def test_a_refused_payload_is_not_retried(receiver: Receiver, http: httpx.AsyncClient) -> None:
    # The Slack receiver refuses cutover's webhook JSON (no blocks): a 4xx is final.
    alert = rule({"type": "webhook", "url": f"{receiver.url}/slack"})
    result = await notifier(http).deliver(alert, firing(alert))
    assert (result.sent, result.failed) == (0, 1) and len(receiver.posts["slack"]) == 1
    assert result.errors[0].endswith("answered 400 Bad Request: invalid_payload")


async def test_a_receiver_that_is_not_listening_is_a_failure_not_a_crash(http: httpx.AsyncClient) -> None:
    alert = rule({"url": "http://127.0.0.1:9/hooks"})
    result = await notifier(http, attempts=2).deliver(alert, firing(alert))
    assert (result.sent, result.failed) == (0, 1)
    assert "cannot reach the receiver" in result.errors[0] and result.errors[0].endswith("(2 attempts)")


async def test_a_url_from_a_secret_is_read_and_never_shown_in_errors(
    receiver: Receiver, http: httpx.AsyncClient, api: tuple[FakeApiServer, Kube]
) -> None:
    fake, kube = api
    fake.secrets["/api/v1/namespaces/payments/secrets/hooks"] = {
        "slack": f"{receiver.url}/slack\n",
        "broken": f"{receiver.url}/error",
    }
    alert = rule(
        {"type": "slack", "urlSecretRef": {"name": "hooks", "key": "slack"}},
        {"urlSecretRef": {"name": "hooks", "key": "broken"}},
    )
    result = await notifier(http, kube, attempts=2).deliver(alert, firing(alert))
    assert (result.sent, result.failed) == (1, 1) and len(receiver.posts["slack"]) == 1
    (error,) = result.errors
    assert error.startswith("notifications[1] (webhook, URL from Secret payments/hooks key broken): answered 500")
    assert receiver.url not in error


async def test_a_missing_secret_or_key_fails_every_message_to_that_target_and_names_it(
    receiver: Receiver, http: httpx.AsyncClient, api: tuple[FakeApiServer, Kube]
) -> None:
    fake, kube = api
    fake.secrets["/api/v1/namespaces/payments/secrets/hooks"] = {"other": "https://example.com"}
    alert = rule(
        {"type": "slack", "urlSecretRef": {"name": "slack-webhooks", "key": "risk-oncall"}},
        {"urlSecretRef": {"name": "hooks", "key": "risk"}},
        {"url": f"{receiver.url}/ok"},
    )
    two = firing(alert, ("fraud", "c4"), ("churn", "c5"))
    result = await notifier(http, kube).deliver(alert, two)
    assert (result.sent, result.failed) == (2, 4)
    assert result.errors == [
        "notifications[0] (slack, URL from Secret payments/slack-webhooks key risk-oncall): "
        "notifications[0].urlSecretRef: Secret payments/slack-webhooks: not found",
        "notifications[1] (webhook, URL from Secret payments/hooks key risk): "
        "notifications[1].urlSecretRef: Secret payments/hooks has no key 'risk'",
    ]
    assert len(receiver.posts["ok"]) == 2


async def test_without_a_kubernetes_client_a_secret_target_fails_saying_so(http: httpx.AsyncClient) -> None:
    alert = rule({"urlSecretRef": {"name": "hooks", "key": "risk"}})
    result = await notifier(http).deliver(alert, firing(alert))
    assert result.failed == 1 and "the operator has no Kubernetes client to read it" in result.errors[0]


async def test_a_secret_that_holds_no_url_is_named(http: httpx.AsyncClient, api: tuple[FakeApiServer, Kube]) -> None:
    fake, kube = api
    fake.secrets["/api/v1/namespaces/payments/secrets/hooks"] = {"risk": "not a url"}
    alert = rule({"urlSecretRef": {"name": "hooks", "key": "risk"}})
    result = await notifier(http, kube).deliver(alert, firing(alert))
    assert result.errors == [
        "notifications[0] (webhook, URL from Secret payments/hooks key risk): Secret key 'risk' holds no http(s) URL"
    ]


async def test_nothing_to_send_sends_nothing(receiver: Receiver, http: httpx.AsyncClient) -> None:
    alert = rule({"url": f"{receiver.url}/ok"})
    result = await notifier(http).deliver(alert, [])
    assert (result.sent, result.failed, receiver.posts) == (0, 0, {})


async def test_a_resolved_message_the_receiver_missed_is_delivered_at_a_later_evaluation(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    alert = rule({"url": f"{receiver.url}/outage"}, {"url": f"{receiver.url}/ok"})
    notify = notifier(http, attempts=2, resolved_retries=3)
    receiver.down = True
    first = await notify.deliver(alert, resolved(alert))
    assert (first.sent, first.failed) == (1, 1)
    again = await notify.deliver(alert, [])
    assert (again.sent, again.failed) == (0, 1) and len(receiver.posts["outage"]) == 4
    receiver.down = False
    back = await notify.deliver(alert, [])
    assert (back.sent, back.failed) == (1, 0)
    assert [body["state"] for _, body in receiver.posts["outage"]] == ["resolved"] * 5
    assert len(receiver.posts["ok"]) == 1
    # Taken: nothing more to send.
    assert await notify.deliver(alert, []) == DeliveryResult()


async def test_redelivery_of_a_resolve_gives_up_after_its_retries_or_when_the_group_fires_again(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    alert = rule({"url": f"{receiver.url}/error"})
    notify = notifier(http, attempts=1, resolved_retries=2)
    results = [await notify.deliver(alert, resolved(alert)), await notify.deliver(alert, [])]
    results += [await notify.deliver(alert, []), await notify.deliver(alert, [])]
    assert [r.failed for r in results] == [1, 1, 1, 0]
    await notify.deliver(alert, resolved(alert))
    fired = await notify.deliver(alert, firing(alert))
    assert fired.failed == 1 and [body["state"] for _, body in receiver.posts["error"]][-1] == "firing"
    assert await notify.deliver(alert, []) == DeliveryResult()
