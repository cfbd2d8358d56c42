"""The operator's Kubernetes client: cutover's one client (``cutover.serving.kube``) with kopf's
credentials (kubeconfig, in-cluster service account, or a login handler), so the operator and its
kopf handlers talk to the API server as one identity.

Only this adapter knows kopf: the client itself lives with the gateway, which must not import it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import kopf
import yaml

from cutover.serving.kube import (
    FIELD_MANAGER,
    ApiError,
    Credentials,
    kubeconfig_token,
    kubeconfig_user,
    path,
    private_folder,
    tls_file,
)
from cutover.serving.kube import Kube as Client

__all__ = ["FIELD_MANAGER", "ApiError", "Kube", "credentials", "path", "relative_to_kubeconfig"]


def credentials(info: kopf.ConnectionInfo) -> Credentials:
    """kopf's ``ConnectionInfo`` as the client's credentials (certificates given as data are
    written to a private temp dir, made only then)."""
    workdir = private_folder()
    return Credentials.of(
        info.server,
        ca=tls_file(workdir, "ca.crt", info.ca_data, info.ca_path),
        certificate=tls_file(workdir, "client.crt", info.certificate_data, info.certificate_path),
        key=tls_file(workdir, "client.key", info.private_key_data, info.private_key_path),
        insecure=bool(info.insecure),
        token=info.token,
        username=info.username,
        password=info.password,
    )


def relative_to_kubeconfig(info: kopf.ConnectionInfo | None) -> kopf.ConnectionInfo | None:
    """``info`` from kopf's ``login_with_kubeconfig`` with its certificate and key paths read as
    kubectl reads them: relative to the kubeconfig's folder, where kopf (1.45) leaves them
    relative to the working directory, and the user's ``tokenFile``, which kopf ignores, read
    (``cutover.serving.kube.kubeconfig_token``: raises CredentialsError for an ``exec``
    plugin, which kopf ignores too, leaving the operator anonymous). The kubeconfig is kopf's: the
    first of $KUBECONFIG, else ~/.kube/config. Absolute paths and None pass unchanged."""
    if info is None:
        return None
    first = next((p.strip() for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p.strip()), "")
    kubeconfig = Path(first or "~/.kube/config").expanduser()
    folder = kubeconfig.parent
    token = info.token or kubeconfig_token(kubeconfig_user(yaml.safe_load(kubeconfig.read_text())), folder)

    def resolved(file: str | bytes | os.PathLike[Any] | None) -> str | None:
        return str(folder / os.fsdecode(file)) if file else None

    return dataclasses.replace(
        info,
        ca_path=resolved(info.ca_path),
        certificate_path=resolved(info.certificate_path),
        private_key_path=resolved(info.private_key_path),
        token=token,
    )


class Kube(Client):
    """The client, made from kopf's credentials."""

    @classmethod
    def from_connection(cls, info: kopf.ConnectionInfo, timeout: float = 30.0) -> Kube:
        """A client with kopf's credentials, ``timeout`` seconds per request."""
        return cls(credentials(info), timeout=timeout)
