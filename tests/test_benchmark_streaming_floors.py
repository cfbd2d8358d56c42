"""benchmarks/streaming.py measures two floors beside the gateway and cutover serve: two byte relays
and two aiohttp proxies in their places. A floor is only a floor if it passes the answer on whole:
each must hand the client exactly the bytes of the upstream's streamed answer."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks import streaming
from tests.support.ports import free_port
from tests.support.waiting import wait_until

BODY = {"model": "bench-llm", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@contextlib.contextmanager
def role(*argv: str) -> Iterator[int]:
    """One of the benchmark's processes (``--role ...``) on a free port, once it answers."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(Path(streaming.__file__)), "--role", argv[0], str(port), *argv[1:]])
    try:
        wait_until(lambda: ready(port), timeout=30, what=f"the {argv[0]} to answer")
        yield port
    finally:
        process.terminate()
        process.wait(10)


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200
    except httpx.TransportError:
        return False


def answer(port: int) -> bytes:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=BODY, timeout=10).content


@pytest.mark.parametrize("kind", ["relay", "proxy"])
def test_two_hops_of_each_floor_pass_the_streamed_answer_on_unchanged(kind: str) -> None:
    with role("upstream", "0") as upstream, role(kind, str(upstream)) as far, role(kind, str(far)) as near:
        direct = answer(upstream)
        assert answer(near) == direct
    events = [json.loads(line[6:]) for line in direct.decode().split("\n\n") if line.startswith("data: {")]
    words = "".join(event["choices"][0]["delta"].get("content", "") for event in events)
    assert words == streaming.ANSWER  # the whole answer, not only the first event
