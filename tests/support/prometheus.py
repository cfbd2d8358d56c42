"""A real Prometheus server (Debian's package) on a loopback port, for tests and the demo."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .ports import free_port
from .waiting import answers, wait_until


class Prometheus:
    """Starts, stops and queries one Prometheus process; its data survives a restart.

    ``workdir`` holds ``prometheus.yml``, ``prometheus.log`` and the TSDB (``data``)."""

    def __init__(self, workdir: Path, scrape_configs: list[dict[str, Any]], scrape_interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed (hack/system-deps installs it)"
        self.binary, self.workdir = binary, workdir
        self.port = free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": scrape_configs,
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Prometheus:
        """Start it and wait until ``/-/ready`` answers 200.

        Raises:
            TimedOut: not ready within ``timeout`` seconds, or the process exited first.
        """
        log = (self.workdir / "prometheus.log").open("a")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        what = f"Prometheus (see {self.workdir / 'prometheus.log'})"
        process = self.process
        wait_until(lambda: answers(f"{self.address}/-/ready", process, what), timeout, f"{what} to be ready", 0.1)
        return self

    def stop(self) -> None:
        """SIGTERM, and wait up to 30 s for it to exit."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's ``data.result`` (one dict per series: ``metric``, ``value``)."""
        url = f"{self.address}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query's ``data.result`` (one dict per series: ``metric``, ``values``), as a
        Grafana panel asks it: from ``start`` to ``end`` (Unix seconds), one point per ``step`` s."""
        query = {"query": promql, "start": start, "end": end, "step": step}
        with urllib.request.urlopen(
            f"{self.address}/api/v1/query_range?{urllib.parse.urlencode(query)}", timeout=10
        ) as response:
            body = json.load(response)
        assert body["status"] == "success"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Poll until the query returns a non-empty result, and return it.

        Raises:
            TimedOut: no result within ``timeout`` seconds.
        """

        def result() -> list[dict[str, Any]]:
            try:
                return self.query(promql)
            except (urllib.error.URLError, OSError):
                return []

        return wait_until(result, timeout, f"a result for {promql}", 0.2)
