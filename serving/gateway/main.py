"""Running the gateway: the HTTP server, the watches, and a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..grpc_server import listening as grpc_listening
from ..http import listening
from ..kube import Credentials
from ..lifecycle import until_signalled
from ..tracing import Tracing
from .app import SERVER_NAME, Gateway, GatewayConfig
from .grpc_proxy import GatewayInferenceService
from .watch import follow_backends, watch

log = logging.getLogger("cutover.gateway")


async def run(
    config: GatewayConfig, *, namespaces: list[str], kubeconfig: str | None = None, backends: Path | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then drain: unready at once, the listener open for
    ``shutdown_delay`` seconds more, requests in progress given ``shutdown_grace`` to finish."""
    gateway = Gateway(config, Tracing.exporting(SERVER_NAME, config.otlp_endpoint))
    tasks: list[asyncio.Task[None]] = []
    try:
        async with (
            listening(gateway.app(), config.host, config.port, backlog=2048, shutdown_grace=config.shutdown_grace),
            grpc_listening(
                GatewayInferenceService(gateway),
                config.host,
                config.grpc_port,
                max_message_bytes=config.max_request_bytes,
                shutdown_grace=config.shutdown_grace,
                tracing=gateway.tracing,
            ),
        ):
            tasks.append(asyncio.create_task(watch(gateway, Credentials.load(kubeconfig), namespaces)))
            if backends is not None:
                tasks.append(asyncio.create_task(follow_backends(gateway, backends)))
            await until_signalled()
            log.info("draining: %d requests in progress", gateway.in_flight)
            gateway.draining = True
            await asyncio.sleep(config.shutdown_delay)
    finally:
        for task in tasks:
            task.cancel()
        await gateway.close()
        gateway.tracing.close()
    log.info("stopped")
