"""Loopback HTTP servers for the end-to-end tests, each an aiohttp application in a thread of its
own: notification receivers (answer 200 to every POST and keep the JSON bodies by path, as a
webhook endpoint or a Slack incoming webhook would take them) and a sample OpenAI-compatible
chat upstream for ``llm`` models (answers from scripted personas, as a vLLM would answer)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Self

from aiohttp import web

from tests.support.ports import free_port


class Loopback:
    """One aiohttp application on ``host`` (127.0.0.1 unless a real node's pods must reach it):
    start with :meth:`start`, end with :meth:`stop`. Subclasses add their routes in :meth:`routes`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def url(self, path: str) -> str:
        """The address of ``path`` on this server (``/hooks/oncall``)."""
        return f"http://{self.host}:{self.port}{path}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        """Serve in a thread of its own; return ``self`` once the port listens.

        Raises:
            TimeoutError: the server did not start within 10 s."""
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        app = web.Application()
        self.routes(app)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()


class Receivers(Loopback):
    """POST to :meth:`url`, read what arrived with :meth:`bodies`."""

    def __init__(self) -> None:
        super().__init__()
        self._received: dict[str, list[dict[str, Any]]] = {}

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies POSTed to ``path`` so far, oldest first."""
        with self._lock:
            return list(self._received.get(path, []))

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._record)

    async def _record(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self._received.setdefault(request.path, []).append(body)
        return web.Response(text="ok")


class ChatUpstream(Loopback):
    """An OpenAI-compatible chat server with one scripted persona per base URL.

    ``personas`` maps a name to the answers it gives, in turn; :meth:`base` is the URL to put
    in a ModelDeployment's ``model.upstream.url`` (``http://127.0.0.1:P/<tag>/<persona>``, so
    two revisions with the same persona and different tags each go through the whole script;
    the persona comes last because a base URL that ends in ``/v1`` is taken as the API root).
    ``GET <base>/v1/models`` answers as a vLLM does (serving's readiness reads it); ``POST
    <base>/v1/chat/completions`` answers the next line of the persona's script, whatever was
    asked. :meth:`answered` counts the answers per base."""

    def __init__(self, personas: dict[str, Sequence[str]]) -> None:
        super().__init__()
        self.personas = {name: list(lines) for name, lines in personas.items()}
        self._scripts: dict[str, Iterator[str]] = {}
        self._answered: dict[str, int] = {}

    def base(self, persona: str, tag: str) -> str:
        """The upstream URL of ``persona`` for one revision (``tag``: its version).

        Raises:
            KeyError: no such persona."""
        if persona not in self.personas:
            raise KeyError(f"no persona {persona!r}; known: {', '.join(self.personas)}")
        return self.url(f"/{tag}/{persona}")

    def answered(self, persona: str, tag: str) -> int:
        """Chat answers given so far through :meth:`base` ``(persona, tag)``."""
        with self._lock:
            return self._answered.get(f"{persona}/{tag}", 0)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/{tag}/{persona}/v1/models", self._models)
        app.router.add_post("/{tag}/{persona}/v1/chat/completions", self._chat)

    async def _models(self, request: web.Request) -> web.Response:
        if request.match_info["persona"] not in self.personas:
            raise web.HTTPNotFound()
        return web.json_response({"object": "list", "data": [{"id": request.match_info["persona"], "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        persona, tag = request.match_info["persona"], request.match_info["tag"]
        if persona not in self.personas:
            raise web.HTTPNotFound()
        body = await request.json()
        key = f"{persona}/{tag}"
        with self._lock:
            script = self._scripts.setdefault(key, itertools.cycle(self.personas[persona]))
            content = next(script)
            self._answered[key] = self._answered.get(key, 0) + 1
            number = self._answered[key]
        return web.json_response(
            {
                "id": f"chatcmpl-{tag}-{number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", persona),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": len(content.split()), "total_tokens": 0},
            }
        )
