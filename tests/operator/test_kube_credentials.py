"""The operator's client is cutover's one client with kopf's credentials: every way kopf hands
them over (a token, a user name and password, skipping TLS verification) reaches the client."""

from __future__ import annotations

import base64
import ssl

import kopf

from cutover.operator.kube import credentials


def test_kopf_credentials_become_the_clients() -> None:
    token = credentials(kopf.ConnectionInfo(server="http://127.0.0.1:8001", token="abc"))
    assert (token.server, token.ssl, token.headers) == ("http://127.0.0.1:8001", False, {"Authorization": "Bearer abc"})
    basic = credentials(kopf.ConnectionInfo(server="https://10.0.0.1:6443", username="u", password="p", insecure=True))
    assert isinstance(basic.ssl, ssl.SSLContext) and basic.ssl.verify_mode == ssl.CERT_NONE
    assert basic.headers == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
