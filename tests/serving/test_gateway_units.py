"""The gateway's pure parts: the weighted split, sticky assignment, mirroring odds, keys, tiers,
token buckets and quotas."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from cutover.serving.gateway import watch
from cutover.serving.gateway.app import Gateway, GatewayConfig, model_name
from cutover.serving.gateway.keys import (
    Denied,
    KeyStore,
    Limiter,
    authorize,
    digest,
    tiers_from,
)
from cutover.serving.gateway.routing import (
    Assignment,
    Backend,
    Route,
    choose,
    for_version,
    hash_point,
    mirrors_for,
    route_from,
)
from cutover.serving.gateway.shadow import Comparison

from .support import key_secret

STABLE = Backend("aaa", "stable", "http://a", 80)
CANDIDATE = Backend("bbb", "candidate", "http://b", 20)


def route(assignment: Assignment | None = None, mirrors: tuple[Backend, ...] = ()) -> Route:
    return Route("ns", "md", "classifier", (STABLE, CANDIDATE), mirrors, assignment)


def within(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_weighted_split_holds_within_binomial_tolerance() -> None:
    rng = random.Random(1)
    counts = Counter(choose(route(), {}, {}, rng=rng).backend.revision for _ in range(20_000))
    assert within(counts["bbb"], 20_000, 0.2)


def test_hashed_key_is_sticky_and_splits_users_by_weight() -> None:
    sticky = route(Assignment("hashKey", "X-User-Id"))
    rng = random.Random(2)
    arms = {}
    for user in range(5_000):
        seen = {choose(sticky, {"X-User-Id": f"user-{user}"}, {}, rng=rng).backend.revision for _ in range(3)}
        assert len(seen) == 1, "a user changed arms"
        arms[user] = seen.pop()
    assert within(sum(1 for a in arms.values() if a == "bbb"), 5_000, 0.2)


def test_cookie_assignment_sets_then_honours_the_cookie() -> None:
    sticky = route(Assignment("cookie", "arm"))
    first = choose(sticky, {}, {}, rng=random.Random(3))
    assert first.set_cookie == ("arm", first.backend.revision)
    again = choose(sticky, {}, {"arm": "bbb"}, rng=random.Random(4))
    assert again.backend.revision == "bbb" and again.set_cookie is None


def test_header_names_the_arm_by_role_or_revision() -> None:
    sticky = route(Assignment("header", "X-Arm"))
    assert all(choose(sticky, {"X-Arm": "candidate"}, {}).backend.revision == "bbb" for _ in range(50))
    assert all(choose(sticky, {"X-Arm": "aaa"}, {}).backend.revision == "aaa" for _ in range(50))


def test_an_open_circuit_hands_its_share_to_healthy_revisions() -> None:
    rng = random.Random(5)
    picks = {
        choose(route(), {}, {}, healthy=lambda b: b.revision != "bbb", rng=rng).backend.revision for _ in range(500)
    }
    assert picks == {"aaa"}


def test_mirror_odds_follow_mirror_percent_and_never_copy_to_the_answering_revision() -> None:
    shadow = Backend("ccc", "candidate", "http://c", 0, 25)
    rng = random.Random(6)
    copies = sum(len(mirrors_for(route(mirrors=(shadow,)), STABLE, rng)) for _ in range(8_000))
    assert within(copies, 8_000, 0.25)
    assert mirrors_for(route(mirrors=(shadow,)), shadow) == []


def test_route_from_reads_the_traffic_table_the_operator_writes() -> None:
    md: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "fraud", "annotations": {"cutover.dev/min-tier": "pro"}},
        "spec": {
            "model": {"name": "fraud-scorer"},
            "strategy": {"abTest": {"assignment": {"by": "cookie", "name": "c"}}},
        },
        "status": {
            "traffic": [
                {"revision": "bbb", "role": "candidate", "weight": 0, "mirrorPercent": 10, "service": "fraud-bbb"},
                {"revision": "aaa", "role": "stable", "weight": 100, "service": "fraud-aaa"},
            ]
        },
    }
    parsed = route_from(md, lambda namespace, service: f"http://{service}.{namespace}")
    assert parsed is not None and parsed.model == "fraud-scorer" and parsed.min_tier == "pro"
    assert [b.revision for b in parsed.backends] == ["aaa"]
    assert [(m.revision, m.mirror_percent) for m in parsed.mirrors] == [("bbb", 10)]
    assert parsed.assignment == Assignment("cookie", "c")
    assert route_from({**md, "status": {}}, lambda n, s: "") is None
    assert route_from({**md, "spec": {**md["spec"], "traffic": {"provider": "gatewayAPI"}}}, lambda n, s: "") is None


def rollout_md(generation: int = 4, observed: int | None = 4) -> dict[str, Any]:
    """A canary with baseline pods, a kept previous revision and a shadow comparison."""
    status: dict[str, Any] = {
        "stableRevision": "s1",
        "candidateRevision": "c1",
        "history": [
            {"revision": "s1", "modelVersion": "2026-10"},
            {"revision": "p1", "modelVersion": "2026-09"},
        ],
        "traffic": [
            {"revision": "s1", "role": "stable", "weight": 60, "service": "m-s1"},
            {"revision": "s1-baseline", "role": "baseline", "weight": 20, "service": "m-s1-baseline"},
            {"revision": "c1", "role": "candidate", "weight": 20, "service": "m-c1"},
            {"revision": "p1", "role": "previous", "weight": 0, "mirrorPercent": 5, "service": "m-p1"},
            {"revision": "zz", "role": "previous", "weight": 0, "mirrorPercent": 5, "service": "m-zz"},
        ],
    }
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "metadata": {"namespace": "ns", "name": "m", "generation": generation},
        "spec": {
            "model": {"name": "m", "version": "2026-11"},
            "strategy": {"type": "canary", "shadow": {"agreement": "numeric", "tolerance": 0.25}},
        },
        "status": status,
    }


def test_route_from_knows_which_model_version_each_revision_serves() -> None:
    parsed = route_from(rollout_md(), lambda namespace, service: f"http://{service}")
    assert parsed is not None
    versions = {b.revision: b.version for b in (*parsed.backends, *parsed.mirrors)}
    # stable and previous from the revision history, the candidate from the spec, baseline pods
    # run the stable revision; a revision the status does not describe has no known version.
    assert versions == {"s1": "2026-10", "s1-baseline": "2026-10", "c1": "2026-11", "p1": "2026-09", "zz": None}
    assert parsed.comparison == Comparison("numeric", 0.25)
    # A spec the operator has not acted on yet may name a version no revision runs.
    ahead = route_from(rollout_md(generation=5, observed=4), lambda namespace, service: f"http://{service}")
    assert ahead is not None and {b.revision: b.version for b in ahead.backends}["c1"] is None
    unobserved = route_from(rollout_md(observed=None), lambda namespace, service: f"http://{service}")
    assert unobserved is not None and {b.revision: b.version for b in unobserved.backends}["c1"] == "2026-11"


def test_a_named_version_is_split_only_among_the_live_revisions_serving_it() -> None:
    parsed = route_from(rollout_md(), lambda namespace, service: f"http://{service}")
    assert parsed is not None
    sticky = replace(parsed, assignment=Assignment("header", "X-Arm"))
    stable = for_version(sticky, "2026-10")
    assert stable is not None and stable.assignment is None
    rng = random.Random(7)
    picks = Counter(choose(stable, {"X-Arm": "candidate"}, {}, rng=rng).backend.revision for _ in range(4_000))
    assert picks.keys() == {"s1", "s1-baseline"} and within(picks["s1-baseline"], 4_000, 0.25)
    candidate = for_version(parsed, "2026-11")
    assert candidate is not None and [b.revision for b in candidate.backends] == ["c1"]
    assert candidate.mirrors == parsed.mirrors
    assert for_version(parsed, "2026-09") is None, "a previous revision with no live share does not answer"
    assert for_version(parsed, "1999") is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keys_are_looked_up_by_hash_and_refused_with_the_right_status() -> None:
    store, limiter = KeyStore(), Limiter()
    store.replace([key_secret("alice", "k-alice", "pro"), key_secret("bob", "k-bob", "free", revoked="true")])
    store.update(key_secret("carol", "k-carol", "pro", models="other"))
    assert digest("k-alice") not in {"k-alice"} and len(store) == 3

    def status(headers: dict[str, str], model: str = "classifier", min_tier: str | None = None) -> int:
        try:
            authorize(store, limiter, headers, model, min_tier)
        except Denied as denied:
            return denied.status
        return 200

    assert status({}) == 401
    assert status({"Authorization": "Bearer nope"}) == 401
    assert status({"Authorization": "Bearer k-alice"}) == 200
    assert status({"X-API-Key": "k-alice"}) == 200
    assert status({"Authorization": "Bearer k-bob"}) == 403
    assert status({"Authorization": "Bearer k-carol"}) == 403
    assert status({"Authorization": "Bearer k-alice"}, min_tier="enterprise") == 403
    store.remove(key_secret("alice", "k-alice", "pro"))
    assert status({"Authorization": "Bearer k-alice"}) == 401
    store.replace([], "ns")
    assert len(store) == 0


def test_token_bucket_admits_exactly_burst_then_refills_at_rate() -> None:
    clock = Clock()
    limiter = Limiter(tiers=tiers_from({"free": {"rate": 2, "burst": 5, "dailyQuota": 100}}), clock=clock, wall=clock)
    store = KeyStore()
    store.update(key_secret("k", "key", "free"))
    key = store.lookup("key")
    assert key is not None
    admitted = 0
    for _ in range(50):
        try:
            limiter.admit(key)
            admitted += 1
        except Denied as denied:
            assert denied.status == 429 and denied.retry_after is not None and 0 < denied.retry_after <= 0.5
    assert admitted == 5
    clock.now += 1.0
    assert sum(1 for _ in range(10) if _admits(limiter, key)) == 2


def _admits(limiter: Limiter, key: object) -> bool:
    try:
        limiter.admit(key)  # type: ignore[arg-type]
        return True
    except Denied:
        return False


def test_daily_quota_refuses_until_midnight_utc() -> None:
    clock = Clock()
    clock.now = 86400 * 20 + 3600
    limiter = Limiter(
        tiers=tiers_from({"pro": {"rate": 1000, "burst": 1000, "dailyQuota": 3}}), clock=clock, wall=clock
    )
    store = KeyStore()
    store.update(key_secret("k", "key", "pro"))
    key = store.lookup("key")
    assert [_admits(limiter, key) for _ in range(5)] == [True, True, True, False, False]
    with pytest.raises(Denied) as refused:
        limiter.admit(key)  # type: ignore[arg-type]
    assert refused.value.retry_after == pytest.approx(86400 - 3600)
    clock.now += 86400
    assert _admits(limiter, key)


def test_admin_is_unlimited_and_unknown_tiers_are_refused() -> None:
    store, limiter = KeyStore(), Limiter()
    store.update(key_secret("root", "k-root", "admin"))
    store.update(key_secret("odd", "k-odd", "platinum"))
    assert all(_admits(limiter, store.lookup("k-root")) for _ in range(10_000))
    with pytest.raises(Denied) as refused:
        authorize(store, limiter, {"X-API-Key": "k-odd"}, "m")
    assert refused.value.status == 403
    with pytest.raises(ValueError, match="unknown tier"):
        tiers_from({"gold": {}})


def test_when_no_weighted_revision_has_an_endpoint_a_previous_one_answers_never_a_candidate() -> None:
    md = {
        "metadata": {"namespace": "ns", "name": "fraud"},
        "spec": {"model": {"name": "fraud-scorer"}},
        "status": {
            "traffic": [
                {"revision": "new", "role": "stable", "weight": 100, "service": "fraud-new"},
                {"revision": "old", "role": "previous", "weight": 0, "service": "fraud-old"},
                {"revision": "bad", "role": "candidate", "weight": 0, "service": "fraud-bad"},
            ]
        },
    }
    ready = {"fraud-old": "http://old", "fraud-bad": "http://bad"}
    parsed = route_from(md, lambda namespace, service: ready.get(service))
    assert parsed is not None and [b.revision for b in parsed.backends] == ["old"]
    assert route_from(md, lambda namespace, service: None) is None


class Listed:
    """A watcher that delivers one list and nothing more."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        yield "SYNC", self.objects


async def test_the_gateway_is_ready_once_every_watched_list_has_arrived() -> None:
    gateway = Gateway(GatewayConfig())
    probe = make_mocked_request("GET", "/v2/health/ready")
    assert (await gateway.ready(probe)).status == 503, "ready before any list"
    scopes = watch._paths(["team-a", "team-b"])
    gateway.unlisted = {(kind, namespace) for namespace, kind, _ in scopes}
    for namespace, kind, _ in scopes:
        response = await gateway.ready(probe)
        assert response.status == 503 and "team-" in json.loads(response.text or "{}")["error"]
        await watch._follow(gateway, Listed([]), namespace, kind)  # type: ignore[arg-type]
    assert (await gateway.ready(probe)).status == 200


def test_keys_and_sticky_values_that_are_not_utf8_hash_as_the_bytes_sent() -> None:
    """aiohttp decodes header bytes as UTF-8 with surrogateescape; a strict encode raised (a 500)."""
    not_utf8 = b"cut_\xff\xfe".decode("utf-8", "surrogateescape")
    assert digest(not_utf8) == hashlib.sha256(b"cut_\xff\xfe").hexdigest()
    assert hash_point(not_utf8) == hash_point(b"cut_\xff\xfe".decode("utf-8", "surrogateescape"))
    assert 0 <= hash_point("\udcff") < 100


def test_a_chat_body_names_its_model_or_none_whatever_it_holds() -> None:
    assert model_name(b'{"model": "fraud", "messages": []}') == "fraud"
    for body in (b"[" * 200_000, b"\xff\xfe", b'{"model": 1}', b"[]", b"", b'{"model": ["a"]}'):
        assert model_name(body) is None, body[:20]
