"""What the three per-object loops (ModelDeployment, SafetyPolicy, AlertRule) remember between
passes: lifecycle.LoopMemory, and each loop's status writes while kopf's watch lags behind."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import kopf
import pytest

from cutover.api.contract import LABEL_MODEL, LABEL_REVISION
from cutover.operator import handlers, lifecycle, safety_handlers
from cutover.operator.kube import ApiError, Kube
from cutover.operator.lifecycle import LoopMemory, ObjectKey, Stopped
from cutover.operator.verdicts import VerdictSource

from ..cases import CANARY, load
from .test_safety_policy import policy_body

LOG = logging.getLogger("test")
KEY = ("shop", "m")


class StatusServer:
    """The API server's side of one object's status writes: a resourceVersion that moves on
    every write and a 409 for a write from any other version (what the real one does); applies
    and deletes of children succeed, and any other object is not found."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = copy.deepcopy(body)
        self.writes = 0

    async def replace_status(self, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        if body["metadata"]["resourceVersion"] != self.body["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified")
        self.writes += 1
        self.body = {**self.body, "status": status}
        self.body["metadata"] = {
            **self.body["metadata"],
            "resourceVersion": str(int(body["metadata"]["resourceVersion"]) + 1),
        }
        return copy.deepcopy(self.body)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        if (kind, name) != (self.body.get("kind"), self.body["metadata"]["name"]):
            raise ApiError(404, f"{kind} {name} not found")
        return copy.deepcopy(self.body)

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return obj

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        return None

    async def list(self, api_version: str, kind: str, namespace: str | None = None, **_: Any) -> list[dict[str, Any]]:
        return []


def frozen(body: dict[str, Any]) -> kopf.Body:
    """kopf's view of an object whose watch brings no event: it stays ``body``."""
    return kopf.Body(cast(kopf.RawBody, copy.deepcopy(body)))


def at(version: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": KEY[0], "name": KEY[1], "resourceVersion": version}, "status": status}


def serve(
    memory: LoopMemory,
    key: ObjectKey,
    stopped: Stopped,
    one_pass: Callable[[], Awaitable[float]],
    coalesce: float = lifecycle.COALESCE_SECONDS,
) -> Coroutine[Any, Any, None]:
    """The loop of a Thing that is never gone and whose failures go nowhere; it forgets what
    ``memory`` holds for ``key`` when it ends, as the real loops do."""
    return lifecycle.serve(
        memory,
        key,
        stopped,
        one_pass,
        what="Thing",
        gone=lambda: asyncio.sleep(0, result=False),
        forget=lambda wake: memory.forget(key, wake),
        failed=lambda reason: None,
        log=LOG,
        coalesce=coalesce,
    )


# ----------------------------------------------------------------------------- LoopMemory


def test_our_last_write_is_read_until_the_watch_moves_past_every_version_we_superseded() -> None:
    memory = LoopMemory()
    memory.remember(KEY, at("10"), at("11", pass_=1))
    memory.remember(KEY, at("11", pass_=1), at("12", pass_=2))
    memory.remember(KEY, at("12", pass_=2), at("13", pass_=3))
    for lagging in ("10", "11", "12"):
        assert memory.latest(KEY, at(lagging))["status"] == {"pass_": 3}, f"the watch at {lagging}"
    assert memory.latest(KEY, at("13", pass_=3))["metadata"]["resourceVersion"] == "13"
    assert KEY not in memory.writes, "caught up: nothing left to remember"
    assert memory.latest(KEY, at("10"))["metadata"]["resourceVersion"] == "10"


def test_a_write_by_someone_else_is_read_from_the_watch() -> None:
    memory = LoopMemory()
    memory.remember(KEY, at("10"), at("11", ours=True))
    theirs = at("12", ours=False)  # someone wrote on top of our write; the watch shows it
    assert memory.latest(KEY, theirs)["status"] == {"ours": False} and KEY not in memory.writes


def test_a_version_read_again_after_a_conflict_supersedes_the_one_the_watch_shows() -> None:
    memory = LoopMemory()
    memory.supersede(KEY, "10", at("12", theirs=True))
    assert memory.latest(KEY, at("10"))["status"] == {"theirs": True}


def test_a_poke_wakes_the_running_loop_and_an_ending_loop_forgets_only_what_it_owns() -> None:
    memory = LoopMemory()
    memory.poke(*KEY)  # no loop: nothing to wake, nothing kept
    assert not memory.wakes
    old = memory.start(KEY)
    memory.remember(KEY, at("1"), at("2"))
    new = memory.start(KEY)  # the object was deleted and created again under the same name
    memory.poke(*KEY)
    assert new.is_set() and not old.is_set()
    assert not memory.forget(KEY, old) and memory.wakes[KEY] is new and KEY in memory.writes
    assert memory.forget(KEY, new) and not memory.wakes and not memory.writes


def test_a_loop_retries_what_fails_and_ends_when_its_object_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    for retry in ("CONFLICT_RETRY", "API_ERROR_RETRY", "ERROR_RETRY"):
        monkeypatch.setattr(lifecycle, retry, 0.01)
    memory = LoopMemory()
    outcomes: list[float | Exception] = [
        ApiError(409, "modified"),
        RuntimeError("a bug"),
        0.01,
        ApiError(404, "not found"),  # not gone: a child or a Secret was missing
        ApiError(404, "not found"),  # gone
        0.01,
    ]
    seen: list[str] = []
    ended: list[asyncio.Event] = []

    async def one_pass() -> float:
        outcome = outcomes.pop(0)
        seen.append(f"pass {type(outcome).__name__}")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def gone() -> bool:
        seen.append("gone?")
        return seen.count("gone?") == 2

    async def conflict() -> None:
        seen.append("read again")

    async def run() -> None:
        await lifecycle.serve(
            memory,
            KEY,
            Stopped(),
            one_pass,
            what="Thing",
            gone=gone,
            forget=ended.append,
            failed=lambda reason: seen.append(reason),
            log=LOG,
            coalesce=0.0,
            conflict=conflict,
        )

    asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert seen == [
        "pass ApiError",
        "read again",
        "ApiError409",
        "pass RuntimeError",
        "Unexpected",
        "pass float",
        "pass ApiError",
        "gone?",
        "ApiError404",
        "pass ApiError",
        "gone?",
    ]
    assert len(outcomes) == 1, "no pass after the object is gone"
    assert ended == [memory.wakes[KEY]], "the ending loop hands its wake-up event to forget"


async def test_a_burst_of_objects_takes_turns_for_its_passes() -> None:
    """500 new ModelDeployments ran their first passes all at once; their requests queued behind
    the client's 32 connections past the request timeout, and 536 passes failed."""
    memory = LoopMemory()
    stopped = Stopped()
    running: list[int] = []
    most = 0
    done = 0

    async def one_pass() -> float:
        nonlocal most, done
        running.append(1)
        most = max(most, len(running))
        await asyncio.sleep(0.01)
        running.pop()
        done += 1
        return 3600.0

    keys = [("ns", f"m{i}") for i in range(3 * lifecycle.PASSES_AT_ONCE)]
    loops = [asyncio.create_task(serve(memory, key, stopped, one_pass)) for key in keys]
    async with asyncio.timeout(10):
        while done < len(keys):
            await asyncio.sleep(0.005)
    assert most == lifecycle.PASSES_AT_ONCE
    stopped.set()
    for key in keys:
        memory.poke(*key)
    await asyncio.gather(*loops)


def test_a_poked_loop_runs_its_next_pass_at_once_and_a_stopped_one_returns() -> None:
    memory = LoopMemory()
    stopped = Stopped()
    passes: list[int] = []
    second = asyncio.Event()

    async def one_pass() -> float:
        passes.append(len(passes))
        if len(passes) == 2:
            stopped.set()
            second.set()
        return 3600.0  # only a poke brings the next pass

    async def run() -> None:
        loop = asyncio.create_task(serve(memory, KEY, stopped, one_pass, coalesce=0.0))
        while not passes:
            await asyncio.sleep(0)
        memory.poke(*KEY)
        await second.wait()
        memory.poke(*KEY)  # stopped: the wait ends, no third pass, its memory is dropped
        await loop

    asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert passes == [0, 1] and not memory.wakes


def test_a_loop_asked_to_stop_returns_without_waiting_out_its_delay() -> None:
    """Operator shutdown sets every loop's ``stopped`` and pokes none; a loop at rest waited
    out its delay (30 s) until its cancellation timeout, so SIGTERM took 10 s per kind."""
    memory = LoopMemory()
    stopped = Stopped()
    waiting = asyncio.Event()

    async def one_pass() -> float:
        waiting.set()
        return 3600.0

    async def run() -> None:
        loop = asyncio.create_task(serve(memory, KEY, stopped, one_pass))
        await waiting.wait()
        stopped.set()
        await asyncio.wait_for(loop, timeout=5)

    asyncio.run(run())
    assert not memory.wakes


def test_a_loop_that_ends_leaves_no_wake_up_behind_in_its_stop() -> None:
    """A loop restarted after a failure that escaped it registers a new wake-up with the same
    ``Stopped``; the ended loop's must go, or they pile up one per restart."""
    memory = LoopMemory()
    stopped = Stopped()

    async def failing() -> float:
        raise asyncio.CancelledError  # escapes serve(), as a failure the loop does not catch would

    async def run() -> None:
        for _ in range(3):
            with pytest.raises(asyncio.CancelledError):
                await serve(memory, KEY, stopped, failing)
            assert stopped.waking == 0

    asyncio.run(run())
    assert not memory.wakes


# ----------------------------------------------------------------------------- the loops


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events go nowhere (no operator runs to post them)."""
    for module in (handlers, safety_handlers):
        monkeypatch.setattr(module.kopf, "info", lambda *args, **kwargs: None)
        monkeypatch.setattr(module.kopf, "warn", lambda *args, **kwargs: None)


class NoVerdicts:
    """A verdict source with nothing to say (no rollout is judged here)."""

    async def current(self, md: Any, now: float) -> None:
        return None

    async def watch(self, md: Any, now: float) -> None:
        return None

    def drop(self, uid: str) -> None:
        return None


@pytest.mark.usefixtures("quiet")
def test_the_modeldeployment_loop_writes_every_pass_while_the_watch_lags_several_writes() -> None:
    """Pods become ready one a pass and each pass writes status; kopf's view stays at the
    created object. The loop compared kopf's resourceVersion with the last write's only, so
    from the third pass on it read the created object again and every write met a 409."""
    created = copy.deepcopy(load(CANARY))
    created["metadata"].update(namespace="shop", uid="uid-1", resourceVersion="10", generation=1)
    server = StatusServer(created)
    ctx = handlers.Context(cast(Kube, server), cast(VerdictSource, NoVerdicts()))
    watch = frozen(created)
    wanted = int(created["spec"]["runtime"]["replicas"])
    for ready in range(wanted + 1):
        revision = (server.body.get("status") or {}).get("stableRevision")
        children = [handlers.Child(f"child-{revision}", revision, ready, "uid-1", wanted)] if revision else []
        asyncio.run(handlers.reconcile_once(ctx, watch, children, LOG))
    assert server.writes == wanted + 1, "one status write a pass, none refused"
    assert server.body["status"]["phase"] == "Healthy"
    caught_up = frozen(server.body)
    assert ctx.loops.latest(("shop", "fraud-scorer"), caught_up) == dict(caught_up)


@pytest.mark.usefixtures("quiet")
def test_the_safetypolicy_loop_writes_every_pass_while_the_watch_lags_several_writes() -> None:
    created = {**policy_body(), "status": {}}
    key = (created["metadata"]["namespace"], created["metadata"]["name"])
    server = StatusServer(created)
    ctx = safety_handlers.SafetyContext(cast(Kube, server))
    watch = frozen(created)
    referencing = [[], ["ranker"], ["ranker", "search"], ["ranker", "search", "chat"]]
    for deployments in referencing:
        asyncio.run(safety_handlers.reconcile_policy(ctx, key, watch, deployments, LOG))
    assert server.writes == len(referencing), "one status write a pass, none refused"
    assert server.body["status"]["deployments"] == ["chat", "ranker", "search"]


@pytest.mark.usefixtures("quiet")
def test_an_invalid_modeldeployment_is_reported_once_while_the_watch_lags() -> None:
    """The InvalidSpec status write was not remembered: the next pass read the object as
    created, found no report in it and wrote again from a stale version (a 409 every pass)."""
    created = copy.deepcopy(load(CANARY))
    created["metadata"].update(namespace="shop", uid="uid-1", resourceVersion="10", generation=1)
    created["spec"]["runtime"]["replicas"] = -1
    server = StatusServer(created)
    ctx = handlers.Context(cast(Kube, server), cast(VerdictSource, NoVerdicts()))
    watch = frozen(created)
    for _ in range(3):
        asyncio.run(handlers.reconcile_once(ctx, watch, [], LOG))
    assert server.writes == 1 and server.body["status"]["phase"] == "Failed"


def test_our_own_status_writes_coming_back_are_no_news_and_free_what_was_kept() -> None:
    memory = LoopMemory()
    assert memory.observed(KEY, at("10")), "no write of ours yet: every event is news"
    memory.remember(KEY, at("10"), at("11", ours=True))
    assert not memory.observed(KEY, at("10")), "a version our write superseded"
    assert KEY in memory.writes
    assert not memory.observed(KEY, at("11", ours=True)), "the echo of our write"
    assert KEY not in memory.writes, "the watch caught up: the write is no longer kept"
    memory.remember(KEY, at("11"), at("12", ours=True))
    assert memory.observed(KEY, at("13", theirs=True)), "a write by someone else after ours"


@pytest.mark.usefixtures("quiet")
def test_a_modeldeployment_loop_is_woken_only_by_events_that_bring_it_something_new() -> None:
    """Every watch event woke the loop: the echo of each of its own status writes, and each of
    the controller's several status writes to a Deployment whose pods were starting, though a
    pass reads only its ready and wanted replicas: of the eight events below, five bring the
    loop something new."""
    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    by_name = {h.id.rsplit(".", 1)[-1]: h.fn for h in registry._watching.get_all_handlers()}
    created = copy.deepcopy(load(CANARY))
    created["metadata"].update(namespace="shop", uid="uid-1", resourceVersion="10", generation=1)
    key = ("shop", created["metadata"]["name"])
    server = StatusServer(created)
    ctx = handlers.Context(cast(Kube, server), cast(VerdictSource, NoVerdicts()))
    memo = kopf.Memo(ctx=ctx)
    wake = ctx.loops.start(key)

    def woken(handler: str, **event: Any) -> bool:
        wake.clear()
        asyncio.run(by_name[handler](memo=memo, namespace="shop", **event))
        return wake.is_set()

    def deployment(event: str, **status: Any) -> bool:
        labels = {LABEL_MODEL: key[1], LABEL_REVISION: "abc"}
        meta = {"ownerReferences": [{"kind": "ModelDeployment", "uid": "uid-1"}]}
        spec = {"replicas": 1}
        return woken(
            "child_changed", type=event, name=f"{key[1]}-abc", labels=labels, spec=spec, status=status, meta=meta
        )

    assert woken("modeldeployment_changed", name=key[1], body=frozen(created))
    asyncio.run(handlers.reconcile_once(ctx, frozen(created), [], LOG))  # writes status Progressing
    assert not woken("modeldeployment_changed", name=key[1], body=frozen(server.body)), "our own write"
    assert deployment("ADDED")
    assert not deployment("MODIFIED", observedGeneration=1)
    assert not deployment("MODIFIED", observedGeneration=1, replicas=1, unavailableReplicas=1)
    assert deployment("MODIFIED", observedGeneration=1, replicas=1, readyReplicas=1)
    assert deployment("DELETED", observedGeneration=1, replicas=1, readyReplicas=1)
    assert not ctx.children.seen, "a deleted Deployment is forgotten"
    someone = {**server.body, "metadata": {**server.body["metadata"], "resourceVersion": "99"}}
    assert woken("modeldeployment_changed", name=key[1], body=frozen(someone)), "a change by someone else"


class SlowApplies(StatusServer):
    """Each apply takes a while, as a Service's does while the API server allocates its IP."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.applies = self.in_flight = self.most_in_flight = 0

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.applies += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.05)
        self.in_flight -= 1
        return obj


@pytest.mark.usefixtures("quiet")
def test_a_pass_applies_its_children_at_once() -> None:
    """A new ModelDeployment's first pass applied its Deployment, Service and stable Service one
    after the other: each waited for the one before, its status for all three."""
    created = copy.deepcopy(load(CANARY))
    created["metadata"].update(namespace="shop", uid="uid-1", resourceVersion="10", generation=1)
    server = SlowApplies(created)
    ctx = handlers.Context(cast(Kube, server), cast(VerdictSource, NoVerdicts()))
    asyncio.run(handlers.reconcile_once(ctx, frozen(created), [], LOG))
    assert server.applies >= 3 and server.most_in_flight == server.applies
    assert server.writes == 1


async def test_a_resting_loop_holds_only_its_own_task_and_returns_at_once_when_stopped() -> None:
    """2,000 resting ModelDeployments held four tasks each (waiting on a poke and on the stop
    through asyncio.wait_for and asyncio.wait), several KB apiece; one event in the loop's own
    task does for both."""
    memory = LoopMemory()
    stops = [Stopped() for _ in range(50)]
    rested = 0

    async def one_pass() -> float:
        nonlocal rested
        rested += 1
        return 3600.0  # at rest for an hour

    before = len(asyncio.all_tasks())
    loops = [asyncio.create_task(serve(memory, ("ns", f"m{i}"), stop, one_pass)) for i, stop in enumerate(stops)]
    async with asyncio.timeout(5):
        while rested < len(loops):
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) - before == len(loops), "one task per resting loop"
    for stop in stops:
        stop.set()
    async with asyncio.timeout(1):  # not the hour they were resting for
        await asyncio.gather(*loops)
