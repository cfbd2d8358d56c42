"""The names the chart makes from a release name as long as Helm allows (53 characters) with every
switch on: each is one the API server takes and tells the release's objects apart. Cutting
``<release>-cutover-<component>`` at 63 characters made the gateway's and the operator metrics'
Service names too long for a DNS label (`helm install` failed), the three dashboards one
ConfigMap name, and the shards one Lease (one leader among all of them)."""

from __future__ import annotations

import re
from collections import Counter

from tests.support.chart import every_switch

from .test_alert_render_chart import rendered

LONGEST = "team-ml-platform-recommendations-production-eu-west-1"
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def test_a_release_name_at_helms_limit_makes_names_the_api_server_takes() -> None:
    assert len(LONGEST) == 53
    docs = rendered(*every_switch(), release=LONGEST)
    services = [d["metadata"]["name"] for d in docs if d["kind"] == "Service"]
    assert len(services) == 2 and all(DNS_LABEL.match(name) for name in services), services
    names = Counter((d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs)
    assert [key for key, count in names.items() if count > 1] == []
    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]
    assert len(dashboards) == 3
    assert all(d["metadata"]["name"].endswith(f"-dashboard-{next(iter(d['data']))[:-5]}") for d in dashboards)


def test_each_shard_of_a_long_release_holds_its_own_lease() -> None:
    docs = rendered(*every_switch(), release=LONGEST)
    operators = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].count("-operator-")]
    leases = [
        arg.removeprefix("--leader-elect-resource-name=")
        for d in operators
        for arg in d["spec"]["template"]["spec"]["containers"][0]["args"]
        if arg.startswith("--leader-elect-resource-name=")
    ]
    assert len(operators) == 2 and len(set(leases)) == 2, leases
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader-election")]
    assert sorted(role["rules"][1]["resourceNames"]) == sorted(leases)
