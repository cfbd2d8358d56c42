"""Just enough Kubernetes for the gateway: credentials from the pod's service account or a
kubeconfig, and a list-then-watch loop that survives restarts of the watch.

The gateway must not depend on kopf (it is the operator's framework), and it only ever reads
two kinds, ModelDeployments and Secrets, so a small watcher over aiohttp replaces a client SDK.

A watch event is one line of JSON holding the whole object, and an object may be as large as the
API server stores (about 1.5 MiB in etcd: a ModelDeployment with a large annotation or
``safeDefault``, a Secret). aiohttp's own line iteration (``async for line in response.content``)
refuses a line longer than twice its buffer limit (128 KiB) with ``LineTooLong``, which ended
the watch on every change of such an object; ``json_lines`` splits the stream itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

log = logging.getLogger(__name__)
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_EVENT_BYTES = 64 << 20
"""Longest watch event accepted: far above any object the API server stores (etcd's request
limit is 1.5 MiB, a few times that once JSON-escaped), yet a bound on memory if a stream never
sends a newline."""


class EventTooLarge(ValueError):
    """A watch stream sent more than ``MAX_EVENT_BYTES`` without a newline."""


async def json_lines(stream: aiohttp.StreamReader, max_bytes: int = MAX_EVENT_BYTES) -> AsyncIterator[bytes]:
    """The non-blank lines of a newline-delimited stream (a watch), each however long, up to
    ``max_bytes``; the newline is not included. Raises ``EventTooLarge`` beyond that."""
    pending = bytearray()
    async for chunk in stream.iter_any():
        *complete, rest = chunk.split(b"\n")
        for piece in complete:
            pending += piece
            if pending.strip():
                yield bytes(pending)
            pending.clear()
        pending += rest
        if len(pending) > max_bytes:
            raise EventTooLarge(f"a watch event longer than {max_bytes} bytes")
    if pending.strip():
        yield bytes(pending)


@dataclass
class Credentials:
    server: str
    ssl: ssl.SSLContext | bool
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> Credentials:
        """In a pod, the service account; else ``kubeconfig``, ``$KUBECONFIG`` or ~/.kube/config."""
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path is None and (SERVICE_ACCOUNT / "token").exists():
            host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
            context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
            token = (SERVICE_ACCOUNT / "token").read_text().strip()
            return cls(f"https://{host}:{port}", context, {"Authorization": f"Bearer {token}"})
        return cls._from_kubeconfig(Path(path.split(os.pathsep)[0] if path else Path.home() / ".kube" / "config"))

    @classmethod
    def _from_kubeconfig(cls, path: Path) -> Credentials:
        config = yaml.safe_load(path.read_text())
        current = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user: dict[str, Any] = next(
            (u["user"] for u in config.get("users", []) if u["name"] == context.get("user")), {}
        )
        workdir = tempfile.mkdtemp(prefix="cutover-gateway-kube-")

        def file(data_key: str, path_key: str, source: dict[str, Any]) -> str | None:
            if source.get(path_key):
                return str((path.parent / source[path_key]).resolve())
            if source.get(data_key):
                target = Path(workdir) / data_key
                target.write_bytes(base64.b64decode(source[data_key]))
                return str(target)
            return None

        server = cluster["server"]
        tls: ssl.SSLContext | bool = False
        if server.startswith("https://"):
            tls = ssl.create_default_context(
                cafile=file("certificate-authority-data", "certificate-authority", cluster)
            )
            if cluster.get("insecure-skip-tls-verify"):
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
            cert = file("client-certificate-data", "client-certificate", user)
            if cert:
                tls.load_cert_chain(cert, file("client-key-data", "client-key", user))
        headers = {"Authorization": f"Bearer {user['token']}"} if user.get("token") else {}
        return cls(server, tls, headers)


class Watcher:
    """Lists a collection, then watches it from that resourceVersion; relists when the watch
    expires (410) or the connection drops. Yields ("SYNC", items) after each list, then
    ("ADDED" | "MODIFIED" | "DELETED", object)."""

    def __init__(self, session: aiohttp.ClientSession, credentials: Credentials, path: str, **params: str) -> None:
        self.session, self.credentials, self.path, self.params = session, credentials, path, params

    async def _get(self, params: dict[str, str], timeout: float) -> aiohttp.ClientResponse:
        return await self.session.get(
            self.credentials.server + self.path,
            params=params,
            headers=self.credentials.headers,
            ssl=self.credentials.ssl,
            timeout=aiohttp.ClientTimeout(total=timeout, sock_read=timeout),
        )

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        backoff = 0.2
        while True:
            try:
                async with await self._get(self.params, 30) as response:
                    if response.status != 200:
                        raise aiohttp.ClientResponseError(
                            response.request_info, (), status=response.status, message=await response.text()
                        )
                    body = await response.json()
                version = body["metadata"]["resourceVersion"]
                yield "SYNC", body.get("items", [])
                backoff = 0.2
                async for event, obj in self._watch(version):
                    yield event, obj
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("watch %s: %s; relisting in %.1f s", self.path, error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _watch(self, version: str) -> AsyncIterator[tuple[str, Any]]:
        while True:
            params = {
                **self.params,
                "watch": "1",
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "300",
            }
            async with await self._get(params, 330) as response:
                if response.status != 200:
                    return
                async for line in json_lines(response.content):
                    event = json.loads(line)
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        return  # 410 Gone and friends: relist
                    version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        yield kind, obj
