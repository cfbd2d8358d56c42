"""What status.traffic says is what the data plane does, for every strategy x provider the API
admits (issue 12, item 4).

Each step of a random rollout is applied to a model of the data plane built from the children
the operator would apply: the gateway routes by the table it reads (revisions whose Service has
no ready endpoint dropped), a Gateway API implementation splits by the HTTPRoute's backendRefs
weights, and a Service without a router spreads connections over the ready pods its selector
matches. The share each revision gets must be the weight the table shows.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cutover.api.v1alpha1 import ModelDeployment
from cutover.operator import builders
from cutover.operator.rollout import BASELINE_SUFFIX, AnalysisInput, Inputs, Plan, comparison, reconcile
from cutover.serving.gateway.routing import route_from

from ..cases import load
from .sim import T0

EXAMPLES = ["modeldeployment-canary.yaml", "modeldeployment-bluegreen.yaml", "modeldeployment-shadow.yaml",
            "modeldeployment-abtest.yaml", "modeldeployment-gpu-mig.yaml"]  # fmt: skip
PROVIDERS = {
    "gateway": {"provider": "gateway"},
    "gatewayAPI": {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "edge"}]}},
    "replicas": {"provider": "replicas"},
}


def _doc(example: str, provider: str, baseline: bool | None) -> dict[str, Any] | None:
    doc = copy.deepcopy(load(example))
    doc["metadata"]["generation"] = 1
    doc["spec"]["traffic"] = copy.deepcopy(PROVIDERS[provider])
    if baseline is not None and "canary" in doc["spec"]["strategy"]:
        doc["spec"]["strategy"]["canary"]["baseline"] = baseline
        if baseline:
            for step in doc["spec"]["strategy"]["canary"]["steps"]:
                if step.get("setWeight", 0) > 50:
                    step["setWeight"] = 50
    try:
        ModelDeployment.model_validate(doc)
    except ValidationError:
        return None  # the API refuses this combination (checked against CEL in tests/cluster)
    return doc


def data_plane_shares(md: ModelDeployment, plan: Plan, ready: dict[str, int]) -> dict[str, float]:
    """Percent of live requests each revision's pods answer, as the data plane built from the
    plan's children routes them (empty when nothing can answer)."""
    children = builders.children(md, plan.workloads, list(plan.status.traffic))
    services = {c["metadata"]["name"]: c["spec"]["selector"] for c in children if c["kind"] == "Service"}
    pods = {
        c["metadata"]["labels"][builders.LABEL_REVISION]: c["spec"]["template"]["metadata"]["labels"]
        for c in children
        if c["kind"] == "Deployment"
    }

    def endpoints(selector: dict[str, str]) -> dict[str, int]:
        return {r: ready.get(r, 0) for r, labels in pods.items() if selector.items() <= labels.items()}

    provider = md.spec.traffic.provider
    raw: dict[str, float] = {}
    if provider == "gateway":
        body = {**md.wire(), "status": plan.status.wire()}
        route = route_from(body, lambda ns, svc: f"http://{svc}" if sum(endpoints(services[svc]).values()) else None)
        for backend in route.backends if route else ():
            raw[backend.revision] = raw.get(backend.revision, 0) + backend.weight
    elif provider == "gatewayAPI":
        route = next((c for c in children if c["kind"] == "HTTPRoute"), None)
        for ref in route["spec"]["rules"][0]["backendRefs"] if route else ():
            serving = endpoints(services[ref["name"]])
            if sum(serving.values()) and ref["weight"]:
                (revision,) = serving  # a per-revision Service
                raw[revision] = raw.get(revision, 0) + ref["weight"]
    else:
        raw = {r: float(n) for r, n in endpoints(services[md.metadata.name or ""]).items() if n}
    total = sum(raw.values())
    return {r: 100 * v / total for r, v in raw.items()} if total else {}


def _mirrors(md: ModelDeployment, plan: Plan) -> dict[str, int]:
    if md.spec.traffic.provider != "gatewayAPI":
        return {row.revision: row.mirror_percent for row in plan.status.traffic if row.mirror_percent}
    children = builders.children(md, plan.workloads, list(plan.status.traffic))
    route = next((c for c in children if c["kind"] == "HTTPRoute"), None)
    services = {c["metadata"]["name"]: c["spec"]["selector"] for c in children if c["kind"] == "Service"}
    out = {}
    for f in (route or {"spec": {"rules": [{}]}})["spec"]["rules"][0].get("filters", []):
        mirror = f["requestMirror"]
        out[services[mirror["backendRef"]["name"]][builders.LABEL_REVISION]] = mirror["percent"]
    return out


moves = st.lists(
    st.fixed_dictionaries({
        "verdict": st.sampled_from([None, "promote", "continue", "rollback", "inconclusive"]),
        "seconds": st.sampled_from([1, 30, 120, 400]),
        "version": st.sampled_from([None, None, "v2", "v3"]),
        "ready": st.sampled_from(["all", "all", "none", "half", "candidate-only", "stable-only"]),
        "replicas": st.sampled_from([None, 1, 2, 5]),
    }),
    min_size=1,
    max_size=20,
)  # fmt: skip


def _ready(workloads: Any, how: str, stable: str | None) -> dict[str, int]:
    out = {}
    for w in workloads:
        n = {"all": w.replicas, "none": 0, "half": w.replicas // 2}.get(how)
        if n is None:
            n = w.replicas if (w.revision == stable) == (how == "stable-only") else 0
        out[w.revision] = n
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    example=st.sampled_from(EXAMPLES),
    provider=st.sampled_from(sorted(PROVIDERS)),
    baseline=st.sampled_from([None, True]),
    script=moves,
)
def test_status_traffic_is_what_the_data_plane_does(
    example: str, provider: str, baseline: bool | None, script: list[dict[str, Any]]
) -> None:
    doc = _doc(example, provider, baseline)
    if doc is None:
        return
    status: dict[str, Any] | None = None
    ready: dict[str, int] = {}
    now = T0
    for move in script:
        if move["version"]:
            doc["spec"]["model"]["version"] = move["version"]
        if move["replicas"]:
            doc["spec"]["runtime"]["replicas"] = move["replicas"]
            doc["spec"]["runtime"].pop("autoscaling", None)
        md = ModelDeployment.model_validate({**doc, "status": status} if status else doc)
        now += timedelta(seconds=move["seconds"])
        judged = comparison(md.spec, md.status)
        verdict = move["verdict"]
        analysis = AnalysisInput(judged, verdict, "scripted", agreement=0.99) if verdict and judged else None
        plan = reconcile(Inputs(md, dict(ready), now, analysis))
        shares = data_plane_shares(md, plan, ready)
        table = {row.revision: row.weight for row in plan.status.traffic if row.weight}
        if shares:
            for revision in set(shares) | set(table):
                assert abs(shares.get(revision, 0) - table.get(revision, 0)) <= 1, (provider, table, shares, ready)
        assert _mirrors(md, plan) == {r.revision: r.mirror_percent for r in plan.status.traffic if r.mirror_percent}
        status = plan.status.wire()
        ready = _ready(plan.workloads, move["ready"], plan.status.stable_revision)
        ready = {r: n for r, n in ready.items() if not r.endswith(BASELINE_SUFFIX) or n}


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_blue_green_preview_and_kept_pods_take_no_live_traffic(provider: str) -> None:
    doc = _doc("modeldeployment-bluegreen.yaml", provider, None)
    assert doc is not None
    status: dict[str, Any] | None = None
    ready: dict[str, int] = {}
    now = T0
    shares_seen, roles_seen = [], set()
    for version, verdict, seconds in ((None, None, 1), (None, None, 1), ("v2", None, 1), ("v2", "continue", 1),
                                      ("v2", "promote", 1000), ("v2", "promote", 1), ("v2", None, 1)):  # fmt: skip
        if version:
            doc["spec"]["model"]["version"] = version
        md = ModelDeployment.model_validate({**doc, "status": status} if status else doc)
        now += timedelta(seconds=seconds)
        judged = comparison(md.spec, md.status)
        analysis = AnalysisInput(judged, verdict, "scripted") if verdict and judged else None  # type: ignore[arg-type]
        plan = reconcile(Inputs(md, dict(ready), now, analysis))
        shares = data_plane_shares(md, plan, ready)
        roles = {row.revision: row.role for row in plan.status.traffic}
        roles_seen |= set(roles.values())
        shares_seen.append({roles[r]: round(v) for r, v in shares.items()})
        status = plan.status.wire()
        ready = {w.revision: w.replicas for w in plan.workloads}
    # The preview and, after the switch, the old stable's kept pods never answer live traffic.
    assert all(set(seen) <= {"stable"} for seen in shares_seen), shares_seen
    assert {"preview", "previous"} <= roles_seen, roles_seen


def test_the_api_refuses_baseline_pods_on_provider_replicas() -> None:
    assert _doc("modeldeployment-canary.yaml", "replicas", True) is None
    assert _doc("modeldeployment-canary.yaml", "replicas", None) is not None
