"""The one Kubernetes client of cutover, over aiohttp: what the operator writes (server-side
apply, the status subresource, deletes) and reads (get, list, API discovery), and the gateway's
list-then-watch loop that survives restarts of the watch.

Hand-written rather than a client SDK: the components need a dozen calls, aiohttp is already a
dependency (kopf is built on it, and so is the serving runtime), and an SDK would be another
dependency the size of the rest of cutover. One client for every component, two ways to get its
``Credentials``: ``Credentials.load`` (the pod's service account, or a kubeconfig: the gateway,
the local runner, tests) and ``cutover.operator.kube.credentials`` (kopf's ``ConnectionInfo``,
so the operator and its kopf handlers talk to the API server as one identity). The module lives
in serving/ because the gateway must not depend on kopf, while the operator may import from
serving: the kopf adapter is all that operator/kube.py holds.

Writes: children are server-side applied under the ``cutover`` field manager; status is
replaced through the status subresource with the resourceVersion last seen, so a concurrent
change is a 409 and a retry, never a lost write.

Watches: a watch event is one line of JSON holding the whole object, and an object may be as
large as the API server stores (about 1.5 MiB in etcd: a ModelDeployment with a large annotation
or ``safeDefault``, a Secret). aiohttp's own line iteration (``async for line in
response.content``) refuses a line longer than twice its buffer limit (128 KiB) with
``LineTooLong``, which ended the watch on every change of such an object; ``json_lines`` splits
the stream itself.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml

log = logging.getLogger(__name__)
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FIELD_MANAGER = "cutover"
"""The field manager of every server-side apply."""
MAX_EVENT_BYTES = 64 << 20
"""Longest watch event accepted: far above any object the API server stores (etcd's request
limit is 1.5 MiB, a few times that once JSON-escaped), yet a bound on memory if a stream never
sends a newline."""

_PLURALS = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("v1", "Node"): "nodes",
    ("v1", "Secret"): "secrets",
    ("v1", "ConfigMap"): "configmaps",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproutes",
    ("cutover.dev/v1alpha1", "ModelDeployment"): "modeldeployments",
    ("cutover.dev/v1alpha1", "AlertRule"): "alertrules",
    ("cutover.dev/v1alpha1", "SafetyPolicy"): "safetypolicies",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrules",
    ("coordination.k8s.io/v1", "Lease"): "leases",
}


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


class ApiError(Exception):
    """The API server refused a request; ``status`` is its HTTP status (404: no such object)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    """The API path of a collection (``name`` None) or an object, for the kinds cutover uses.
    Raises KeyError for any other kind."""
    plural = _PLURALS[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    return base + (f"/{quote(name)}" if name else "")


def private_folder() -> Callable[[], Path]:
    """A private temporary folder (``tempfile.mkdtemp``), made on the first call and the same one
    after: credentials given as files then need no writable temp dir at all (a container with a
    read-only root file system and no /tmp, as the chart runs the gateway)."""
    return functools.cache(lambda: Path(tempfile.mkdtemp(prefix="cutover-kube-")))


def tls_file(
    workdir: Callable[[], Path], name: str, data: str | bytes | None, path: str | bytes | os.PathLike[Any] | None
) -> str | None:
    """A certificate or key file for ``ssl``: ``path`` as given, else ``data`` (base64 text as in a
    kubeconfig, or the raw bytes) written to ``workdir()/name``; None when neither is set."""
    if path:
        return os.fsdecode(path)
    if not data:
        return None
    target = workdir() / name
    target.write_bytes(base64.b64decode(data) if isinstance(data, str) else data)
    return str(target)


@dataclass
class Credentials:
    """Where the API server is and how to prove who we are: ``ssl`` is the TLS context (False
    for plain HTTP), ``headers`` carry the Authorization (a bearer token, or a user name and
    password) sent with every request."""

    server: str
    ssl: ssl.SSLContext | bool
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        server: str,
        *,
        ca: str | None = None,
        certificate: str | None = None,
        key: str | None = None,
        insecure: bool = False,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> Credentials:
        """From their parts: ``ca``, ``certificate`` and ``key`` are file paths (see ``tls_file``);
        ``insecure`` skips verifying the server's certificate; a token wins over a password.
        Raises CredentialsError naming the files when they cannot be read or are not PEM."""
        tls: ssl.SSLContext | bool = False
        if server.startswith("https://"):
            try:
                tls = ssl.create_default_context(cafile=ca)
                if certificate:
                    tls.load_cert_chain(certificate, key)
            except OSError as error:  # ssl.SSLError too: a file that is not PEM
                raise CredentialsError(
                    f"cannot use the TLS files (CA {ca}, certificate {certificate}, key {key}): {error}"
                ) from error
            if insecure:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif username and password:
            headers["Authorization"] = aiohttp.encode_basic_auth(username, password)
        return cls(server, tls, headers)

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> Credentials:
        """In a pod, the service account; else ``kubeconfig``, ``$KUBECONFIG`` or ~/.kube/config."""
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path is None and (SERVICE_ACCOUNT / "token").exists():
            host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
            token = (SERVICE_ACCOUNT / "token").read_text().strip()
            return cls.of(f"https://{host}:{port}", ca=str(SERVICE_ACCOUNT / "ca.crt"), token=token)
        return cls._from_kubeconfig(Path(path.split(os.pathsep)[0] if path else Path.home() / ".kube" / "config"))

    @classmethod
    def _from_kubeconfig(cls, path: Path) -> Credentials:
        config = yaml.safe_load(path.read_text())
        current = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = kubeconfig_user(config)
        workdir = private_folder()

        def file(data_key: str, path_key: str, source: dict[str, Any]) -> str | None:
            relative = source.get(path_key)  # relative to the kubeconfig's folder
            return tls_file(
                workdir, data_key, source.get(data_key), (path.parent / relative).resolve() if relative else None
            )

        server: str = cluster["server"]
        secure = server.startswith("https://")
        return cls.of(
            server,
            ca=file("certificate-authority-data", "certificate-authority", cluster) if secure else None,
            certificate=file("client-certificate-data", "client-certificate", user) if secure else None,
            key=file("client-key-data", "client-key", user) if secure else None,
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            token=kubeconfig_token(user, path.parent),
            username=user.get("username"),
            password=user.get("password"),
        )


class CredentialsError(ValueError):
    """Credentials that cannot work, and why: a file they name that cannot be read (a CA,
    certificate, key or token file missing where the process runs, as in a container that mounts
    the kubeconfig but not what it names: ``ssl`` says "No such file or directory" without the
    file), or a kubeconfig user that authenticates in a way cutover does not (an ``exec`` plugin
    or an ``auth-provider``, where the client would go on as anonymous and every request fail
    with a 401 or 403 that says nothing about the kubeconfig)."""


def kubeconfig_user(config: dict[str, Any]) -> dict[str, Any]:
    """The ``user`` entry of a parsed kubeconfig's current context ({} when it names none)."""
    current = config.get("current-context")
    context: dict[str, Any] = next((c["context"] for c in config.get("contexts", []) if c["name"] == current), {})
    user: dict[str, Any] = next((u["user"] for u in config.get("users", []) if u["name"] == context.get("user")), {})
    return user


def kubeconfig_token(user: dict[str, Any], folder: Path) -> str | None:
    """The bearer token a kubeconfig ``user`` entry gives: ``token``, else the contents of
    ``tokenFile`` read once, relative to ``folder`` (the kubeconfig's) as kubectl reads it, else
    an ``auth-provider``'s cached access-token; None for none. Raises CredentialsError for an
    ``exec`` plugin or an ``auth-provider`` without a token (client-go's ``AuthInfo`` fields; the
    plugins are not in cutover's images either), or for a token file that cannot be read."""
    if user.get("token"):
        return str(user["token"])
    if user.get("tokenFile"):
        try:
            return (folder / str(user["tokenFile"])).read_text().strip()
        except OSError as error:
            raise CredentialsError(f"cannot read the kubeconfig's tokenFile: {error}") from error
    if user.get("auth-provider", {}).get("config", {}).get("access-token"):
        return str(user["auth-provider"]["config"]["access-token"])  # a cached one, as kopf takes it
    for way in ("exec", "auth-provider"):
        if way in user:
            command = user[way].get("command") or user[way].get("name")
            raise CredentialsError(
                f"the kubeconfig's user authenticates with {way} ({command}), which cutover does not run: "
                "give it a token, tokenFile or client certificate, or run in a pod with its service account"
            )
    return None


def _relative(api_path: str) -> str:
    """An API path (``/apis/...``) relative to the server's address, whose path it extends."""
    return api_path.lstrip("/")


class Kube:
    """A session with the API server: ``timeout`` seconds per request (a watch sets its own),
    at most ``connections`` open at once (0: no limit). Close it with ``close()`` or use it as
    an async context manager."""

    def __init__(self, credentials: Credentials, *, timeout: float = 30.0, connections: int = 32) -> None:
        self.credentials = credentials
        # The server's address may have a path (a cluster behind a proxy, such as Rancher's
        # https://rancher/k8s/clusters/<id>): API paths are sent relative to it (``_relative``),
        # and aiohttp takes a base URL with a path only when it ends in "/". The gateway's
        # watches, which send ``server + path``, reached such a server before they moved here.
        self.session = aiohttp.ClientSession(
            base_url=credentials.server if credentials.server.endswith("/") else credentials.server + "/",
            headers=credentials.headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(ssl=credentials.ssl, limit=connections),
        )

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.session.close()

    async def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        async with self.session.request(method, _relative(url), **kwargs) as response:
            text = await response.text()
            if response.status >= 400:
                try:
                    message = json.loads(text).get("message", text)
                except ValueError:
                    message = text
                raise ApiError(response.status, message)
            return json.loads(text) if text else None

    async def discover(self, api_path: str) -> bool:
        """Whether the server serves an API group version (for example a CRD's)."""
        async with self.session.get(_relative(api_path)) as response:
            return response.status == 200

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """The objects of a kind (in ``namespace``, or all), filtered by the selectors. Raises ApiError."""
        params = {k: v for k, v in {"labelSelector": label_selector, "fieldSelector": field_selector}.items() if v}
        body = await self._request("GET", path(api_version, kind, namespace), params=params)
        items: list[dict[str, Any]] = body.get("items", [])
        return items

    async def apply(self, obj: dict[str, Any], field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply under ``field_manager`` (taking over conflicting fields)."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        body: dict[str, Any] = await self._request(
            "PATCH",
            url,
            params={"fieldManager": field_manager, "force": "true"},
            data=json.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        return body

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST a new object; raises :class:`ApiError` (409 when one of that name exists)."""
        meta = obj["metadata"]
        body: dict[str, Any] = await self._request(
            "POST", path(obj["apiVersion"], obj["kind"], meta.get("namespace")), json=obj
        )
        return body

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT an object whole, guarded by its ``metadata.resourceVersion``: a 409 when anyone
        wrote it since that version was read (what a Lease's holder relies on)."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        body: dict[str, Any] = await self._request("PUT", url, json=obj)
        return body

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        """One object; raises :class:`ApiError` (404 when it does not exist)."""
        body: dict[str, Any] = await self._request("GET", path(api_version, kind, namespace, name))
        return body

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        """Delete an object (its dependents in the background); one already gone is no error."""
        try:
            await self._request(
                "DELETE", path(api_version, kind, namespace, name), json={"propagationPolicy": "Background"}
            )
        except ApiError as err:
            if err.status != 404:
                raise

    async def replace_status(self, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """PUT the status subresource, guarded by the resourceVersion of ``body``."""
        meta = body["metadata"]
        url = path(body["apiVersion"], body["kind"], meta.get("namespace"), meta["name"]) + "/status"
        payload = {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "resourceVersion": meta["resourceVersion"],
            },
            "spec": body.get("spec", {}),
            "status": status,
        }
        result: dict[str, Any] = await self._request("PUT", url, json=payload)
        return result

    def watch(self, collection: str, restarted: Callable[[str], None] | None = None, **params: str) -> Watcher:
        """A list-then-watch of the collection at API path ``collection`` (``params``: a label
        selector, say) over this session; ``restarted`` as for :class:`Watcher`."""
        return Watcher(self.session, self.credentials, collection, restarted, **params)


class Watcher:
    """Lists a collection, then watches it from that resourceVersion; relists when the watch
    expires (410) or the connection drops. Yields ("SYNC", items) after each list, then
    ("ADDED" | "MODIFIED" | "DELETED", object).

    ``restarted`` is called each time the loop lists again, with why: ``ended`` (the API server
    ended the watch: 410 Gone or another ERROR event, or refused it) or ``failed`` (a list, the
    connection or an event failed). A watch that only times out (every 300 s) goes on from its
    resourceVersion without a new list and is no restart. The owners count these
    (``cutover_gateway_watch_restarts_total``, ``cutover_operator_watch_restarts_total``)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: Credentials,
        path: str,
        restarted: Callable[[str], None] | None = None,
        **params: str,
    ) -> None:
        self.session, self.credentials, self.path, self.params = session, credentials, path, params
        self.restarted = restarted or (lambda reason: None)

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
                self.restarted("ended")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.restarted("failed")
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
