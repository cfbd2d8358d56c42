"""Running the gateway: the HTTP server, the watches, and a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from ..kube import Credentials
from ..lifecycle import until_signalled
from .app import Gateway, GatewayConfig
from .watch import follow_backends, watch

log = logging.getLogger("cutover.gateway")


async def run(
    config: GatewayConfig, *, namespaces: list[str], kubeconfig: str | None = None, backends: Path | None = None
) -> None:
    gateway = Gateway(config)
    runner = web.AppRunner(gateway.app(), access_log=None, shutdown_timeout=config.shutdown_grace)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port, backlog=2048).start()
    log.info("listening on http://%s:%d", config.host, runner.addresses[0][1])
    tasks = [asyncio.create_task(watch(gateway, Credentials.load(kubeconfig), namespaces))]
    if backends is not None:
        tasks.append(asyncio.create_task(follow_backends(gateway, backends)))
    await until_signalled()
    log.info("draining: %d requests in progress", gateway.in_flight)
    gateway.draining = True
    await asyncio.sleep(config.shutdown_delay)
    await runner.cleanup()
    for task in tasks:
        task.cancel()
    await gateway.close()
    log.info("stopped")
