"""The real Prometheus server (Debian's package) runs here and scrapes a real component: the
local kube-apiserver, with the cluster's client certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.kubectl import Kube
from tests.support.prometheus import Prometheus

pytestmark = pytest.mark.cluster


@pytest.fixture
def prometheus(kube: Kube, tmp_path: Path) -> Iterator[Prometheus]:
    config = yaml.safe_load(Path(kube.kubeconfig).read_text())
    user = config["users"][0]["user"]
    cluster = config["clusters"][0]["cluster"]
    if "client-certificate" not in user:
        pytest.skip("the cluster's kubeconfig has no client certificate file to scrape with")
    scrape = {
        "job_name": "kube-apiserver",
        "scheme": "https",
        "static_configs": [{"targets": [cluster["server"].removeprefix("https://")]}],
        "tls_config": {
            "ca_file": cluster["certificate-authority"],
            "cert_file": user["client-certificate"],
            "key_file": user["client-key"],
        },
    }
    server = Prometheus(tmp_path, [scrape]).start()
    try:
        yield server
    finally:
        server.stop()


def test_prometheus_scrapes_the_api_server(prometheus: Prometheus) -> None:
    prometheus.wait_for('up{job="kube-apiserver"} == 1', timeout=60)
    requests = prometheus.query('sum(apiserver_request_total{job="kube-apiserver"})')
    assert float(requests[0]["value"][1]) > 0
