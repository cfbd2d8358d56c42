"""API keys, tiers, rate limits and quotas.

Keys live in Secrets labelled ``cutover.dev/api-key=true``, hashed: the Secret holds
``sha256`` (hex of the key), ``tier``, and optionally ``owner``, ``models`` (comma-separated
model names the key may call; empty means all) and ``revoked`` ("true"). The gateway never sees
a key it could leak; rotation is a new Secret (and revoking or deleting the old one), and both
take effect as soon as the watch delivers them, without a restart. Keys are random 32-byte
tokens, so a plain SHA-256 is enough (a slow hash only matters for guessable passwords).

Each tier has a token bucket (``rate`` requests per second, ``burst``) and a daily quota
(reset at 00:00 UTC), counted per key in this gateway replica. ``admin`` is unlimited and may
call the gateway's own endpoints.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cutover.api.contract import API_KEY_HEADER, LABEL_API_KEY

KEY_LABEL = LABEL_API_KEY
KEY_PREFIX = "cut_"


@dataclass(frozen=True)
class Tier:
    name: str
    rank: int
    rate: float | None
    """Requests per second refilled; None is unlimited."""
    burst: int
    daily_quota: int | None


DEFAULT_TIERS = {
    "free": Tier("free", 0, rate=5, burst=10, daily_quota=1_000),
    "pro": Tier("pro", 1, rate=50, burst=100, daily_quota=100_000),
    "enterprise": Tier("enterprise", 2, rate=500, burst=1_000, daily_quota=None),
    "admin": Tier("admin", 3, rate=None, burst=0, daily_quota=None),
}


def tiers_from(config: Mapping[str, Mapping[str, Any]]) -> dict[str, Tier]:
    """Tiers overridden from ``--tiers`` YAML: ``{pro: {rate: 100, burst: 200, dailyQuota: 1e6}}``."""
    tiers = dict(DEFAULT_TIERS)
    for name, values in config.items():
        if name not in tiers:
            raise ValueError(f"unknown tier {name!r}; tiers are {', '.join(DEFAULT_TIERS)}")
        base = tiers[name]
        tiers[name] = Tier(
            name,
            base.rank,
            rate=values.get("rate", base.rate),
            burst=int(values.get("burst", base.burst)),
            daily_quota=values.get("dailyQuota", base.daily_quota),
        )
    return tiers


def digest(key: str) -> str:
    """The SHA-256 hex digest a key is stored and looked up by. A presented key may hold any
    bytes (aiohttp decodes headers as UTF-8 with surrogateescape): they are hashed as sent, so a
    key that is not UTF-8 is unknown (401), never an error."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def secret_manifest(
    name: str, namespace: str, key: str, tier: str, owner: str = "", models: str = ""
) -> dict[str, Any]:
    """The Secret that admits ``key`` (which it does not contain)."""
    data = {"sha256": digest(key), "tier": tier, "owner": owner, "models": models, "revoked": "false"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {KEY_LABEL: "true"}},
        "type": "Opaque",
        "stringData": data,
    }


@dataclass(frozen=True)
class ApiKey:
    id: str
    """namespace/name of its Secret."""
    tier: str
    owner: str = ""
    models: frozenset[str] = frozenset()
    revoked: bool = False


class KeyStore:
    """Keys by hash, kept current from Secret events."""

    def __init__(self) -> None:
        self._by_hash: dict[str, ApiKey] = {}
        self._hash_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_hash)

    def replace(self, secrets_: list[dict[str, Any]], namespace: str | None = None) -> None:
        """After a (re)list: every key Secret of ``namespace`` (all when None)."""
        for secret_id in [i for i in self._hash_of if namespace is None or i.startswith(f"{namespace}/")]:
            self._by_hash.pop(self._hash_of.pop(secret_id), None)
        for secret in secrets_:
            self.update(secret)

    def update(self, secret: Mapping[str, Any]) -> None:
        meta = secret.get("metadata", {})
        secret_id = f"{meta.get('namespace')}/{meta.get('name')}"
        self.remove(secret)
        data = {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.get("data") or {}).items()}
        hashed = data.get("sha256", "").strip().lower()
        if len(hashed) != 64:
            return
        self._by_hash[hashed] = ApiKey(
            id=secret_id,
            tier=data.get("tier", "free").strip(),
            owner=data.get("owner", ""),
            models=frozenset(m.strip() for m in data.get("models", "").split(",") if m.strip()),
            revoked=data.get("revoked", "false").strip().lower() == "true",
        )
        self._hash_of[secret_id] = hashed

    def remove(self, secret: Mapping[str, Any]) -> None:
        meta = secret.get("metadata", {})
        hashed = self._hash_of.pop(f"{meta.get('namespace')}/{meta.get('name')}", None)
        if hashed is not None:
            self._by_hash.pop(hashed, None)

    def lookup(self, key: str) -> ApiKey | None:
        return self._by_hash.get(digest(key))


class Denied(Exception):
    """A request the gateway refuses: 401, 403 or 429 (with Retry-After)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None, tier: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.tier = tier


def presented_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return headers.get(API_KEY_HEADER) or None


@dataclass
class _Usage:
    tokens: float
    updated: float
    day: int
    used_today: int = 0


@dataclass
class Limiter:
    """Token buckets and daily quotas per key."""

    tiers: dict[str, Tier] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _usage: dict[str, _Usage] = field(default_factory=dict)

    def admit(self, key: ApiKey) -> None:
        tier = self.tiers.get(key.tier)
        if tier is None:
            raise Denied(403, f"key {key.id} has unknown tier {key.tier!r}")
        if tier.rate is None and tier.daily_quota is None:
            return
        now, day = self.clock(), int(self.wall() // 86400)
        usage = self._usage.get(key.id)
        if usage is None:
            usage = self._usage[key.id] = _Usage(tokens=float(tier.burst), updated=now, day=day)
        if usage.day != day:
            usage.day, usage.used_today = day, 0
        if tier.daily_quota is not None and usage.used_today >= tier.daily_quota:
            retry = (day + 1) * 86400 - self.wall()
            raise Denied(429, f"daily quota of {tier.daily_quota} requests used ({tier.name} tier)", retry, tier.name)
        if tier.rate is not None:
            usage.tokens = min(float(tier.burst), usage.tokens + (now - usage.updated) * tier.rate)
            usage.updated = now
            if usage.tokens < 1:
                wait = (1 - usage.tokens) / tier.rate
                raise Denied(429, f"rate limit of {tier.rate:g}/s exceeded ({tier.name} tier)", wait, tier.name)
            usage.tokens -= 1
        usage.used_today += 1


def authorize(
    store: KeyStore, limiter: Limiter, headers: Mapping[str, str], model: str | None, min_tier: str | None = None
) -> ApiKey:
    """The caller's key if it may make this request now; else Denied with the status to answer."""
    presented = presented_key(headers)
    if presented is None:
        raise Denied(401, "an API key is required: Authorization: Bearer <key> or X-API-Key")
    key = store.lookup(presented)
    if key is None:
        raise Denied(401, "unknown API key")
    if key.revoked:
        raise Denied(403, f"API key {key.id} is revoked")
    if model is not None:
        refusal = forbidden(key, limiter.tiers, model, min_tier)
        if refusal is not None:
            raise refusal
    limiter.admit(key)
    return key


def forbidden(key: ApiKey, tiers: Mapping[str, Tier], model: str, min_tier: str | None = None) -> Denied | None:
    """Why ``key`` may not call ``model`` (which needs ``min_tier``, if not None): a 403
    ``Denied``; None when it may."""
    if key.models and model not in key.models and key.tier != "admin":
        return Denied(403, f"API key {key.id} may not call model {model!r}")
    tier, needed = tiers.get(key.tier), tiers.get(min_tier) if min_tier is not None else None
    if tier is not None and needed is not None and tier.rank < needed.rank:
        return Denied(403, f"model {model!r} needs the {min_tier} tier; key {key.id} is {key.tier}")
    return None


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
