"""Per-object loops that never block deletion: a drop-in for ``@kopf.daemon`` without its finalizer.

A kopf daemon puts a finalizer on every object it serves, because kopf stops a daemon only when
it sees ``deletionTimestamp``, and an object without finalizers is gone at once (its DELETED
event carries none). The maintainer keeps it that way on purpose (nolar/kopf#896, #1001; the
timer bug it prevents is nolar/kopf#390). The price is ours to pay, not our users': with the
operator uninstalled or scaled to 0, ``kubectl delete namespace`` stays Terminating forever.

So cutover runs its per-object loop from raw watch events, which need no finalizer: the first
event of an object (the initial listing included) starts its loop, every later one hands it
the fresh body, and the DELETED event, or a ``deletionTimestamp``, stops it: the loop's
``stopped`` flag is set, it gets ``cancellation_timeout`` seconds to return, then it is
cancelled. Operator shutdown stops every loop the same way. Children need no finalizer either:
they carry owner references, and the garbage collector removes them.

Objects that still carry the finalizer an earlier version added (``cutover.dev/finalizer``)
lose it on the operator's first look: kopf removes its configured finalizer from every object
that no handler needs it on (see :data:`LEGACY_FINALIZER` in ``main.configure``).

What each kind's loops keep per object between passes (the event that wakes a loop, the status
writes the watch has not echoed yet) is one :class:`LoopMemory`, and :func:`serve` is the loop
itself: one pass, its errors, the wait for the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from cutover.api.contract import LABEL_SHARD

from .kube import ApiError

logger = logging.getLogger("cutover.operator.lifecycle")

ENDED_KEPT = 10_000
"""How many deleted uids are remembered, so that a late event of one starts no loop."""

LoopFn = Callable[..., Awaitable[None]]
"""An async function run once per object; it gets kopf's handler kwargs (indices included),
the live ``body`` and ``stopped``, and returns when ``stopped`` turns true."""

COALESCE_SECONDS = 0.2
"""Seconds a poked loop waits before its pass, so that the rest of a burst of changes arrives."""
CONFLICT_RETRY = 0.5
"""Seconds before the next pass after a 409: someone wrote the object since it was read."""
API_ERROR_RETRY = 5.0
"""Seconds before the next pass after any other refusal of the API server."""
ERROR_RETRY = 10.0
"""Seconds before the next pass after an unexpected error."""
PASSES_AT_ONCE = 16
"""Passes of one kind's loops that run at once; the others wait their turn. Unbounded, a burst
of 500 new ModelDeployments queued hundreds of requests behind the client's 32 connections, and
536 passes failed by the 30 s request timeout (each then waited 10 s and ran again)."""

REAPPLY_SECONDS = 300.0
"""An object the operator made is applied again, unchanged, after about this long (at most half
as long again: :func:`apply_due`), which repairs what someone edited or deleted by hand."""

Applied = tuple[str, float]
"""What was last applied of one object: the digest of its body (:func:`digest`) and when
(``time.monotonic()``)."""


def digest(obj: Mapping[str, Any]) -> str:
    """The SHA-256 of ``obj`` as sorted JSON (hex): equal for equal bodies, whatever their key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def apply_due(last: Applied | None, wanted: str, now: float, name: str) -> bool:
    """Whether an object whose body digests to ``wanted`` must be applied at ``now``: never
    applied, changed since ``last``, or unchanged for its re-apply interval. That interval is
    REAPPLY_SECONDS stretched by up to half, by a hash of ``name`` (the object's kind and name,
    say): objects made in one burst (2,000 ModelDeployments' children applied in a minute) are
    then re-applied over two and a half minutes, not in one wave that queues behind itself."""
    if last is None or last[0] != wanted:
        return True
    spread = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=2).digest()) / 65536
    return now - last[1] >= REAPPLY_SECONDS * (1 + spread / 2)


PER_EVENT_KWARGS = frozenset({"type", "event", "body", "meta", "spec", "status", "patch", "annotations", "labels"})
"""Handler kwargs that describe one event; a long-running loop reads the live ``body`` instead."""


ObjectKey = tuple[str, str]
"""An object's (namespace, name): what a loop's memory is kept under."""


class Stopped:
    """Whether the loop was asked to stop: false until then, true after. ``await wait()``
    returns once it is (kopf.DaemonStopped's contract, as far as the loops use it)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._wakes: list[asyncio.Event] = []

    def __bool__(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()
        for wake in self._wakes:
            wake.set()

    def wakes(self, event: asyncio.Event) -> None:
        """Set ``event`` too when the loop is asked to stop (now, if it already was): a loop
        then waits on one event for a poke and for its stop. :meth:`forget` it when the loop ends."""
        self._wakes.append(event)
        if self:
            event.set()

    def forget(self, event: asyncio.Event) -> None:
        """Stop setting ``event`` (its loop ended: a loop restarted after a failure brings a new
        one, and the old ones would pile up)."""
        with contextlib.suppress(ValueError):
            self._wakes.remove(event)

    @property
    def waking(self) -> int:
        """How many events a stop would set."""
        return len(self._wakes)

    async def wait(self) -> None:
        await self._event.wait()


@dataclass(frozen=True)
class Shard:
    """Which objects one operator serves when several share a cluster (``cutover operator
    --shard NAME``): those labelled ``cutover.dev/shard=NAME``, and with ``default`` also those
    without the label, so objects made before sharding stay served. An object is served by at
    most one shard as long as shard names differ and one shard at most is the default."""

    name: str
    default: bool = False

    def serves(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with these labels is this shard's."""
        value = labels.get(LABEL_SHARD)
        return value == self.name or (value is None and self.default)


@dataclass
class _Loop:
    task: asyncio.Task[None]
    stopped: Stopped
    raw: dict[str, Any]
    """The body the loop sees through a kopf.Body view; replaced in place on every event."""


class Loops:
    """The running loops of one operator run, one per object (by uid).

    ``fn`` is the loop; ``cancellation_timeout`` is how long (seconds) a stopped loop may take
    to return before it is cancelled; ``backoff`` is how long to wait before restarting a loop
    that raised; ``shard``, when given, limits the loops to the objects it serves (an object
    relabelled out of it has its loop stopped, as if deleted, and the other shard starts one)."""

    def __init__(
        self, fn: LoopFn, *, cancellation_timeout: float = 10.0, backoff: float = 10.0, shard: Shard | None = None
    ) -> None:
        self.fn = fn
        self.shard = shard
        self.cancellation_timeout = cancellation_timeout
        self.backoff = backoff
        self.running: dict[str, _Loop] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._ended: OrderedDict[str, None] = OrderedDict()
        """Uids whose object was deleted, newest last: a late event for one starts nothing."""
        self._closed = False

    def observe(self, event_type: str | None, raw_body: dict[str, Any], kwargs: dict[str, Any]) -> None:
        """Handle one watch event of an object: start, refresh or stop its loop."""
        metadata = raw_body.get("metadata", {})
        uid = str(metadata.get("uid", ""))
        if not uid:
            return
        loop = self.running.get(uid)
        if event_type == "DELETED" or metadata.get("deletionTimestamp"):
            if loop is not None:
                self._stop(uid)
            self._remember_ended(uid)
            return
        if self.shard is not None and not self.shard.serves(metadata.get("labels") or {}):
            if loop is not None:
                self._stop(uid)  # moved to another shard; moved back, it starts a new loop
            return
        if self._closed or uid in self._ended:
            return
        if loop is not None:
            loop.raw.clear()
            loop.raw.update(kept(raw_body))
            return
        # Names are unique in a namespace: a loop for the same name under another uid serves an
        # object that was deleted while the watch was down (a relist reports no DELETED for it).
        key = (metadata.get("namespace"), metadata.get("name"))
        for other, running in list(self.running.items()):
            if (running.raw.get("metadata", {}).get("namespace"), running.raw.get("metadata", {}).get("name")) == key:
                self._stop(other)
                self._remember_ended(other)
        raw = kept(raw_body)
        stopped = Stopped()
        call = {k: v for k, v in kwargs.items() if k not in PER_EVENT_KWARGS}
        call.update(body=kopf.Body(cast(kopf.RawBody, raw)), stopped=stopped)
        task = asyncio.create_task(
            self._run(call, stopped), name=f"loop {metadata.get('namespace')}/{metadata.get('name')}"
        )
        self.running[uid] = _Loop(task, stopped, raw)

    async def _run(self, call: dict[str, Any], stopped: Stopped) -> None:
        while not stopped:
            try:
                await self.fn(**call)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("per-object loop failed; restarting in %s s", self.backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=self.backoff)

    def _stop(self, uid: str) -> None:
        loop = self.running.pop(uid)
        loop.stopped.set()
        stopping = asyncio.create_task(self._finish(loop))
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)

    def _remember_ended(self, uid: str) -> None:
        self._ended[uid] = None
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    async def _finish(self, loop: _Loop) -> None:
        """Give a stopped loop ``cancellation_timeout`` seconds to return, then cancel it and
        give it as long again; a loop that still runs after that is left behind with a log."""
        done, _ = await asyncio.wait({loop.task}, timeout=self.cancellation_timeout)
        if not done:
            loop.task.cancel()
            done, _ = await asyncio.wait({loop.task}, timeout=self.cancellation_timeout)
        if not done:
            logger.error("loop %s did not end within twice its cancellation timeout", loop.task.get_name())
            return
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await loop.task

    async def stop_all(self) -> None:
        """Stop every loop (operator shutdown) and wait until they are all gone; later events
        start nothing."""
        self._closed = True
        for uid in list(self.running):
            self._stop(uid)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)


def kept(raw_body: Mapping[str, Any]) -> dict[str, Any]:
    """What a loop keeps of an object's body between events: all of it but its managedFields,
    of which each entry keeps its manager and the annotations it owns (who wrote an on-call
    request, ``handlers.annotation_writer``). The rest of managedFields mirrors every field of
    spec and status as nested dicts, a third of a ModelDeployment's body, kept for each object
    for the life of its loop."""
    meta = raw_body.get("metadata") or {}
    entries = meta.get("managedFields")
    if not entries:
        return dict(raw_body)
    owned = []
    for entry in entries:
        annotations = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations")
        if annotations:
            owned.append(
                {"manager": entry.get("manager", ""), "fieldsV1": {"f:metadata": {"f:annotations": annotations}}}
            )
    return {**raw_body, "metadata": {**meta, "managedFields": owned}}


def daemon(
    group: str,
    version: str,
    plural: str,
    *,
    registry: kopf.OperatorRegistry,
    cancellation_timeout: float = 10.0,
    backoff: float = 10.0,
    shard: Shard | None = None,
) -> Callable[[LoopFn], LoopFn]:
    """Run the decorated function once per object of the resource, like ``@kopf.daemon``, but
    from raw watch events, so no finalizer is ever added (see the module docstring). The
    function gets kopf's handler kwargs (``name``, ``namespace``, ``memo``, ``logger``, the
    indices), a live ``body`` and ``stopped`` (a :class:`Stopped`). With ``shard``, only the
    objects of that shard get a loop."""

    def decorator(fn: LoopFn) -> LoopFn:
        loops = Loops(fn, cancellation_timeout=cancellation_timeout, backoff=backoff, shard=shard)

        @kopf.on.event(group, version, plural, registry=registry, id=f"{fn.__name__}/loops")
        async def _observe(type: str | None, body: kopf.Body, **kwargs: Any) -> None:
            loops.observe(type, dict(body), kwargs)

        @kopf.on.cleanup(registry=registry, id=f"{fn.__name__}/stop")
        async def _stop_all(**_: Any) -> None:
            await loops.stop_all()

        return fn

    return decorator


# ----------------------------------------------------------------------------- loop memory


@dataclass
class LoopMemory:
    """What one kind's loops keep per object (by :data:`ObjectKey`) between passes: the event
    that wakes each loop, and the status writes kopf's watch has not echoed yet.

    A loop reads its object through :meth:`latest`, records each status write with
    :meth:`remember`, and calls :meth:`forget` when it ends; a context that keeps more per
    object drops that too when :meth:`forget` says the ending loop owned the key."""

    wakes: dict[ObjectKey, asyncio.Event] = field(default_factory=dict)
    """Per object: the event that wakes its loop (set by :meth:`poke`)."""
    writes: dict[ObjectKey, tuple[frozenset[str], dict[str, Any]]] = field(default_factory=dict)
    """Per object: the resourceVersions our status writes have superseded since kopf's view
    last caught up, and what the last write returned."""
    passes: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(PASSES_AT_ONCE))
    """Held by each pass (:func:`serve`): at most :data:`PASSES_AT_ONCE` of this kind at once."""

    def start(self, key: ObjectKey) -> asyncio.Event:
        """Register the loop that now serves ``key``; returns its wake-up event (what
        :meth:`forget` is later called with)."""
        wake = self.wakes[key] = asyncio.Event()
        return wake

    def poke(self, namespace: str, name: str) -> None:
        """Wake the loop of one object, if it runs."""
        event = self.wakes.get((namespace, name))
        if event is not None:
            event.set()

    def observed(self, key: ObjectKey, body: Mapping[str, Any]) -> bool:
        """Take one watch event of the object; whether it is news to its loop. Not news: one of
        our own status writes coming back (kopf's view has caught up with it, so it is no longer
        kept), or a version one of them superseded; the loop's next pass would only find the
        status its last pass wrote. Poking on every event made each status write cost a second
        pass of the same object."""
        mine = self.writes.get(key)
        if mine is None:
            return True
        version = body.get("metadata", {}).get("resourceVersion")
        if version == mine[1].get("metadata", {}).get("resourceVersion"):
            del self.writes[key]
            return False
        return version not in mine[0]

    def latest(self, key: ObjectKey, body: Mapping[str, Any]) -> dict[str, Any]:
        """The freshest view of the object: kopf's live ``body``, unless it still predates one
        of our status writes, then what the last write returned.

        The watch can lag several writes behind (a loop that writes status every second saw
        kopf's view stay two writes old for seconds), so every resourceVersion a write of ours
        superseded is remembered until kopf's view moves past them all; comparing with the last
        one only sent every pass of the lag into a 409."""
        mine = self.writes.get(key)
        if mine is not None:
            if body.get("metadata", {}).get("resourceVersion") in mine[0]:
                return mine[1]
            del self.writes[key]  # kopf caught up with our writes, or someone else wrote since
        return dict(body)

    def remember(self, key: ObjectKey, read: Mapping[str, Any], written: dict[str, Any]) -> None:
        """Keep what a status write returned (``written``), and that the version it was made
        from (``read``, as :meth:`latest` gave it) is now stale."""
        self.supersede(key, str(read["metadata"]["resourceVersion"]), written)

    def supersede(self, key: ObjectKey, stale: str, current: dict[str, Any]) -> None:
        """Say that resourceVersion ``stale`` is out of date and ``current`` is the object now
        (a status write's answer, or the object read again after a 409)."""
        superseded = self.writes[key][0] if key in self.writes else frozenset()
        self.writes[key] = (superseded | {stale}, current)

    def forget(self, key: ObjectKey, wake: asyncio.Event) -> bool:
        """Drop what is kept about an object whose loop ended (the object is gone, or the
        operator stops). Nothing is dropped when its wake-up event is no longer ``wake``: the
        object was created again under the same name and the new loop owns it. Returns whether
        the ending loop owned the key (then the caller drops its own per-object maps too)."""
        if self.wakes.get(key) is not wake:
            return False
        del self.wakes[key]
        self.writes.pop(key, None)
        return True


async def serve(
    memory: LoopMemory,
    key: ObjectKey,
    stopped: Stopped,
    one_pass: Callable[[], Awaitable[float]],
    *,
    what: str,
    gone: Callable[[], Awaitable[bool]],
    forget: Callable[[asyncio.Event], None],
    failed: Callable[[str], None],
    log: logging.Logger,
    coalesce: float = COALESCE_SECONDS,
    conflict: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run the passes of one object's loop until ``stopped`` is set or the object is gone.

    ``one_pass`` returns the seconds until the next pass; it runs holding ``memory.passes``
    (a burst of objects takes turns rather than timing out together); a poke (:meth:`LoopMemory.poke`)
    starts it sooner, ``coalesce`` seconds after the poke so that the rest of its burst (a
    status echo, a child's several updates) is handled in the same pass. A pass that fails is
    counted (``failed`` gets ``ApiError<status>`` or ``Unexpected``), logged under ``what`` (the
    kind) and retried: after :data:`CONFLICT_RETRY` for a 409 (``conflict``, when given, reads
    the object again first), :data:`API_ERROR_RETRY` for another refusal, :data:`ERROR_RETRY`
    for anything else. A 404 ends the loop when ``gone`` confirms that the object no longer
    exists (deleted, or created again under another uid while no watch event said so).
    ``forget`` gets the loop's wake-up event when it ends, for :meth:`LoopMemory.forget`."""
    wake = memory.start(key)
    stopped.wakes(wake)
    try:
        while not stopped:
            wake.clear()
            try:
                async with memory.passes:
                    delay = await one_pass()
            except ApiError as err:
                if err.status == 404 and await gone():
                    log.info("the %s is gone; its loop ends", what)
                    return
                delay = API_ERROR_RETRY
                if err.status == 409:
                    delay = CONFLICT_RETRY
                    if conflict is not None:
                        with contextlib.suppress(ApiError):
                            await conflict()
                failed(f"ApiError{err.status}")
                log.warning("%s pass failed: %s", what, err)
            except Exception:
                failed("Unexpected")
                log.exception("%s pass failed", what)
                delay = ERROR_RETRY
            # Until poked or asked to stop (``stopped`` sets ``wake`` too): a stopped loop that
            # waited out its delay (30 s at rest) held operator shutdown for its cancellation
            # timeout, each kind in turn, and with it the release of the leader's Lease
            # (leader.py). One event in the loop's own task: a resting loop holds no other task
            # (waiting on two events through asyncio.wait_for took three more, 2,000 loops 6,000).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await wake.wait()
                if not stopped:
                    await asyncio.sleep(coalesce)
    finally:
        stopped.forget(wake)
        forget(wake)
