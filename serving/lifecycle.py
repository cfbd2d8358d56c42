"""What every long-running serving-side process does on SIGTERM or SIGINT: return from
``until_signalled`` so the caller can drain (readiness 503, a delay, then close the listener)."""

from __future__ import annotations

import asyncio
import signal


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
