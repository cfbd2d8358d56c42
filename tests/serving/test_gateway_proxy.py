"""The gateway's parts behind its HTTP server, in process: which attempts the proxy retries and
where, the circuit that opens on a failing revision, what a mirror's copy asks for, which
comparison a mirrored answer gets, and the routing table's choice between two ModelDeployments
serving one model name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from cutover.serving.gateway.app import GatewayConfig
from cutover.serving.gateway.metrics import GatewayMetrics
from cutover.serving.gateway.mirror import Mirrors, mirrored_copy
from cutover.serving.gateway.proxy import Outgoing, Proxy, RetryReason
from cutover.serving.gateway.routing import Backend, Route, RoutingTable, cluster_dns
from cutover.serving.gateway.shadow import Comparison, Outcome, compare
from cutover.serving.gateway.upstream import ConnectFailed, Disconnected, Response, Upstream

STABLE = Backend("aaa", "stable", "http://a", 90)
CANDIDATE = Backend("bbb", "candidate", "http://b", 10)
ROUTE = Route("ns", "md", "classifier", (STABLE, CANDIDATE))
INFER = Outgoing("POST", "/v2/models/classifier/infer", b"{}", {"Content-Type": "application/json"}, True)
CHAT = Outgoing("POST", "/v1/chat/completions", b"{}", {"Content-Type": "application/json"}, False)

Behaviour = Callable[[], Response]
"""What a revision does with one request: answer, or raise what the upstream client raises."""


def answers(status: int, body: bytes = b"{}", **headers: str) -> Behaviour:
    return lambda: Response(status, {k.lower().replace("_", "-"): v for k, v in headers.items()}, body)


def raises(error: BaseException) -> Behaviour:
    def behave() -> Response:
        raise error

    return behave


class FakeUpstream(Upstream):
    """Each revision (by URL) behaves as told; every request is recorded."""

    def __init__(self, behaviour: dict[str, Behaviour]) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.sent: list[tuple[str, str, str]] = []

    async def request(
        self,
        method: str,
        url: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        timeout: float,
        stream: bool = False,
    ) -> Response:
        self.sent.append((method, url, path))
        return self.behaviour[url]()


def proxy(behaviour: dict[str, Behaviour], **config: Any) -> tuple[Proxy, FakeUpstream, GatewayMetrics]:
    upstream, metrics = FakeUpstream(behaviour), GatewayMetrics()
    return Proxy(GatewayConfig(**config), upstream, metrics), upstream, metrics


def retries(metrics: GatewayMetrics, reason: RetryReason) -> float:
    return metrics.registry.get_sample_value("cutover_gateway_retries_total", {"reason": reason.value}) or 0.0


def requests(metrics: GatewayMetrics, backend: Backend, code: int) -> float:
    labels = {"namespace": "ns", "model": "classifier", "revision": backend.revision, "role": backend.role}
    return metrics.registry.get_sample_value("cutover_gateway_requests_total", labels | {"code": str(code)}) or 0.0


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (raises(ConnectFailed("refused")), RetryReason.CONNECT),
        (raises(Disconnected("reset")), RetryReason.DISCONNECT),
        (answers(503, Retry_After="1"), RetryReason.SHED),
    ],
)
async def test_a_safe_failure_is_retried_on_another_revision_and_counted_against_the_first(
    failure: Behaviour, reason: RetryReason
) -> None:
    gateway, upstream, metrics = proxy({STABLE.url: failure, CANDIDATE.url: answers(200, b"ok")})
    answer = await gateway.forward(ROUTE, STABLE, INFER)
    assert (answer.status, answer.body, answer.backend) == (200, b"ok", CANDIDATE)
    assert [url for _, url, _ in upstream.sent] == [STABLE.url, CANDIDATE.url]
    assert retries(metrics, reason) == 1
    assert requests(metrics, STABLE, 503 if reason is RetryReason.SHED else 502) == 1
    assert requests(metrics, CANDIDATE, 200) == 1


@pytest.mark.parametrize(
    ("failure", "request_", "status"),
    [
        (raises(Disconnected("reset")), CHAT, 502),  # an LLM upstream may have spent the tokens
        (raises(TimeoutError()), INFER, 504),  # the revision may still be working on it
        # A 503 without Retry-After is final (a SafetyPolicy that cannot be applied, failClosed):
        # asking another revision would dodge the refusal or repeat it.
        (answers(503, b'{"error": "revision aaa refused: no safety policy"}'), INFER, 503),
    ],
)
async def test_a_failure_the_revision_may_have_acted_on_is_not_retried(
    failure: Behaviour, request_: Outgoing, status: int
) -> None:
    gateway, upstream, metrics = proxy({STABLE.url: failure, CANDIDATE.url: answers(200)})
    answer = await gateway.forward(ROUTE, STABLE, request_)
    assert answer.status == status
    assert json.loads(answer.body)["error"].startswith("revision aaa ")
    assert len(upstream.sent) == 1
    assert all(retries(metrics, reason) == 0 for reason in RetryReason)


async def test_retries_stop_at_the_configured_number_with_the_last_answer() -> None:
    gateway, upstream, metrics = proxy(
        {STABLE.url: raises(ConnectFailed("refused")), CANDIDATE.url: raises(ConnectFailed("refused"))}, retries=3
    )
    answer = await gateway.forward(ROUTE, STABLE, INFER)
    assert answer.status == 502
    # Both revisions tried, then the last one again: there is no third to go to.
    assert [url for _, url, _ in upstream.sent] == [STABLE.url, CANDIDATE.url, CANDIDATE.url, CANDIDATE.url]
    assert retries(metrics, RetryReason.CONNECT) == 3


async def test_a_revision_that_keeps_failing_opens_its_circuit_and_is_skipped_without_a_request() -> None:
    gateway, upstream, metrics = proxy(
        {STABLE.url: answers(500), CANDIDATE.url: answers(200)}, retries=0, breaker_failures=2
    )
    for _ in range(2):
        assert (await gateway.forward(ROUTE, STABLE, INFER)).status == 500
    assert not gateway.healthy(STABLE) and gateway.healthy(CANDIDATE)
    refused = await gateway.forward(ROUTE, STABLE, INFER)
    assert (refused.status, refused.headers.get("Retry-After")) == (503, "1")
    assert len(upstream.sent) == 2
    state = {"namespace": "ns", "model": "classifier", "revision": "aaa"}
    assert metrics.registry.get_sample_value("cutover_gateway_circuit_breaker_state", state) == 2


async def test_only_the_revision_headers_a_client_may_see_are_passed_on() -> None:
    behaviour = answers(200, content_type="application/json", cutover_revision="aaa", set_cookie="x=1", server="s")
    gateway, _, _ = proxy({STABLE.url: behaviour})
    answer = await gateway.forward(ROUTE, STABLE, INFER)
    assert answer.headers == {"Content-Type": "application/json", "Cutover-Revision": "aaa"}


def test_a_mirrored_copy_asks_for_whatever_the_mirror_serves() -> None:
    pinned = Outgoing("POST", "/v2/models/classifier/versions/3/infer?x=1", b"", {}, True)
    assert mirrored_copy(pinned).path == "/v2/models/classifier/infer?x=1"
    assert mirrored_copy(INFER) == INFER


async def test_a_mirror_counts_its_answer_and_its_agreement_with_the_live_one() -> None:
    outputs = json.dumps({"outputs": [{"name": "p", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.9]}]})
    upstream, metrics = FakeUpstream({CANDIDATE.url: answers(200, outputs.encode())}), GatewayMetrics()
    mirrors = Mirrors(GatewayConfig(), upstream, metrics)
    live: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    mirrors.start(ROUTE, CANDIDATE, INFER, live)
    mirrors.start(ROUTE, CANDIDATE, Outgoing("GET", "/v2/models/classifier", b"", {}, True), live)  # skipped
    proxy_, _, _ = proxy({STABLE.url: answers(200, outputs.encode())})
    live.set_result(await proxy_.forward(ROUTE, STABLE, INFER))
    await asyncio.wait_for(asyncio.gather(*mirrors.tasks), 5)
    agreed = {"namespace": "ns", "model": "classifier", "revision": "bbb", "agree": "true"}
    assert metrics.registry.get_sample_value("cutover_gateway_shadow_comparisons_total", agreed) == 1
    assert requests(metrics, CANDIDATE, 200) == 1
    assert metrics.registry.get_sample_value("cutover_gateway_mirror_skipped_total") == 1


async def test_answers_too_large_to_decode_on_the_event_loop_are_not_compared() -> None:
    """Comparing decodes both answers on the gateway's event loop; past READ_ANSWER_BYTES the
    pair is left uncompared (the mirror's request still counts), whichever side is large."""
    from cutover.serving.gateway.proxy import READ_ANSWER_BYTES

    small = json.dumps({"outputs": [{"name": "p", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.9]}]})
    large = small.encode() + b" " * READ_ANSWER_BYTES
    metrics = GatewayMetrics()
    for live_body, mirror_body in ((large, small.encode()), (small.encode(), large)):
        mirrors = Mirrors(GatewayConfig(), FakeUpstream({CANDIDATE.url: answers(200, mirror_body)}), metrics)
        live: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        mirrors.start(ROUTE, CANDIDATE, INFER, live)
        proxy_, _, _ = proxy({STABLE.url: answers(200, live_body)})
        live.set_result(await proxy_.forward(ROUTE, STABLE, INFER))
        await asyncio.wait_for(asyncio.gather(*mirrors.tasks), 5)
    assert requests(metrics, CANDIDATE, 200) == 2
    assert not [s for s in metrics.registry.collect() if s.name == "cutover_gateway_shadow_comparisons" and s.samples]


def test_the_path_decides_the_comparison_and_a_failed_mirror_disagrees() -> None:
    rule = Comparison()
    chat = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Yes, it is."}}]}).encode()
    assert compare("/v1/chat/completions?stream=false", chat, None, chat, None, rule) == Outcome(True, 0.0)
    assert compare("/v1/chat/completions", chat, None, None, None, rule) == Outcome(False)
    # Read as an inference answer, a chat answer has no outputs: no reference, not counted.
    assert compare("/v2/models/m/infer", chat, None, chat, None, rule) is None


def deployment(namespace: str, created: str, model: str = "classifier") -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": "md", "creationTimestamp": created},
        "spec": {"model": {"name": model}},
        "status": {"traffic": [{"revision": "r1", "role": "stable", "service": "md-r1", "weight": 100}]},
    }


def test_the_routing_table_gives_a_model_name_to_the_older_deployment_and_follows_deletes() -> None:
    table = RoutingTable()
    older, newer = deployment("team-a", "2024-01-01T00:00:00Z"), deployment("team-b", "2024-06-01T00:00:00Z")
    table.replace([newer, older])
    assert table.routes["classifier"].namespace == "team-a"
    assert table.routes["classifier"].backends[0].url == cluster_dns("team-a", "md-r1")
    table.update(older, deleted=True)
    assert table.routes["classifier"].namespace == "team-b"
    table.replace([], namespace="team-b")
    assert table.routes == {}


def test_the_routing_table_routes_only_to_services_the_resolver_knows() -> None:
    table = RoutingTable()
    table.update(deployment("team-a", "2024-01-01T00:00:00Z"))
    table.set_resolver(lambda namespace, service: None)
    assert table.routes == {}
    table.set_resolver(lambda namespace, service: f"http://127.0.0.1:9000/{namespace}/{service}")
    assert table.routes["classifier"].backends[0].url == "http://127.0.0.1:9000/team-a/md-r1"
