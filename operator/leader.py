"""Leader election on a ``coordination.k8s.io`` Lease: several operator replicas, one leading.

The process takes the Lease *before* kopf starts, so a standby runs no handler and writes
nothing (its only request is a read of the Lease every retry period), and it exits the moment it
cannot renew, so a deposed leader never writes either. The Deployment restarts it, as a standby.
This is what kube-controller-manager and kube-scheduler do with client-go's leader election
(their ``OnStoppedLeading`` logs "leaderelection lost" and exits): stepping down by exiting needs
no handler to be paused half-way, and all of a rollout's state is in its status, so the next
leader's first pass continues where the last one stopped, as after any crash.

Why this loop and not a library's:

- kopf's peering (``settings.peering``) does not elect: each operator writes its priority into
  a KopfPeering object and pauses its watches while it sees a peer of higher priority, and peers
  of equal priority (two replicas of one Deployment) all pause. Nothing in it is a Lease, and
  handlers already running go on while paused.
- ``kubernetes.leaderelection`` (the official Python client) runs its loop on a thread with the
  synchronous ``kubernetes`` client, an SDK the size of the rest of cutover that the operator
  otherwise does without (``cutover.serving.kube`` is its one client), and it leaves what happens
  on losing the Lease to a callback.
- The protocol itself is small and written down in client-go's ``tools/leaderelection`` (read, not
  copied): a holder renews ``renewTime`` every ``retry_period``; a candidate may take the Lease when
  it is free, or when its record has not changed for ``leaseDurationSeconds`` *as measured on the
  candidate's own monotonic clock from when it saw the record change*, never by comparing the
  ``renewTime`` written there with its own wall clock (clocks of two nodes disagree); every write
  carries the resourceVersion read, so two candidates cannot both win.

The clock. The leader counts its renew deadline from the moment it *sent* its last successful
renewal; the standby counts the lease duration from the moment it *read* that renewal, which is
later. With ``renew_deadline < lease_duration`` the leader has stopped (exited) at least
``lease_duration - renew_deadline`` seconds before any standby can take over; that margin covers
a write already on the wire when the leader exits and a difference in clock rates. A standby takes
over at most ``lease_duration + retry_period`` seconds after the leader's last renewal (plus kopf's
own start, about a second): 12 s with the chart's defaults (10 s, 7 s, 2 s).

The loop runs on its own thread with its own event loop and HTTP session, so that a busy or
blocked kopf event loop can neither delay a renewal nor keep the process alive past its deadline:
the exit (``os._exit``) happens on this thread, whatever the other one is doing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import aiohttp

from . import metrics
from .kube import ApiError, Kube

logger = logging.getLogger("cutover.operator.leader")

LOST_EXIT_CODE = 3
"""The process's exit status when it stopped leading without being asked to stop."""

STOP_POLL_SECONDS = 0.1
"""How often a standby waiting for the Lease looks whether it was asked to stop."""

LEASE_API = "coordination.k8s.io/v1"


class LeaseLost(Exception):
    """Another identity holds the Lease this process thought it held."""


@dataclass(frozen=True)
class LeaseSettings:
    """Which Lease, and its timing in seconds (the names client-go and kube-scheduler use).

    Raises:
        ValueError: unless ``0 < retry_period < renew_deadline < lease_duration`` (the margin the
            module docstring's clock argument needs), or the name or namespace is empty.
    """

    name: str
    namespace: str
    lease_duration: int
    """How long a candidate waits, after it last saw the Lease change, before taking it."""
    renew_deadline: float
    """How long the leader keeps acting without a successful renewal before it exits."""
    retry_period: float
    """How often the leader renews and a standby looks."""

    def __post_init__(self) -> None:
        if not self.name or not self.namespace:
            raise ValueError("the Lease needs a name and a namespace")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, got "
                f"{self.retry_period} s, {self.renew_deadline} s, {self.lease_duration} s"
            )


def identity() -> str:
    """This process's holder identity: the host (the pod's name) and a random suffix, as
    kube-scheduler does, so a restarted container is a new candidate and not its old self."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Observed:
    """The Lease as last read (None: there is none) and the monotonic time at which a read first
    showed its current record."""

    lease: dict[str, Any] | None
    changed_at: float

    def after_read(self, lease: dict[str, Any] | None, now: float) -> Observed:
        """This observation after reading ``lease`` at ``now``: the clock restarts only when the
        record (``spec``) changed."""
        if _spec(lease) == _spec(self.lease):
            return Observed(lease, self.changed_at)
        return Observed(lease, now)


def _spec(lease: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = (lease or {}).get("spec") or {}
    return spec


def holder(lease: dict[str, Any] | None) -> str:
    """Who holds the Lease; "" when nobody does (none, or released)."""
    return str(_spec(lease).get("holderIdentity") or "")


def free_in(observed: Observed, me: str, now: float) -> float:
    """Seconds until ``me`` may take the Lease: 0 when there is none, it was released, ``me``
    holds it, or its record has not changed for its ``leaseDurationSeconds``."""
    spec = _spec(observed.lease)
    if holder(observed.lease) in ("", me):
        return 0.0
    return max(0.0, observed.changed_at + float(spec.get("leaseDurationSeconds") or 0) - now)


def _microtime(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claimed(lease: dict[str, Any] | None, me: str, settings: LeaseSettings, now: datetime) -> dict[str, Any]:
    """The Lease to write to take (or keep) it as ``me`` at wall time ``now``: the same object
    with its resourceVersion, so the write fails (409) if anyone wrote it since it was read.
    Taking it from another holder (or from nobody) sets ``acquireTime`` and counts a transition."""
    spec = dict(_spec(lease))
    if spec.get("holderIdentity") != me:
        spec["acquireTime"] = _microtime(now)
        spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1 if lease else 0
    spec.update(holderIdentity=me, leaseDurationSeconds=settings.lease_duration, renewTime=_microtime(now))
    meta = {"name": settings.name, "namespace": settings.namespace}
    if lease:
        meta["resourceVersion"] = lease["metadata"]["resourceVersion"]
    return {"apiVersion": LEASE_API, "kind": "Lease", "metadata": meta, "spec": spec}


def released(lease: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The Lease given up: no holder and a one-second duration, so a standby takes it at its
    next look instead of waiting out the lease duration (client-go's ReleaseOnCancel)."""
    spec = {**_spec(lease), "holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _microtime(now)}
    return {**lease, "spec": spec}


class Elector:
    """Takes and keeps the Lease on a thread of its own.

    ``start()`` begins; ``wait_leading(stop)`` blocks until this process leads or ``stop`` is set;
    ``stop()`` (after the work that needed leadership has stopped) gives the Lease up and ends the
    thread. When a renewal does not succeed within ``renew_deadline``, or the Lease turns out to
    be another's, the process exits at once with :data:`LOST_EXIT_CODE`.
    """

    def __init__(self, settings: LeaseSettings, client: Callable[[], Kube]) -> None:
        """``client`` makes the thread's own API client (it is opened on the thread's event loop)."""
        self.settings, self.client, self.me = settings, client, identity()
        self.leading = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="leader-election", daemon=True)
        self._lease: dict[str, Any] | None = None
        self._renewed_at = 0.0

    def start(self) -> None:
        metrics.LEADER.labels(self.settings.name).set(0)  # a standby says so from the start
        logger.info(
            "leader election: waiting for Lease %s/%s as %s", self.settings.namespace, self.settings.name, self.me
        )
        self._thread.start()

    def wait_leading(self, stop: threading.Event) -> None:
        """Block until this process leads or ``stop`` is set (the election goes on until
        ``stop()``). ``stop`` is looked at every tenth of a second: it is set by a signal handler,
        which cannot safely wake a wait on an Event the interrupted thread may be inside of."""
        while not self.leading.wait(STOP_POLL_SECONDS) and not stop.is_set():
            pass

    def stop(self) -> None:
        """Stop renewing and release the Lease if this process holds it; returns when done."""
        self._stop.set()
        self._thread.join()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception as error:  # no credentials, say: nothing would ever lead or exit
            logger.exception("leader election failed")
            self._lose(f"leader election failed: {error}")

    async def _run(self) -> None:
        kube = self.client()
        async with kube:
            if not await self._acquire(kube):
                return
            self.leading.set()
            metrics.LEADER.labels(self.settings.name).set(1)
            logger.info("leader election: leading (Lease %s/%s)", self.settings.namespace, self.settings.name)
            await self._renew(kube)
            metrics.LEADER.labels(self.settings.name).set(0)
            await self._release(kube)

    async def _stopped(self, seconds: float) -> bool:
        """Wait up to ``seconds``; whether ``stop()`` was called."""
        return await asyncio.to_thread(self._stop.wait, max(0.0, seconds))

    async def _read(self, kube: Kube) -> dict[str, Any] | None:
        try:
            return await kube.get(LEASE_API, "Lease", self.settings.namespace, self.settings.name)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def _acquire(self, kube: Kube) -> bool:
        """Until the Lease is ours (True) or ``stop()`` was called (False)."""
        observed = Observed(None, time.monotonic())
        while True:
            wait = self.settings.retry_period
            started = time.monotonic()
            try:
                lease = await self._read(kube)
                observed = observed.after_read(lease, time.monotonic())
                wait = min(wait, free_in(observed, self.me, time.monotonic()))
                if wait == 0:
                    claim = claimed(lease, self.me, self.settings, datetime.now(UTC))
                    self._lease = await (kube.create(claim) if lease is None else kube.replace(claim))
                    self._renewed_at = started
                    return True
            except ApiError as error:
                if error.status == 409:  # another candidate was quicker
                    logger.debug("leader election: %s", error)
                else:  # 403: the Role does not grant this Lease
                    logger.warning("leader election: the Lease was refused: %s", error)
                wait = self.settings.retry_period
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                logger.warning("leader election: cannot reach the API server: %s", error)
                wait = self.settings.retry_period
            if await self._stopped(wait):
                return False

    async def _renew(self, kube: Kube) -> None:
        """Renew every retry period until ``stop()``; exit the process when a renewal is overdue
        or the Lease is another's."""
        settings = self.settings
        while True:
            deadline = self._renewed_at + settings.renew_deadline
            if await self._stopped(min(settings.retry_period, deadline - time.monotonic())):
                return
            started = time.monotonic()
            if started >= deadline:
                self._lose(f"not renewed for {settings.renew_deadline} s")
            try:
                await asyncio.wait_for(self._renew_once(kube), timeout=deadline - started)
                self._renewed_at = started
            except LeaseLost as lost:
                self._lose(str(lost))
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as error:
                logger.warning("leader election: renewal failed: %s", error or type(error).__name__)

    async def _renew_once(self, kube: Kube) -> None:
        assert self._lease is not None
        try:
            claim = claimed(self._lease, self.me, self.settings, datetime.now(UTC))
            self._lease = await kube.replace(claim)
        except ApiError as error:
            if error.status not in (404, 409):
                raise
            lease = await self._read(kube)  # changed or deleted by someone else: whose is it now?
            if holder(lease) != self.me:
                raise LeaseLost(f"the Lease is now held by {holder(lease) or 'nobody'}") from error
            self._lease = lease
            raise

    def _lose(self, reason: str) -> NoReturn:
        metrics.LEADER.labels(self.settings.name).set(0)
        logger.critical("leader election lost: %s; exiting so that this process writes nothing more", reason)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(LOST_EXIT_CODE)

    async def _release(self, kube: Kube) -> None:
        assert self._lease is not None  # set when leading began
        try:
            await asyncio.wait_for(
                kube.replace(released(self._lease, datetime.now(UTC))),
                timeout=self.settings.renew_deadline,
            )
            logger.info("leader election: Lease released")
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as error:
            logger.warning("leader election: could not release the Lease (it expires by itself): %s", error)
