"""Notification receivers for the end-to-end tests: one aiohttp server on loopback that answers
200 to every POST and keeps the JSON bodies by path, as a webhook endpoint or a Slack incoming
webhook would take them."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

from tests.support.ports import free_port


class Receivers:
    """Start with :meth:`start`, POST to :meth:`url`, read with :meth:`bodies`, end with :meth:`stop`."""

    def __init__(self) -> None:
        self.port = free_port()
        self._received: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def url(self, path: str) -> str:
        """The URL that records what is POSTed under ``path`` (``/hooks/oncall``)."""
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies POSTed to ``path`` so far, oldest first."""
        with self._lock:
            return list(self._received.get(path, []))

    def start(self) -> Receivers:
        """Serve in a thread of its own; return once the port listens.

        Raises:
            TimeoutError: the server did not start within 10 s."""
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the receivers did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    async def _record(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self._received.setdefault(request.path, []).append(body)
        return web.Response(text="ok")

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._record)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()
