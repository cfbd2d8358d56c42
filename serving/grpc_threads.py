"""How grpcio's threads share a CPU with the event loop of ``cutover serve`` and ``cutover gateway``.

grpc.aio runs a call through three kinds of thread: grpc's I/O threads read and write the socket,
one completion-queue poller thread collects finished operations, and the asyncio event loop runs
the handler. On a serving pod held to one core (a Guaranteed pod with one CPU under the static CPU
manager, or any pinned process) every hand-off is a context switch, and the scheduler lets a thread
that wakes preempt the one running: measured with ghz at 8 calls in flight against ``cutover
serve`` pinned to one CPU, grpcio 1.85, the event loop was preempted 6 times a call and a call cost
320-370 us of CPU. Two changes take it to 200-270 us (``benchmarks/README.md``, "gRPC"):

- ``use_poll_io``: grpc's poll-based I/O (its default before EventEngine) instead of the
  EventEngine listener and endpoints, so the poller thread reads and writes the socket itself and
  no I/O thread is woken per call. Set through ``GRPC_EXPERIMENTS`` before grpc is first imported,
  as grpc reads it once; an operator's own ``GRPC_EXPERIMENTS`` wins.
- ``poller_yields``: the poller thread at nice ``POLLER_NICE``, so its wake-ups stop preempting the
  event loop; it runs when the loop waits, and collects the operations finished meanwhile in one
  pass. At nice 10 it keeps about a tenth of a CPU against a busy thread of nice 0, which bounds
  gRPC's throughput only while the CPU is saturated anyway.

Nothing here imports grpc: ``use_poll_io`` must run before it is.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import MutableMapping

log = logging.getLogger("cutover.serving")

POLL_IO_EXPERIMENTS = "-event_engine_listener,-event_engine_for_all_other_endpoints"
"""The value of ``GRPC_EXPERIMENTS`` that turns grpc's EventEngine I/O off, in grpcio 1.85's
names (it logs an error for a name it does not know: ``event_engine_endpoint`` is gone)."""
POLLER_NICE = 10
"""The nice value of grpc.aio's completion-queue poller thread (the event loop's stays at 0)."""
POLLER_TARGET = "_poll_wrapper"
"""The name of grpc.aio's poller function, which ``threading`` puts in its thread's name."""


def use_poll_io(environ: MutableMapping[str, str] = os.environ, imported: bool | None = None) -> bool:
    """Ask grpc for its poll-based I/O by setting ``GRPC_EXPERIMENTS`` in ``environ``, unless it is
    already set (the operator's choice stands) or grpc was already imported (``imported``; None:
    look in ``sys.modules``), when the setting would no longer act. Returns whether it was set."""
    if imported is None:
        imported = "grpc" in sys.modules
    if "GRPC_EXPERIMENTS" in environ or imported:
        return False
    environ["GRPC_EXPERIMENTS"] = POLL_IO_EXPERIMENTS
    return True


def poller_yields(nice: int = POLLER_NICE) -> list[int]:
    """Lower grpc.aio's completion-queue poller thread to ``nice`` at least (call after the first
    gRPC server or channel starts it; again after a restart; a thread already nicer is left as it
    is). Returns the native ids of the poller threads found: none when grpc.aio has not started
    one, or when grpcio renamed it, which is logged."""
    found = []
    for thread in threading.enumerate():
        if POLLER_TARGET not in thread.name or thread.native_id is None:
            continue
        try:
            if os.getpriority(os.PRIO_PROCESS, thread.native_id) < nice:
                os.setpriority(os.PRIO_PROCESS, thread.native_id, nice)
        except OSError as error:  # the thread ended meanwhile
            log.debug("grpc's poller thread %d: %s", thread.native_id, error)
            continue
        found.append(thread.native_id)
    if not found:
        log.info("no grpc.aio poller thread found (a thread named after %s): its nice is unchanged", POLLER_TARGET)
    return found
