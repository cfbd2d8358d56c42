"""Which revision answers a request: the weighted split of the traffic table, sticky A/B
assignment, a request that names a model version, and which revisions get a mirrored copy.
Pure functions over a Route, so the split and stickiness are tested without a network; the
``RoutingTable`` keeps one Route per model name from the ModelDeployments the gateway watches.

A request that names a version (``/v2/models/{name}/versions/{version}`` and its ``/ready``,
``/config`` and ``/infer``) can only be answered by a revision serving that version: it goes to
the revisions with live traffic that serve it (split among them by weight), never by the
weighted split to one serving another version, and gets a 404 at the gateway when none does.
The version of each row of the traffic table comes from the ModelDeployment itself: the
revision history (``status.history[].modelVersion``) for revisions that were stable, the spec
(``spec.model.version``) for the candidate, the stable revision's for baseline pods.

Sticky assignment (``spec.strategy.abTest.assignment``):
- ``header``: the header's value names the arm (a role such as ``candidate``, or a revision);
  requests without it are split by weight.
- ``cookie``: the cookie holds the revision the client was assigned; a client without one is
  split by weight and gets the cookie, so it stays on its arm.
- ``hashKey``: the header's value (a user id, say) is hashed into [0, 100) and placed on the
  cumulative weights, so the same user always lands on the same arm while weights hold.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cutover.api.contract import ANNOTATION_MIN_TIER, SERVING_PORT

from .feedback import FeedbackSettings
from .shadow import Comparison

log = logging.getLogger("cutover.gateway")
ROLE_ORDER = {"stable": 0, "baseline": 1, "candidate": 2}
Resolver = Callable[[str, str], str | None]
"""``resolve(namespace, service)``: a Service's base URL (``http://host:port``), or None when it
has no ready endpoint."""


@dataclass(frozen=True)
class Backend:
    revision: str
    role: str
    url: str
    weight: int
    mirror_percent: int = 0
    version: str | None = None
    """spec.model.version of what the revision serves; None when the ModelDeployment does not say."""


@dataclass(frozen=True)
class Assignment:
    by: str
    """header, cookie or hashKey."""
    name: str


@dataclass(frozen=True)
class Route:
    """One model's traffic: the live backends by weight and the mirrored ones."""

    namespace: str
    deployment: str
    """The ModelDeployment's name."""
    model: str
    """spec.model.name: the name clients call."""
    backends: tuple[Backend, ...]
    mirrors: tuple[Backend, ...] = ()
    assignment: Assignment | None = None
    min_tier: str | None = None
    comparison: Comparison = field(default_factory=Comparison)
    """How mirrored answers are compared (spec.strategy.shadow)."""
    feedback: FeedbackSettings | None = None
    """Whether (and from which output) answers are kept for ground-truth feedback (spec.feedback)."""


@dataclass(frozen=True)
class Choice:
    backend: Backend
    set_cookie: tuple[str, str] | None = None


def route_from(md: Mapping[str, Any], resolve: Resolver) -> Route | None:
    """The route of one ModelDeployment object, or None when it has no traffic table yet.
    ``resolve(namespace, service)`` gives a Service's base URL, or None when it has no endpoint."""
    meta, spec, status = md.get("metadata", {}), md.get("spec", {}), md.get("status") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    if (spec.get("traffic") or {}).get("provider", "gateway") != "gateway":
        return None
    backends, mirrors = [], []
    version = _versions(meta, spec, status)
    for entry in status.get("traffic") or []:
        service = entry.get("service")
        url = resolve(namespace, service) if service else None
        if url is None:
            continue
        backend = Backend(
            entry["revision"],
            entry.get("role", "stable"),
            url,
            int(entry.get("weight", 0)),
            int(entry.get("mirrorPercent", 0)),
            version(entry),
        )
        if backend.weight > 0:
            backends.append(backend)
        if backend.mirror_percent > 0:
            mirrors.append(backend)
    if not backends:
        # No revision with a share can answer (its endpoints are not ready yet): a stable or
        # previous revision that can answer does, rather than every request failing. Never a
        # candidate: it may be the one just rolled back.
        backends = [
            Backend(e["revision"], e.get("role", "stable"), url, 1, version=version(e))
            for e in status.get("traffic") or []
            if e.get("role") in ("stable", "previous")
            and e.get("service")
            and (url := resolve(namespace, e["service"])) is not None
        ]
    if not backends:
        return None
    backends.sort(key=lambda b: (ROLE_ORDER.get(b.role, 9), b.revision))
    strategy = spec.get("strategy") or {}
    sticky = (strategy.get("abTest") or {}).get("assignment")
    return Route(
        namespace=namespace,
        deployment=name,
        model=spec.get("model", {}).get("name", name),
        backends=tuple(backends),
        mirrors=tuple(mirrors),
        assignment=Assignment(sticky["by"], sticky["name"]) if sticky else None,
        min_tier=(meta.get("annotations") or {}).get(ANNOTATION_MIN_TIER),
        comparison=Comparison.of(strategy.get("shadow")),
        feedback=FeedbackSettings.of(spec.get("feedback")),
    )


def _versions(
    meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> Callable[[Mapping[str, Any]], str | None]:
    """The model version a traffic-table row serves (see the module docstring), or None. The
    spec names the candidate's version only once the operator has acted on that spec
    (status.observedGeneration): a spec changed since may describe a revision not running yet."""
    history = {
        str(r["revision"]): str(r["modelVersion"])
        for r in status.get("history") or []
        if isinstance(r, Mapping) and r.get("revision") and r.get("modelVersion") is not None
    }
    candidate, stable = status.get("candidateRevision"), status.get("stableRevision")
    observed = status.get("observedGeneration")
    current = observed is None or observed == meta.get("generation")
    declared = (spec.get("model") or {}).get("version") if current else None

    def version(entry: Mapping[str, Any]) -> str | None:
        revision = stable if entry.get("role") == "baseline" else entry.get("revision")
        if revision in history:
            return history[revision]
        if revision is not None and revision == candidate and declared is not None:
            return str(declared)
        return None

    return version


def for_version(route: Route, version: str) -> Route | None:
    """The route of a request that names ``version``: only the live revisions serving it, split
    by weight, with no sticky assignment (the version is the client's choice); None when no live
    revision serves it."""
    serving = tuple(b for b in route.backends if b.version == version)
    if not serving:
        return None
    return replace(route, backends=serving, assignment=None)


def unknown_version(route: Route, name: str, version: str) -> str:
    """The 404 message for a request that names a ``version`` of model ``name`` that no live
    revision of ``route`` serves, listing those that are live."""
    served = ", ".join(sorted({repr(b.version) for b in route.backends if b.version is not None}))
    return f"unknown version {version!r} of model {name!r}; live versions: {served or 'none'}"


def _by_weight(backends: tuple[Backend, ...], point: float) -> Backend:
    """The backend whose share of [0, 100) holds ``point``, in the route's fixed order."""
    total = sum(b.weight for b in backends) or 1
    cumulative = 0.0
    for backend in backends:
        cumulative += backend.weight * 100 / total
        if point < cumulative:
            return backend
    return backends[-1]


def hash_point(value: str) -> float:
    """A stable position in [0, 100) for a key: any header value, hashed as the bytes the client
    sent (aiohttp decodes headers as UTF-8 with surrogateescape), so a value that is not UTF-8 is
    as sticky as one that is."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100


def choose(
    route: Route,
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    *,
    healthy: Callable[[Backend], bool] = lambda b: True,
    rng: random.Random | None = None,
) -> Choice:
    """The backend for one request. A sticky client keeps its arm; an unhealthy backend (its
    circuit breaker is open) hands its share to the healthy ones."""
    draw = (rng or random).random() * 100
    backends = route.backends
    sticky = route.assignment
    chosen: Backend | None = None
    set_cookie = None
    if sticky is not None:
        if sticky.by == "header":
            value = headers.get(sticky.name)
            chosen = next((b for b in backends if value in (b.role, b.revision)), None) if value else None
        elif sticky.by == "cookie":
            value = cookies.get(sticky.name)
            chosen = next((b for b in backends if b.revision == value), None) if value else None
            if chosen is None:
                chosen = _by_weight(backends, draw)
                set_cookie = (sticky.name, chosen.revision)
        elif sticky.by == "hashKey":
            value = headers.get(sticky.name)
            if value:
                chosen = _by_weight(backends, hash_point(value))
    if chosen is None:
        chosen = _by_weight(backends, draw)
    if not healthy(chosen):
        others = tuple(b for b in backends if b is not chosen and healthy(b))
        if others:
            chosen = _by_weight(others, draw)
    return Choice(chosen, set_cookie)


def mirrors_for(route: Route, primary: Backend, rng: random.Random | None = None) -> list[Backend]:
    """The revisions that get a copy of this request (never the one answering it)."""
    source = rng or random
    return [m for m in route.mirrors if m.revision != primary.revision and source.random() * 100 < m.mirror_percent]


def cluster_dns(namespace: str, service: str) -> str:
    """A Service's base URL by its cluster DNS name, on the serving port."""
    return f"http://{service}.{namespace}.svc:{SERVING_PORT}"


class RoutingTable:
    """The route of every ModelDeployment the gateway watches, by the model name clients call,
    rebuilt whenever an object or the resolver changes.

    Two ModelDeployments that serve the same model name (in two namespaces, say) cannot both have
    it: the older (by ``metadata.creationTimestamp``) keeps it, and the other is logged."""

    def __init__(self, resolve: Resolver = cluster_dns) -> None:
        self.routes: dict[str, Route] = {}
        """By ``spec.model.name``; replaced as a whole on each rebuild, never changed in place."""
        self._resolve = resolve
        self._objects: dict[tuple[str, str], Mapping[str, Any]] = {}

    def set_resolver(self, resolve: Resolver) -> None:
        """Resolve Services with ``resolve`` from now on (development: the local runner's list)."""
        self._resolve = resolve
        self._rebuild()

    def replace(self, objects: Iterable[Mapping[str, Any]], namespace: str | None = None) -> None:
        """After a (re)list: every ModelDeployment of ``namespace`` (all when None)."""
        for key in [k for k in self._objects if namespace is None or k[0] == namespace]:
            del self._objects[key]
        for obj in objects:
            meta = obj.get("metadata", {})
            self._objects[(meta.get("namespace", ""), meta.get("name", ""))] = obj
        self._rebuild()

    def update(self, obj: Mapping[str, Any], deleted: bool = False) -> None:
        """One watch event: ``obj`` added or changed, or ``deleted``."""
        meta = obj.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if deleted:
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        self._rebuild()

    def _rebuild(self) -> None:
        routes: dict[str, Route] = {}
        for key in sorted(
            self._objects, key=lambda k: self._objects[k].get("metadata", {}).get("creationTimestamp", "")
        ):
            route = route_from(self._objects[key], self._resolve)
            if route is None:
                continue
            if route.model in routes:
                log.warning(
                    "model %r is served by %s/%s and %s/%s; routing to the older",
                    route.model,
                    routes[route.model].namespace,
                    routes[route.model].deployment,
                    route.namespace,
                    route.deployment,
                )
                continue
            routes[route.model] = route
        self.routes = routes
