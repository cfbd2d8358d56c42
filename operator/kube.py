"""A small async Kubernetes client over aiohttp (which kopf already uses): what the operator
needs and nothing more.

The credentials are kopf's (kubeconfig, in-cluster service account), so the operator and its
handlers talk to the API server as one identity. Children are server-side applied under the
``cutover`` field manager; status is replaced through the status subresource with the
resourceVersion last seen, so a concurrent change is a 409 and a retry, never a lost write.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

FIELD_MANAGER = "cutover"

_PLURALS = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("v1", "Node"): "nodes",
    ("v1", "Secret"): "secrets",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproutes",
    ("cutover.dev/v1alpha1", "ModelDeployment"): "modeldeployments",
}


class ApiError(Exception):
    """The API server refused a request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    plural = _PLURALS[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    return base + (f"/{quote(name)}" if name else "")


def _file(data: str | bytes | None, path_: str | None, workdir: str) -> str | None:
    if path_:
        return path_
    if not data:
        return None
    raw = base64.b64decode(data) if isinstance(data, str) else data
    with tempfile.NamedTemporaryFile(dir=workdir, delete=False) as handle:
        handle.write(raw)
        return handle.name


@dataclass
class Kube:
    session: aiohttp.ClientSession

    @classmethod
    def from_connection(cls, info: kopf.ConnectionInfo, timeout: float = 30.0) -> Kube:
        """A client with kopf's credentials (certificates written to a private temp dir)."""
        workdir = tempfile.mkdtemp(prefix="cutover-kube-")
        context = ssl.create_default_context(cafile=_file(info.ca_data, info.ca_path, workdir))
        if info.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        cert = _file(info.certificate_data, info.certificate_path, workdir)
        key = _file(info.private_key_data, info.private_key_path, workdir)
        if cert:
            context.load_cert_chain(cert, key)
        headers = {"Authorization": f"Bearer {info.token}"} if info.token else {}
        auth = aiohttp.BasicAuth(info.username, info.password) if info.username and info.password else None
        session = aiohttp.ClientSession(
            base_url=info.server,
            headers=headers,
            auth=auth,
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(ssl=context, limit=32),
        )
        return cls(session)

    async def close(self) -> None:
        await self.session.close()

    async def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        async with self.session.request(method, url, **kwargs) as response:
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
        async with self.session.get(api_path) as response:
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
        params = {k: v for k, v in {"labelSelector": label_selector, "fieldSelector": field_selector}.items() if v}
        body = await self._request("GET", path(api_version, kind, namespace), params=params)
        items: list[dict[str, Any]] = body.get("items", [])
        return items

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the cutover field manager (taking over conflicting fields)."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        body: dict[str, Any] = await self._request(
            "PATCH",
            url,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            data=json.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        return body

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        """One object; raises :class:`ApiError` (404 when it does not exist)."""
        body: dict[str, Any] = await self._request("GET", path(api_version, kind, namespace, name))
        return body

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
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
