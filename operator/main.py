"""`cutover operator`: the kopf operator, configured for cutover; one process alone, or one of
several replicas of which the holder of a Lease reconciles (leader.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import kopf
from prometheus_client import start_http_server

from cutover.api.v1alpha1 import GROUP
from cutover.serving.kube import CredentialsError

from . import handlers, metrics, safety_handlers
from .alerts import handlers as alerts
from .alerts.notify import Notifier
from .kube import Kube, credentials, relative_to_kubeconfig
from .leader import Elector, LeaseSettings
from .lifecycle import Shard
from .verdicts import FileVerdicts, PrometheusVerdicts, VerdictSource

logger = logging.getLogger("cutover.operator")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop the operator, as they stop kopf."""


LEGACY_FINALIZER = f"{GROUP}/finalizer"
"""The finalizer earlier versions put on every ModelDeployment (through kopf's daemon). None
is added any more (see lifecycle.py); kopf removes its configured finalizer from every object no
handler needs it on, so naming the old one here strips it on the operator's first look and an
upgrade leaves nothing stuck in Terminating."""


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff-base storage in annotations, building an object's essence (what kopf compares
    to tell a change) without first copying what the essence leaves out.

    kopf builds the essence of every object on every watch event, whether or not a handler
    reacts to changes, by deep-copying the whole body and then dropping its metadata and status
    (``DiffBaseStorage.build``, kopf 1.45). A ModelDeployment's status and a body's
    managedFields are most of it: py-spy had that copy at a tenth of the operator's busy
    samples while 500 ModelDeployments came up. The body handed to kopf's build here holds
    only what the essence keeps (every top-level field but metadata and status, and the
    metadata's labels and annotations), so the essence is the same. With ``extra_fields`` (a
    handler of status fields) kopf gets the whole body."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata", {})
        kept: dict[str, Any] = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        kept["metadata"] = {key: meta[key] for key in ("labels", "annotations") if key in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, kept)))


def configure(settings: kopf.OperatorSettings) -> None:
    """Our own metadata namespace and timeouts."""
    settings.persistence.finalizer = LEGACY_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = DiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    # Watches that go silent behind load balancers never recover by themselves
    # (nolar/kopf#1120): reconnect well before any idle timeout.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.posting.level = logging.INFO
    settings.peering.standalone = True
    # No cluster-wide list and watch of CustomResourceDefinitions and Namespaces (kopf's
    # observers of new resources and namespaces), so the chart grants neither: the resources are
    # discovered once at startup (as gateway_api and prometheus_rules are below), and watched
    # namespaces are taken as named (docs/access.md).
    settings.scanning.disabled = True


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; else the kubeconfig, its file paths read as kubectl reads them.
    Raises kopf.PermanentError for credentials that cannot work (``CredentialsError``: a file
    they name missing, an ``exec`` plugin), so the operator stops with that reason instead of
    retrying it forever."""
    try:
        info = kopf.login_with_service_account(**kwargs) or relative_to_kubeconfig(kopf.login_with_kubeconfig(**kwargs))
        if info is not None:
            credentials(info)  # reads the files they name now
        return info
    except CredentialsError as error:
        raise kopf.PermanentError(str(error)) from error


def build_registry(
    verdicts_from: Path | None,
    serving_otlp_endpoint: str | None = None,
    shard: Shard | None = None,
    serving_ingress: list[dict[str, Any]] | None = None,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, shard)
    alerts.register(registry, shard)
    safety_handlers.register(registry, shard)

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return login(**kwargs)

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings)
        info = login(settings=settings)
        if info is None:
            raise kopf.PermanentError("no Kubernetes credentials: set KUBECONFIG or run in a pod")
        kube = Kube.from_connection(info)
        http = httpx.AsyncClient()
        verdicts: VerdictSource = FileVerdicts(verdicts_from) if verdicts_from else PrometheusVerdicts(http, kube)
        gateway_api = await kube.discover("/apis/gateway.networking.k8s.io/v1")
        memo.ctx = handlers.Context(
            kube,
            verdicts,
            gateway_api=gateway_api,
            serving_otlp_endpoint=serving_otlp_endpoint,
            serving_ingress=serving_ingress,
        )
        prometheus_rules = await kube.discover("/apis/monitoring.coreos.com/v1")
        memo.safety = safety_handlers.SafetyContext(kube)
        memo.alerts = alerts.AlertContext(kube, http, Notifier(http, kube), prometheus_rules=prometheus_rules)
        memo.http = http
        logger.info("cutover operator started (verdicts from %s)", verdicts_from or "Prometheus")

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
        await memo.ctx.gpus.close()
        await memo.ctx.kube.close()
        await memo.http.aclose()

    return registry


def run(
    *,
    namespaces: list[str],
    verdicts_from: Path | None = None,
    metrics_port: int | None = 8000,
    serving_otlp_endpoint: str | None = None,
    leader_election: LeaseSettings | None = None,
    shard: Shard | None = None,
    serving_ingress: list[dict[str, Any]] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT (Ctrl-C); serving pods export their spans to
    ``serving_otlp_endpoint`` when it is given. With ``shard``, only that shard's objects
    are reconciled (lifecycle.Shard). With ``serving_ingress`` (NetworkPolicyIngressRule
    objects), each ModelDeployment gets a NetworkPolicy admitting only those sources to its
    serving pods (builders.network_policy).

    With ``leader_election``, kopf starts only once this process holds that Lease (until then it
    serves its metrics and nothing else), the Lease is released after kopf stopped, and the
    process exits with ``leader.LOST_EXIT_CODE`` the moment it stops holding it (leader.py). A
    signal at any point stops the process cleanly: a standby still waiting, or a leader whose
    kopf has not yet set its own signal handlers, returns, and a leader gives the Lease up."""
    if metrics_port:
        start_http_server(metrics_port)
    registry = build_registry(verdicts_from, serving_otlp_endpoint, shard, serving_ingress)
    stop = threading.Event()
    elector = Elector(leader_election, _client) if leader_election else None
    with _signals_set(stop):
        if elector:
            elector.start()
        try:
            if elector:
                elector.wait_leading(stop)
            else:
                metrics.LEADER.labels("").set(1)
            if stop.is_set():
                logger.info("cutover operator stopped before it began reconciling")
                return
            # What exists now (modules, the registry, kopf's own) lives as long as the process:
            # the collector need not walk it again at each full collection, which a burst of
            # thousands of objects triggers every few seconds.
            gc.freeze()
            asyncio.run(_operator(registry, namespaces, stop))
        finally:
            if elector:
                elector.stop()


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (instead of killing the process) until an event loop
    takes the signals over (``_operator``); the handlers found are put back on the way out.
    Only the main thread can set handlers; elsewhere nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    found = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, lambda *_: stop.set())
    try:
        yield
    finally:
        for signum, handler in found.items():
            signal.signal(signum, handler)


async def _operator(registry: kopf.OperatorRegistry, namespaces: list[str], stop: threading.Event) -> None:
    """kopf, stopped by a signal that came before it set its own handlers: until it does, the
    event loop's handlers raise its stop flag, and a signal that came before the loop did
    (``stop``) raises it at once. kopf's flag is an ``asyncio.Event`` because a
    ``threading.Event`` is waited for on an executor thread, which keeps ``asyncio.run`` from
    returning when kopf stops by a signal and the Event is never set."""
    flag = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for signum in SIGNALS:
            loop.add_signal_handler(signum, flag.set)
    if stop.is_set():
        flag.set()
    await kopf.operator(
        registry=registry,
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        memo=kopf.Memo(),
        stop_flag=flag,
    )


def _client() -> Kube:
    """A client with the operator's credentials, made before kopf runs."""
    info = login(settings=kopf.OperatorSettings())
    if info is None:
        raise RuntimeError("no Kubernetes credentials: set KUBECONFIG or run in a pod")
    return Kube.from_connection(info, timeout=10.0)
