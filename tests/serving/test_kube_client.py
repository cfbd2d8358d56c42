"""cutover's one Kubernetes client (cutover.serving.kube) against a small fake API server: what
each call sends (server-side apply under the cutover field manager, the status subresource guarded
by resourceVersion, background deletes), how refusals surface, and credentials from a kubeconfig."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import certifi
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from cutover.serving.kube import ApiError, Credentials, CredentialsError, Kube, path, tls_file

MD = {
    "apiVersion": "cutover.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "payments", "resourceVersion": "7"},
    "spec": {"model": {"name": "fraud"}},
}


class FakeApiServer:
    """Records every request; answers from ``objects`` by path (404 when absent)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], dict[str, str], Any]] = []
        self.objects: dict[str, Any] = {}

    async def handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        body = json.loads(text) if text else None
        self.seen.append((request.method, request.path, dict(request.query), dict(request.headers), body))
        if request.method == "GET" and request.path in self.objects:
            return web.json_response(self.objects[request.path])
        if request.method in ("PATCH", "PUT"):
            return web.json_response(body)
        return web.json_response({"kind": "Status", "message": f"{request.path} not found"}, status=404)


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeApiServer, Kube]]:
    fake = FakeApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app)
    await server.start_server()
    kube = Kube(Credentials(str(server.make_url("")).rstrip("/"), False, {"Authorization": "Bearer t0ken"}))
    try:
        yield fake, kube
    finally:
        await kube.close()
        await server.close()


async def test_apply_is_a_forced_server_side_apply_under_the_cutover_field_manager(
    api: tuple[FakeApiServer, Kube],
) -> None:
    fake, kube = api
    assert await kube.apply(MD) == MD
    method, where, query, headers, body = fake.seen[-1]
    assert (method, where) == ("PATCH", "/apis/cutover.dev/v1alpha1/namespaces/payments/modeldeployments/fraud")
    assert query == {"fieldManager": "cutover", "force": "true"}
    assert headers["Content-Type"] == "application/apply-patch+yaml"
    assert headers["Authorization"] == "Bearer t0ken"
    assert body == MD


async def test_status_is_replaced_through_the_subresource_guarded_by_the_version_last_seen(
    api: tuple[FakeApiServer, Kube],
) -> None:
    fake, kube = api
    await kube.replace_status(MD, {"phase": "Progressing"})
    method, where, _, _, body = fake.seen[-1]
    assert (method, where) == ("PUT", path("cutover.dev/v1alpha1", "ModelDeployment", "payments", "fraud") + "/status")
    assert body["metadata"] == {"name": "fraud", "namespace": "payments", "resourceVersion": "7"}
    assert body["status"] == {"phase": "Progressing"}


async def test_a_missing_object_is_an_api_error_on_get_and_nothing_on_delete(api: tuple[FakeApiServer, Kube]) -> None:
    fake, kube = api
    with pytest.raises(ApiError) as refused:
        await kube.get("v1", "Secret", "payments", "token")
    assert refused.value.status == 404
    assert "/api/v1/namespaces/payments/secrets/token not found" in str(refused.value)
    await kube.delete("apps/v1", "Deployment", "payments", "fraud-abc")
    assert fake.seen[-1][0] == "DELETE" and fake.seen[-1][4] == {"propagationPolicy": "Background"}


async def test_list_sends_its_selectors_and_discovery_answers_whether_an_api_is_served(
    api: tuple[FakeApiServer, Kube],
) -> None:
    fake, kube = api
    fake.objects["/api/v1/pods"] = {"items": [{"metadata": {"name": "p"}}]}
    fake.objects["/apis/gateway.networking.k8s.io/v1"] = {"kind": "APIResourceList"}
    items = await kube.list("v1", "Pod", field_selector="status.phase!=Failed", label_selector="a=b")
    assert items == [{"metadata": {"name": "p"}}]
    assert fake.seen[-1][2] == {"fieldSelector": "status.phase!=Failed", "labelSelector": "a=b"}
    assert await kube.discover("/apis/gateway.networking.k8s.io/v1")
    assert not await kube.discover("/apis/example.com/v1")


async def test_a_watch_over_the_client_starts_with_the_list(api: tuple[FakeApiServer, Kube]) -> None:
    fake, kube = api
    fake.objects["/api/v1/secrets"] = {"metadata": {"resourceVersion": "1"}, "items": [{"metadata": {"name": "k"}}]}
    events = kube.watch("/api/v1/secrets", labelSelector="cutover.dev/api-key=true").events()
    try:
        assert await anext(events) == ("SYNC", [{"metadata": {"name": "k"}}])
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert fake.seen[0][2] == {"labelSelector": "cutover.dev/api-key=true"}


def kubeconfig(tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    config = {
        "current-context": "here",
        "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
    }
    target = tmp_path / "kubeconfig.yaml"
    target.write_text(yaml.safe_dump(config))
    return target


def test_credentials_from_a_kubeconfig_with_a_token_or_a_password(tmp_path: Path) -> None:
    plain = Credentials.load(str(kubeconfig(tmp_path, {"server": "http://127.0.0.1:8001"}, {"token": "abc"})))
    assert (plain.server, plain.ssl, plain.headers) == ("http://127.0.0.1:8001", False, {"Authorization": "Bearer abc"})
    cluster = {"server": "https://10.0.0.1:6443", "insecure-skip-tls-verify": True}
    secure = Credentials.load(str(kubeconfig(tmp_path, cluster, {"username": "admin", "password": "pw"})))
    assert isinstance(secure.ssl, ssl.SSLContext) and secure.ssl.verify_mode == ssl.CERT_NONE
    assert secure.headers == {"Authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}


def test_certificate_data_is_written_to_a_private_file_and_a_path_is_kept(tmp_path: Path) -> None:
    written = tls_file(lambda: tmp_path, "client.crt", base64.b64encode(b"CERT").decode(), None)
    assert written is not None and Path(written).read_bytes() == b"CERT"
    raw = tls_file(lambda: tmp_path, "ca.crt", b"RAW", None)
    assert raw is not None and Path(raw).read_bytes() == b"RAW"
    assert tls_file(lambda: tmp_path, "client.key", "ignored", Path("/keys/client.key")) == "/keys/client.key"
    assert tls_file(lambda: tmp_path, "none", None, None) is None


def test_a_kubeconfig_naming_certificate_files_needs_no_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the chart runs the gateway: a read-only root file system with no /tmp, where making a
    temporary folder fails; certificates given as files (relative to the kubeconfig) need none."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "read-only-root"))
    shutil.copy(certifi.where(), tmp_path / "ca.crt")
    cluster = {"server": "https://127.0.0.1:6443", "certificate-authority": "ca.crt"}
    secure = Credentials.load(str(kubeconfig(tmp_path, cluster, {"token": "abc"})))
    assert isinstance(secure.ssl, ssl.SSLContext) and secure.ssl.verify_mode == ssl.CERT_REQUIRED


def test_a_kubeconfig_token_file_is_read_from_its_folder_and_an_exec_plugin_is_refused(tmp_path: Path) -> None:
    """As kubectl reads ``tokenFile``; an ``exec`` plugin or an ``auth-provider`` with no token
    used to leave the client anonymous, every request a 401 or 403 that named no cause."""
    (tmp_path / "token").write_text("from-file\n")
    cluster = {"server": "http://127.0.0.1:8001"}
    from_file = Credentials.load(str(kubeconfig(tmp_path, cluster, {"tokenFile": "token"})))
    assert from_file.headers == {"Authorization": "Bearer from-file"}
    cached = {"auth-provider": {"name": "oidc", "config": {"access-token": "cached"}}}
    assert Credentials.load(str(kubeconfig(tmp_path, cluster, cached))).headers == {"Authorization": "Bearer cached"}
    plugin = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws", "args": ["eks", "get-token"]}}
    with pytest.raises(CredentialsError, match=r"exec \(aws\)"):
        Credentials.load(str(kubeconfig(tmp_path, cluster, plugin)))
    with pytest.raises(CredentialsError, match=r"auth-provider \(gcp\)"):
        Credentials.load(str(kubeconfig(tmp_path, cluster, {"auth-provider": {"name": "gcp"}})))


@pytest.mark.parametrize(
    ("ca", "user"),
    [
        ("gone/ca.crt", {"token": "abc"}),
        ("ca.crt", {"client-certificate": "gone/client.crt", "client-key": "gone/client.key"}),
        ("ca.crt", {"tokenFile": "gone/token"}),
    ],
)
def test_a_file_the_kubeconfig_names_that_is_missing_is_named_in_the_error(
    tmp_path: Path, ca: str, user: dict[str, str]
) -> None:
    """As in a container that mounts the kubeconfig but not the files it names: ``ssl`` said only
    "No such file or directory", and the operator retried that every minute."""
    shutil.copy(certifi.where(), tmp_path / "ca.crt")
    cluster = {"server": "https://127.0.0.1:6443", "certificate-authority": ca}
    with pytest.raises(CredentialsError, match=r"gone/"):
        Credentials.load(str(kubeconfig(tmp_path, cluster, user)))
