"""The real Prometheus server (Debian's package) runs here and scrapes a real component: the
local kube-apiserver, with the cluster's client certificate."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import Kube

pytestmark = pytest.mark.cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def query(address: str, promql: str) -> list[dict[str, Any]]:
    url = f"{address}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture
def prometheus(kube: Kube, tmp_path: Path) -> Iterator[str]:
    config = yaml.safe_load(Path(kube.kubeconfig).read_text())
    user = config["users"][0]["user"]
    cluster = config["clusters"][0]["cluster"]
    if "client-certificate" not in user:
        pytest.skip("the cluster's kubeconfig has no client certificate file to scrape with")
    scrape = {
        "job_name": "kube-apiserver",
        "scheme": "https",
        "scrape_interval": "1s",
        "static_configs": [{"targets": [cluster["server"].removeprefix("https://")]}],
        "tls_config": {
            "ca_file": cluster["certificate-authority"],
            "cert_file": user["client-certificate"],
            "key_file": user["client-key"],
        },
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"scrape_configs": [scrape]}))
    port = free_port()
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (hack/system-deps installs it)"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_prometheus_scrapes_the_api_server(prometheus: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            up = query(prometheus, 'up{job="kube-apiserver"}')
            if up and up[0]["value"][1] == "1":
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("Prometheus never scraped the API server")
        time.sleep(0.5)
    requests = query(prometheus, 'sum(apiserver_request_total{job="kube-apiserver"})')
    assert float(requests[0]["value"][1]) > 0
