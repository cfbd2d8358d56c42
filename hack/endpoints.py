"""Development only: the data plane's addresses from the cluster's EndpointSlices, for serving
pods that run on a real node (hack/node) whose pod network the host reaches. It stands where
hack/runner.py stands for kwok's pods, and writes the same two files into its state directory:

- ``backends.json`` (``namespace/service`` -> URL), which ``cutover gateway --backends`` reads:
  for each Service, one endpoint that is ready and not terminating, at its ``http`` port. The
  gateway outside a cluster cannot resolve ``service.namespace.svc`` (no cluster DNS here, and no
  kube-proxy behind a ClusterIP), so this follows what kube-proxy follows: the slices the real
  endpoint-slice controller keeps from the pods' readiness, which the real kubelet's probes set.
  A Service without such an endpoint is left out, so a pod that is not ready or is shutting down
  gets no new requests.
- ``serving-targets.json``, Prometheus file_sd targets: every serving pod's address at its
  ``http`` port, ready or not, as a PodMonitor would scrape them. (Debian's Prometheus 2.42 is
  built without ``kubernetes_sd_configs``: `promtool check config` answers "field
  kubernetes_sd_configs not found in type config.ScrapeConfig".)

    .venv/bin/python -m hack.endpoints --kubeconfig K -n NAMESPACE --state-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp

from cutover.serving.kube import Credentials, Watcher
from hack.runner import _replace

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label the endpoint-slice controller puts on each slice: the Service it belongs to."""
PORT_NAME = "http"
"""The serving Services' port name (operator/builders.py)."""


def _port(endpoint_slice: dict[str, Any]) -> int | None:
    ports = endpoint_slice.get("ports") or []
    return next((p["port"] for p in ports if p.get("name") == PORT_NAME and p.get("port")), None)


def ready_url(endpoint_slice: dict[str, Any]) -> str | None:
    """``http://ADDRESS:PORT`` of the first endpoint in the slice that is ready and not
    terminating, at the port named ``http``; None when there is none."""
    port = _port(endpoint_slice)
    for endpoint in endpoint_slice.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        if port is not None and conditions.get("ready") and not conditions.get("terminating"):
            return f"http://{endpoint['addresses'][0]}:{port}"
    return None


def targets(endpoint_slice: dict[str, Any]) -> set[str]:
    """``ADDRESS:PORT`` of every endpoint in the slice, at the port named ``http``."""
    port = _port(endpoint_slice)
    if port is None:
        return set()
    return {f"{address}:{port}" for e in endpoint_slice.get("endpoints") or [] for address in e["addresses"][:1]}


class Addresses:
    """The slices seen, by (namespace, name), and the two files written from them."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.backends_file = state_dir / "backends.json"
        self.targets_file = state_dir / "serving-targets.json"
        self.slices: dict[tuple[str, str], dict[str, Any]] = {}
        self.write()

    def update(self, obj: dict[str, Any], deleted: bool = False) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if deleted:
            self.slices.pop(key, None)
        else:
            self.slices[key] = obj

    def write(self) -> None:
        backends: dict[str, str] = {}
        scraped: set[str] = set()
        for (namespace, _), endpoint_slice in sorted(self.slices.items()):
            service = (endpoint_slice["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
            url = ready_url(endpoint_slice)
            if service and url:
                backends.setdefault(f"{namespace}/{service}", url)
            scraped |= targets(endpoint_slice)
        _replace(self.backends_file, json.dumps(backends, indent=1, sort_keys=True))
        # One target per pod, however many Services (a revision's, the stable alias) select it.
        groups = [{"targets": sorted(scraped), "labels": {"job": "cutover-serving"}}] if scraped else []
        _replace(self.targets_file, json.dumps(groups, indent=1))


async def follow(addresses: Addresses, credentials: Credentials, namespace: str) -> None:
    async with aiohttp.ClientSession() as session:
        path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        async for event, obj in Watcher(session, credentials, path).events():
            if event == "SYNC":
                for key in [k for k in addresses.slices if k[0] == namespace]:
                    del addresses.slices[key]
                for item in obj:
                    addresses.update(item)
            else:
                addresses.update(obj, deleted=event == "DELETED")
            addresses.write()


async def main_async(args: argparse.Namespace) -> None:
    addresses = Addresses(args.state_dir)
    credentials = Credentials.load(args.kubeconfig)
    await asyncio.gather(*(follow(addresses, credentials, namespace) for namespace in args.namespace))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("-n", "--namespace", action="append", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
