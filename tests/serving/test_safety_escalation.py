"""The crisis escalation webhook against a real HTTP receiver on loopback: a receiver that takes
the POST, fails with 500s then recovers, rate-limits with Retry-After (seconds and an HTTP date),
redirects, refuses with 400, hangs, or is not there at all; a full queue; shutdown with events
still waiting. Every escalation is counted exactly once and no body carries text.

Waits between retries go through a fake clock (``FakeTime``): the test sees every wait the
escalator asked for and the deadline bites without the test taking the time."""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cutover.serving.safety.escalation import Escalation, Escalator, Outcome, retry_after

T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


@dataclass
class Receiver:
    """Records every POST by path (headers and JSON body) and answers as the path says."""

    posts: dict[str, list[tuple[dict[str, str], Any]]] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    base: str = ""

    def url(self, kind: str) -> str:
        return f"{self.base}/hooks/{kind}"

    def count(self, kind: str) -> int:
        return len(self.posts.get(kind, []))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        self.posts.setdefault(kind, []).append((dict(request.headers), await request.json()))
        seen = self.count(kind)
        if kind == "hang":
            await self.release.wait()
        if kind == "flaky" and seen < 3:
            return web.Response(status=500 if seen == 1 else 503, text="database is down")
        if kind == "limited" and seen < 2:
            return web.Response(status=429, headers={"Retry-After": "7"})
        if kind == "limited-date" and seen < 2:
            when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
            return web.Response(status=429, headers={"Retry-After": when})
        if kind == "down":
            return web.Response(status=502, text="bad gateway")
        if kind == "redirect":
            raise web.HTTPFound(location="/hooks/ok")
        if kind == "bad":
            return web.Response(status=400, text="unknown field requestId")
        return web.json_response({"ok": True}, status=202)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{kind}", hooks.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    hooks.base = str(server.make_url("")).rstrip("/")
    try:
        yield hooks
    finally:
        hooks.release.set()
        await server.close()


@dataclass
class FakeTime:
    """A monotonic clock that only the escalator's waits move; every wait is recorded."""

    now: float = 1000.0
    waits: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Counted:
    outcomes: Counter[Outcome] = field(default_factory=Counter)

    def __call__(self, outcome: Outcome) -> None:
        self.outcomes[outcome] += 1


def event(request_id: str = "req-1", category: str = "suicidalIdeation") -> Escalation:
    return Escalation(
        request_id=request_id,
        namespace="support",
        model="assistant",
        revision="7c9f2e1a",
        policy="consumer-chat",
        policy_generation=3,
        category=category,
        scope="input",
        score=0.97,
        time=T0,
    )


def escalator(url: str, fake: FakeTime, counted: Counted, **options: Any) -> Escalator:
    settings: dict[str, Any] = {"timeout": 2.0, "deadline": 60.0, "base_delay": 0.5, "max_delay": 30.0}
    settings.update(options)
    return Escalator(url, count=counted, sleep=fake.sleep, clock=fake.clock, jitter=lambda: 0.5, **settings)


async def test_delivers_one_post_with_the_contract_fields_and_no_text(receiver: Receiver) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("ok"), fake, counted)
    assert sender.notify(event()) is True
    await sender.join()
    await sender.close()

    assert counted.outcomes == {"delivered": 1}
    [(headers, body)] = receiver.posts["ok"]
    assert body == {
        "requestId": "req-1",
        "namespace": "support",
        "model": "assistant",
        "revision": "7c9f2e1a",
        "policy": "consumer-chat",
        "policyGeneration": 3,
        "filter": "crisis",
        "category": "suicidalIdeation",
        "scope": "input",
        "score": 0.97,
        "time": "2026-12-01T09:30:00.000Z",
    }
    assert headers["Idempotency-Key"] == "req-1"
    assert headers["Content-Type"] == "application/json"
    assert fake.waits == []


async def test_notify_returns_before_the_receiver_answers(receiver: Receiver) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("hang"), fake, counted, timeout=30.0)
    assert sender.notify(event()) is True
    # The request path goes on while the receiver holds the POST.
    assert sender.pending == 1
    assert counted.outcomes == {}
    receiver.release.set()
    await sender.join()
    await sender.close()
    assert counted.outcomes == {"delivered": 1}


async def test_5xx_is_retried_with_growing_jittered_waits_and_the_same_idempotency_key(receiver: Receiver) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("flaky"), fake, counted, base_delay=1.0)
    sender.notify(event("req-flaky"))
    await sender.join()
    await sender.close()

    assert counted.outcomes == {"delivered": 1}
    assert receiver.count("flaky") == 3
    # jitter 0.5 -> 75% of 1 s, then of 2 s.
    assert fake.waits == [0.75, 1.5]
    assert {headers["Idempotency-Key"] for headers, _ in receiver.posts["flaky"]} == {"req-flaky"}


async def test_backoff_is_capped_and_jitter_spreads_each_wait() -> None:
    fake, counted = FakeTime(), Counted()
    draws = iter([0.0, 0.999, 0.0, 0.999, 0.0, 0.999])
    # Nothing listens on port 9 of loopback: every attempt is a network error.
    sender = Escalator(
        "http://127.0.0.1:9/hook",
        count=counted,
        sleep=fake.sleep,
        clock=fake.clock,
        jitter=lambda: next(draws),
        base_delay=1.0,
        max_delay=4.0,
        deadline=10.0,
    )
    sender.notify(event())
    await sender.join()
    await sender.close()

    assert counted.outcomes == {"failed": 1}
    # 1, 2, 4, 4 (capped) seconds, each between half and all of it; the deadline stops the fifth.
    assert fake.waits == pytest.approx([0.5, 1.999, 2.0, 3.998])


async def test_429_waits_as_retry_after_says(receiver: Receiver) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("limited"), fake, counted)
    sender.notify(event())
    await sender.join()
    await sender.close()

    assert counted.outcomes == {"delivered": 1}
    assert receiver.count("limited") == 2
    assert fake.waits == [7.0]


async def test_429_whose_retry_after_passes_the_deadline_fails_at_once(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("limited-date"), fake, counted, deadline=60.0)
    with caplog.at_level(logging.WARNING, logger="cutover.serving.safety.escalation"):
        sender.notify(event("req-late"))
        await sender.join()
    await sender.close()

    assert counted.outcomes == {"failed": 1}
    assert receiver.count("limited-date") == 1
    assert fake.waits == []
    assert "req-late" in caplog.text and "429" in caplog.text and "deadline" in caplog.text


async def test_a_redirect_is_a_failure_that_names_the_location_and_is_not_followed(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("redirect"), fake, counted)
    with caplog.at_level(logging.WARNING, logger="cutover.serving.safety.escalation"):
        sender.notify(event())
        await sender.join()
    await sender.close()

    assert counted.outcomes == {"failed": 1}
    assert receiver.count("redirect") == 1
    assert receiver.count("ok") == 0
    assert "302" in caplog.text and "to /hooks/ok" in caplog.text and "not followed" in caplog.text


async def test_a_url_from_a_secret_is_never_logged(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    fake, counted = FakeTime(), Counted()
    with caplog.at_level(logging.WARNING, logger="cutover.serving.safety.escalation"):
        redirected = escalator(receiver.url("redirect"), fake, counted, url_from_secret=True)
        redirected.notify(event())
        await redirected.join()
        await redirected.close()
        unreachable = escalator("http://127.0.0.1:9/token-abc123", fake, counted, url_from_secret=True, deadline=5)
        unreachable.notify(event())
        await unreachable.join()
        await unreachable.close()

    assert counted.outcomes == {"failed": 2}
    assert "/hooks/" not in caplog.text and "token-abc123" not in caplog.text
    assert "URL from Secret" in caplog.text
    assert "Location not shown" in caplog.text


async def test_other_4xx_answers_are_final(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("bad"), fake, counted)
    with caplog.at_level(logging.WARNING, logger="cutover.serving.safety.escalation"):
        sender.notify(event())
        await sender.join()
    await sender.close()

    assert counted.outcomes == {"failed": 1}
    assert receiver.count("bad") == 1
    assert "400" in caplog.text and "unknown field requestId" in caplog.text


async def test_a_receiver_that_hangs_times_out_and_is_retried_until_the_deadline(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("hang"), fake, counted, timeout=0.2, base_delay=1.0, deadline=2.0)
    with caplog.at_level(logging.WARNING, logger="cutover.serving.safety.escalation"):
        sender.notify(event())
        await sender.join()
    await sender.close()

    assert counted.outcomes == {"failed": 1}
    # Waits 0.75 then 1.5 s: the second would pass the 2 s deadline, so two attempts in all.
    assert receiver.count("hang") == 2
    assert fake.waits == [0.75]
    assert "no answer within 0.2s" in caplog.text


async def test_a_5xx_until_the_deadline_fails_once(receiver: Receiver) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("down"), fake, counted, base_delay=1.0, deadline=20.0)
    sender.notify(event())
    await sender.join()
    await sender.close()

    assert counted.outcomes == {"failed": 1}
    assert fake.waits == [0.75, 1.5, 3.0, 6.0]
    assert receiver.count("down") == 5


async def test_events_are_sent_in_order_by_one_sender(receiver: Receiver) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("ok"), fake, counted)
    for number in range(5):
        sender.notify(event(f"req-{number}"))
    await sender.join()
    await sender.close()

    assert counted.outcomes == {"delivered": 5}
    assert [body["requestId"] for _, body in receiver.posts["ok"]] == [f"req-{n}" for n in range(5)]


async def test_a_full_queue_drops_and_counts(receiver: Receiver) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("hang"), fake, counted, queue_size=2, timeout=30.0)
    accepted = [sender.notify(event(f"req-{n}")) for n in range(4)]
    assert accepted == [True, True, False, False]
    assert counted.outcomes == {"dropped": 2}
    receiver.release.set()
    await sender.join()
    await sender.close()
    assert counted.outcomes == {"dropped": 2, "delivered": 2}


async def test_close_drains_then_drops_what_is_left_each_counted_once(receiver: Receiver) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("hang"), fake, counted, timeout=30.0)
    for number in range(3):
        sender.notify(event(f"req-{number}"))
    await asyncio.wait_for(_first_post(receiver, "hang"), timeout=10)
    await sender.close(drain=0.05)

    assert counted.outcomes == {"dropped": 3}
    assert sender.pending == 0
    assert sender.notify(event("after")) is False
    assert counted.outcomes == {"dropped": 4}


async def test_close_delivers_what_waits_within_the_drain(receiver: Receiver) -> None:
    fake, counted = FakeTime(), Counted()
    sender = escalator(receiver.url("ok"), fake, counted)
    for number in range(3):
        sender.notify(event(f"req-{number}"))
    await sender.close(drain=10)
    assert counted.outcomes == {"delivered": 3}
    assert receiver.count("ok") == 3


async def _first_post(receiver: Receiver, kind: str) -> None:
    """Until the receiver has seen a POST on ``kind`` (the sender is inside an attempt)."""
    while not receiver.count(kind):
        await asyncio.sleep(0.01)


async def test_a_counter_that_raises_stops_nothing(receiver: Receiver) -> None:
    fake, seen = FakeTime(), Counted()

    def count(outcome: Outcome) -> None:
        seen(outcome)
        raise RuntimeError("registry gone")

    sender = escalator(receiver.url("ok"), fake, Counted(), queue_size=1)
    sender.count = count
    assert sender.notify(event("req-0")) is True
    assert sender.notify(event("req-1")) is False
    await sender.join()
    assert sender.notify(event("req-2")) is True
    await sender.join()
    await sender.close()
    assert seen.outcomes == {"delivered": 2, "dropped": 1}
    assert [body["requestId"] for _, body in receiver.posts["ok"]] == ["req-0", "req-2"]


def test_notify_without_a_running_loop_drops_instead_of_raising() -> None:
    counted = Counted()
    sender = Escalator("http://127.0.0.1:9/hook", count=counted)
    assert sender.notify(event()) is False
    assert counted.outcomes == {"dropped": 1}


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "/relative", "example.com/hook", ""])
def test_a_url_that_is_not_absolute_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an absolute http"):
        Escalator(url)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("12", default=1.0) == 12.0
    assert retry_after(" 0 ", default=1.0) == 0.0
    assert retry_after("", default=1.5) == 1.5
    assert retry_after("soon", default=1.5) == 1.5
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", default=1.5) == 0.0
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 80 < retry_after(later, default=1.5) <= 90
