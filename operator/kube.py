"""The operator's Kubernetes client: cutover's one client (``cutover.serving.kube``) with kopf's
credentials (kubeconfig, in-cluster service account, or a login handler), so the operator and its
kopf handlers talk to the API server as one identity.

Only this adapter knows kopf: the client itself lives with the gateway, which must not import it.
"""

from __future__ import annotations

import kopf

from cutover.serving.kube import FIELD_MANAGER, ApiError, Credentials, path, private_folder, tls_file
from cutover.serving.kube import Kube as Client

__all__ = ["FIELD_MANAGER", "ApiError", "Kube", "credentials", "path"]


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


class Kube(Client):
    """The client, made from kopf's credentials."""

    @classmethod
    def from_connection(cls, info: kopf.ConnectionInfo, timeout: float = 30.0) -> Kube:
        """A client with kopf's credentials, ``timeout`` seconds per request."""
        return cls(credentials(info), timeout=timeout)
