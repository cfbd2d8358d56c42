"""Per-object loops without a finalizer: started by the first event, fed fresh bodies, stopped
(and, when they do not return, cancelled) on deletion and at shutdown; and the operator's
registry asks kopf for no finalizer at all, so deleting a namespace never waits for us."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import kopf
import pytest

from cutover.operator import handlers, lifecycle, main


def body(uid: str, generation: int = 1, **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": f"md-{uid}", "namespace": "ns", "generation": generation, **metadata}}


class Recorder:
    """A loop like the operator's: reads the live body until stopped, wakes up now and then."""

    def __init__(self, obey: bool = True) -> None:
        self.seen: list[int] = []
        self.kwargs: dict[str, Any] = {}
        self.exited = asyncio.Event()
        self.obey = obey

    async def __call__(self, stopped: lifecycle.Stopped, body: kopf.Body, **kwargs: Any) -> None:
        self.kwargs = kwargs
        try:
            while not stopped or not self.obey:
                self.seen.append(body["metadata"]["generation"])
                await asyncio.sleep(0.01)
        finally:
            self.exited.set()


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_first_event_starts_a_loop_that_sees_every_later_body() -> None:
    fn = Recorder()
    loops = lifecycle.Loops(fn)
    loops.observe(None, body("a"), {"name": "md-a", "memo": "m", "patch": {}, "deployments_by_model": {}})
    await until(lambda: fn.seen)
    loops.observe("MODIFIED", body("a", generation=2), {})
    await until(lambda: fn.seen[-1] == 2)
    assert len(loops.running) == 1
    assert fn.kwargs == {"name": "md-a", "memo": "m", "deployments_by_model": {}}  # no per-event kwargs
    await loops.stop_all()


@pytest.mark.parametrize(
    ("event", "gone"),
    [("DELETED", body("a")), ("MODIFIED", body("a", deletionTimestamp="2026-01-01T00:00:00Z"))],
)
async def test_deletion_stops_the_loop(event: str, gone: dict[str, Any]) -> None:
    fn = Recorder()
    loops = lifecycle.Loops(fn)
    loops.observe("ADDED", body("a"), {})
    await until(lambda: fn.seen)
    loops.observe(event, gone, {})
    await until(fn.exited.is_set)
    assert loops.running == {}
    loops.observe("DELETED", gone, {})  # a repeated goodbye is harmless


async def test_a_loop_that_does_not_return_is_cancelled_after_the_timeout() -> None:
    fn = Recorder(obey=False)
    loops = lifecycle.Loops(fn, cancellation_timeout=0.05)
    loops.observe("ADDED", body("a"), {})
    await until(lambda: fn.seen)
    loops.observe("DELETED", body("a"), {})
    await until(fn.exited.is_set)
    await loops.stop_all()


async def test_a_loop_that_raises_is_restarted_until_stopped() -> None:
    calls: list[int] = []

    async def flaky(stopped: lifecycle.Stopped, **_: Any) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("boom")
        await stopped.wait()

    loops = lifecycle.Loops(flaky, backoff=0.01)
    loops.observe("ADDED", body("a"), {})
    await until(lambda: len(calls) == 3)
    await loops.stop_all()
    assert loops.running == {} and len(calls) == 3


async def test_shutdown_stops_every_loop() -> None:
    fn = Recorder()
    loops = lifecycle.Loops(fn)
    for uid in "abc":
        loops.observe(None, body(uid), {})
    await until(lambda: len(fn.seen) >= 3)
    await loops.stop_all()
    assert loops.running == {}


def requires_a_finalizer(registry: kopf.OperatorRegistry) -> list[str]:
    """Handlers for which kopf would put its finalizer on an object: daemons and timers always,
    changing handlers (on.create/update/delete) unless optional. kopf keeps them in these
    sub-registries; there is no public accessor."""
    spawning = list(registry._spawning.get_all_handlers())
    changing = [h for h in registry._changing.get_all_handlers() if h.requires_finalizer]
    return [str(h.id) for h in [*spawning, *changing]]


def test_the_lifecycle_daemon_asks_kopf_for_no_finalizer() -> None:
    registry = kopf.OperatorRegistry()

    @lifecycle.daemon("cutover.dev", "v1alpha1", "modeldeployments", registry=registry)
    async def loop(**_: Any) -> None:
        return None

    assert requires_a_finalizer(registry) == []
    assert list(registry._watching.get_all_handlers())  # it runs from watch events instead


def test_the_operator_asks_kopf_for_no_finalizer() -> None:
    assert requires_a_finalizer(main.build_registry(None)) == []


async def test_a_relist_that_brings_a_new_object_under_the_same_name_ends_the_old_loop() -> None:
    """kopf relists on every reconnect and reports no DELETED for what vanished meanwhile."""
    old, new = Recorder(), Recorder()
    loops = lifecycle.Loops(lambda **kw: (old if kw["body"]["metadata"]["uid"] == "a" else new)(**kw))
    loops.observe(None, body("a"), {})
    await until(lambda: old.seen)
    loops.observe(None, {"metadata": {**body("b")["metadata"], "name": "md-a"}}, {})
    await until(lambda: old.exited.is_set() and new.seen)
    assert list(loops.running) == ["b"]
    await loops.stop_all()


async def test_a_late_event_of_a_deleted_object_starts_nothing() -> None:
    loops = lifecycle.Loops(Recorder())
    loops.observe(None, body("a"), {})
    loops.observe("DELETED", body("a"), {})
    loops.observe("MODIFIED", body("a", generation=9), {})
    assert loops.running == {}
    await loops.stop_all()
    loops.observe("MODIFIED", body("z"), {})  # after shutdown too
    assert loops.running == {}


async def test_a_loop_that_clings_on_after_cancellation_does_not_hold_up_shutdown() -> None:
    async def stubborn(stopped: lifecycle.Stopped, **_: Any) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # cleanup that never ends

    loops = lifecycle.Loops(stubborn, cancellation_timeout=0.05)
    loops.observe(None, body("a"), {})
    await asyncio.sleep(0.01)
    async with asyncio.timeout(2):
        await loops.stop_all()


def sharded(uid: str, shard: str | None, generation: int = 1) -> dict[str, Any]:
    return body(uid, generation, labels={"cutover.dev/shard": shard} if shard else {})


async def test_a_shard_serves_only_its_objects_and_lets_go_of_one_moved_away() -> None:
    """Two operators, shards "a" (the default) and "b", see the same watch events: each object
    gets exactly one loop, the unlabelled one in the default shard; relabelled, it changes hands."""
    a = lifecycle.Loops(Recorder(), shard=lifecycle.Shard("a", default=True))
    b = lifecycle.Loops(Recorder(), shard=lifecycle.Shard("b"))
    for event in (sharded("1", "a"), sharded("2", "b"), sharded("3", None), sharded("4", "c")):
        a.observe("ADDED", event, {})
        b.observe("ADDED", event, {})
    assert (sorted(a.running), sorted(b.running)) == (["1", "3"], ["2"])
    moved = sharded("1", "b", generation=2)
    a.observe("MODIFIED", moved, {})
    b.observe("MODIFIED", moved, {})
    assert (sorted(a.running), sorted(b.running)) == (["3"], ["1", "2"])
    back = sharded("1", "a", generation=3)
    a.observe("MODIFIED", back, {})
    b.observe("MODIFIED", back, {})
    assert (sorted(a.running), sorted(b.running)) == (["1", "3"], ["2"])
    await a.stop_all()
    await b.stop_all()


async def test_a_loop_keeps_of_managed_fields_only_who_owns_each_annotation() -> None:
    """managedFields mirrors every field of spec and status, a third of a ModelDeployment's
    body, and each loop kept it whole for the life of the object; a pass reads of it only
    which manager wrote an on-call annotation."""
    managed = [
        {"manager": "kubectl", "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}, "f:spec": {"f:model": {}}}},
        {"manager": "cutover", "fieldsV1": {"f:status": {"f:phase": {}, "f:history": {}}}},
        {"manager": "kubectl-annotate", "fieldsV1": {"f:metadata": {"f:annotations": {"f:cutover.dev/rollback": {}}}}},
    ]
    created = body("a", managedFields=managed)
    created["spec"] = {"model": {"name": "m"}}
    fn = Recorder()
    loops = lifecycle.Loops(fn)
    loops.observe("ADDED", created, {})
    await until(lambda: fn.seen)
    (loop,) = loops.running.values()
    assert loop.raw["metadata"]["managedFields"] == [managed[2]]
    assert handlers.annotation_writer(loop.raw, "cutover.dev/rollback") == "kubectl-annotate"
    assert loop.raw["spec"] == created["spec"] and created["metadata"]["managedFields"] == managed
    loops.observe("MODIFIED", body("a", generation=2, managedFields=managed[:2]), {})
    assert loop.raw["metadata"]["managedFields"] == [] and loop.raw["metadata"]["generation"] == 2
    await loops.stop_all()


def test_unchanged_objects_made_in_one_burst_are_reapplied_spread_out_not_in_one_wave() -> None:
    from cutover.operator.lifecycle import REAPPLY_SECONDS, apply_due, digest

    body = {"kind": "Service", "metadata": {"name": "m-0"}}
    wanted = digest(body)
    assert wanted == digest(dict(reversed(list(body.items())))), "key order must not matter"
    assert apply_due(None, wanted, 0.0, "ns/Service/m-0"), "never applied"
    assert apply_due(("other", 0.0), wanted, 1.0, "ns/Service/m-0"), "changed"
    names = [f"ns/Service/m-{i}" for i in range(2000)]
    due_after = []
    for name in names:
        # The first whole second at which the unchanged object is due again.
        second = next(t for t in range(0, 1000) if apply_due((wanted, 0.0), wanted, float(t), name))
        assert apply_due((wanted, 0.0), wanted, float(second + 1), name), "stays due once due"
        due_after.append(second)
    assert min(due_after) >= REAPPLY_SECONDS and max(due_after) <= REAPPLY_SECONDS * 1.5
    # Spread over the interval: no 10 s window of its 15 holds twice its even share.
    windows = Counter(t // 10 for t in due_after)
    assert len(windows) >= 15 and max(windows.values()) < 2 * len(names) / 15, windows.most_common(3)
