"""The operator's client is cutover's one client with kopf's credentials: every way kopf hands
them over (a token, a user name and password, skipping TLS verification) reaches the client."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
from pathlib import Path

import certifi
import kopf
import pytest

from cutover.operator.kube import credentials
from cutover.operator.main import login
from cutover.serving.kube import CredentialsError
from tests.serving.test_kube_client import kubeconfig


def test_kopf_credentials_become_the_clients() -> None:
    token = credentials(kopf.ConnectionInfo(server="http://127.0.0.1:8001", token="abc"))
    assert (token.server, token.ssl, token.headers) == ("http://127.0.0.1:8001", False, {"Authorization": "Bearer abc"})
    basic = credentials(kopf.ConnectionInfo(server="https://10.0.0.1:6443", username="u", password="p", insecure=True))
    assert isinstance(basic.ssl, ssl.SSLContext) and basic.ssl.verify_mode == ssl.CERT_NONE
    assert basic.headers == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}


def test_a_kubeconfigs_relative_paths_are_read_from_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As kubectl reads them; kopf's own kubeconfig login reads them from the working directory."""
    folder = tmp_path / "kube"
    folder.mkdir()
    shutil.copy(certifi.where(), folder / "ca.crt")
    cluster = {"server": "https://127.0.0.1:6443", "certificate-authority": "ca.crt"}
    config = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": "abc"}}],
    }
    (folder / "config").write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(folder / "config"))
    monkeypatch.chdir(tmp_path)
    info = login(settings=kopf.OperatorSettings())
    assert info is not None and info.ca_path == str(folder / "ca.crt")
    secure = credentials(info)
    assert isinstance(secure.ssl, ssl.SSLContext) and secure.ssl.verify_mode == ssl.CERT_REQUIRED


def test_the_operator_reads_a_token_file_and_refuses_an_exec_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kopf's kubeconfig login ignores both: the operator ran as anonymous, each call a 403. The
    refusal is permanent, so the operator stops with its reason instead of retrying it forever."""
    (tmp_path / "token").write_text("from-file\n")
    cluster = {"server": "http://127.0.0.1:8001"}
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, cluster, {"tokenFile": "token"})))
    monkeypatch.chdir("/")
    info = login(settings=kopf.OperatorSettings())
    assert info is not None and credentials(info).headers == {"Authorization": "Bearer from-file"}
    kubeconfig(tmp_path, cluster, {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}})
    with pytest.raises(kopf.PermanentError, match=r"exec \(aws\)") as refused:
        login(settings=kopf.OperatorSettings())
    assert isinstance(refused.value.__cause__, CredentialsError)


def test_the_operator_stops_on_a_certificate_file_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = {"server": "https://127.0.0.1:6443", "certificate-authority": "missing-ca.crt"}
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, cluster, {"token": "abc"})))
    with pytest.raises(kopf.PermanentError, match=r"missing-ca\.crt"):
        login(settings=kopf.OperatorSettings())
