"""Faults an adversarial review found in the gateway, each as the client would see it: a request
that the gateway itself mishandles never counts a failure against a revision, and bad client input
gets a 4xx JSON error, never a 500."""

from __future__ import annotations

from typing import Any

from .test_gateway_requests import MODEL, Revision, Stack, deployment, stack

__all__ = ["stack"]  # the fixture, used by name


def split(weight_a: int = 100) -> dict[str, Any]:
    return deployment(
        [
            {"revision": "aaa", "role": "stable", "weight": weight_a},
            {"revision": "bbb", "role": "candidate", "weight": 100 - weight_a},
        ],
        history={"aaa": "1"},
        candidate="bbb",
        version="2",
    )


async def test_head_requests_are_answered_and_never_open_a_revisions_circuit(stack: Stack) -> None:
    """aiohttp serves HEAD on every GET route; the gateway once waited for the body a HEAD answer
    announces but never sends, timed out and counted a failure, so a few HEADs from any key holder
    took a revision offline."""
    client, gateway = await stack([Revision("aaa", "1"), Revision("bbb", "2")], split())
    gateway.config.backend_timeout = 2.0
    for path in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1/ready", f"/v2/models/{MODEL}/config"):
        for _ in range(gateway.config.breaker_failures + 1):
            answer = await client.request("HEAD", path)
            assert answer.status == 200, path
    assert all(breaker.state == "closed" for breaker in gateway._breakers.values())
    assert (await client.get(f"/v2/models/{MODEL}/versions/1/ready")).status == 200
