"""The chart's RBAC on the real API server (docs/access.md).

Least privilege: the real operator runs as the chart's ServiceAccount, bound to nothing but the
chart's roles, through one scenario that takes every path that talks to the API server (a
rollout and its rollback over the Gateway API, a GPU preflight, a SafetyPolicy whose webhook
Secret is copied and then dropped, an AlertRule rendered as a PrometheusRule and reading a
bearer token, a NetworkPolicy per model (networkPolicy.enabled), leader election, the legacy
finalizer). The API server's audit log (hack/audit-policy.yaml) says which (verb, group,
resource) it asked for, where, and whether it was refused; the grants are what the API server
answers to a SelfSubjectRulesReview as that account (`kubectl auth can-i --list`). A refused
request fails the test, and so does a grant no request used. The gateway is held to the same.

Personas: Kubernetes' view, edit and admin take in cutover's resources; the on-call role may
annotate a ModelDeployment with requests and, through the chart's ValidatingAdmissionPolicy,
nothing else.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cutover.api.v1alpha1 import REQUEST_ANNOTATIONS
from tests.support.kubectl import Kube
from tests.support.waiting import TimedOut, wait_until

from ..conftest import REPO
from .operator_support import Operator
from .test_control_plane import helm
from .test_gateway import GatewayProcess
from .test_operator import condition, deploy_v1, fast_canary, md, new_version
from .test_safety_policy import PAGER, policy_doc, webhook_secret

pytestmark = pytest.mark.cluster

RBAC_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}

Grant = tuple[str, str, str]
"""(verb, API group, resource[/subresource])."""


def render(release: str, namespace: str, *values: str) -> list[dict[str, Any]]:
    """The chart's objects for ``release`` in ``namespace``; ``values`` are ``--set`` arguments."""
    sets = [arg for value in values for arg in ("--set", value)]
    rendered = subprocess.run(
        [
            helm(),
            "template",
            release,
            str(REPO / "charts" / "cutover"),
            "-n",
            namespace,
            "--kube-version=1.36.3",
            *sets,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


@pytest.fixture
def install(kube: Kube) -> Iterator[Any]:
    """Applies the RBAC objects (``RBAC_KINDS``) of rendered ones; the cluster-scoped ones are
    deleted at teardown (the namespaced ones go with the test's namespace)."""
    releases: list[str] = []

    def apply(release: str, docs: list[dict[str, Any]]) -> None:
        releases.append(release)
        kube.apply(*(doc for doc in docs if doc["kind"] in RBAC_KINDS))

    yield apply
    for release in releases:
        kube.run(
            "delete",
            "clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding",
            "-l",
            f"app.kubernetes.io/instance={release}",
            "--ignore-not-found",
        )


def account(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def granted(kube: Kube, user: str, namespace: str) -> set[Grant]:
    """What ``user`` may do in ``namespace`` (its namespaced and cluster-wide grants), as the API
    server answers a SelfSubjectRulesReview asked as that user (what `kubectl auth can-i --list`
    prints), less what every ServiceAccount may do."""

    def review(who: str) -> set[Grant]:
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace},
        }
        done = kube.run("create", "--as", who, "--validate=false", "-o", "json", "-f", "-", input=json.dumps(body))
        rules = json.loads(done.stdout)["status"]["resourceRules"]
        return {
            (v, g, r) for rule in rules for v in rule["verbs"] for g in rule["apiGroups"] for r in rule["resources"]
        }

    return review(user) - review(account(namespace, "nobody"))


def audit_log(kube: Kube) -> Path:
    """The API server's audit log, which hack/cluster writes beside the kubeconfig; skips the test
    on a cluster that keeps none (one not started by the tests, or without the policy)."""
    log = Path(kube.kubeconfig).parent / "logs" / "audit.log"
    if not log.exists():
        pytest.skip("the API server keeps no audit log (start it with CUTOVER_AUDIT_POLICY=hack/audit-policy.yaml)")
    return log


def audited(kube: Kube, user: str) -> list[dict[str, Any]]:
    """The requests ``user`` made to resources, from the API server's audit log: each event's
    verb, group, resource[/subresource], namespace (None: cluster-wide), name and status code."""
    out = []
    for line in audit_log(kube).read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event["user"]["username"] != user or not ref.get("resource"):
            continue
        resource = "/".join(p for p in (ref["resource"], ref.get("subresource")) if p)
        out.append(
            {
                "grant": (event["verb"], ref.get("apiGroup", ""), resource),
                "namespace": ref.get("namespace"),
                "name": ref.get("name"),
                "code": event.get("responseStatus", {}).get("code"),
            }
        )
    return out


def refused(kube: Kube, user: str) -> list[tuple[Grant, str | None, str | None]]:
    """The requests of ``user`` the API server refused (403): (grant, namespace, name)."""
    return sorted({(r["grant"], r["namespace"], r["name"]) for r in audited(kube, user) if r["code"] == 403})


def needs(requests: list[dict[str, Any]]) -> set[Grant]:
    """The grants ``requests`` needed: each one's own, and ``create`` too for a server-side apply
    that created its object (the API server authorizes that as a create)."""
    out = {r["grant"] for r in requests}
    return out | {
        ("create", g, res) for r in requests if r["code"] == 201 for verb, g, res in [r["grant"]] if verb == "patch"
    }


def unused_and_missing(grants: set[Grant], needed: set[Grant]) -> tuple[set[Grant], set[Grant]]:
    """What ``grants`` give beyond ``needed``, and what they lack of it. ``get`` of a resource that
    was listed counts as neither: it reads nothing the list does not, and the operator reads one
    of its own objects again only after a 409 or a 404 on it, which no scenario provokes on cue."""
    listed = {("get", g, r) for verb, g, r in needed if verb == "list"}
    return grants - needed - listed, needed - grants


def service_account_kube(kube: Kube, namespace: str, name: str, path: Path) -> Kube:
    """kubectl (and a KUBECONFIG for the operator) as ServiceAccount ``name``: the cluster's server
    and CA with a token of that account."""
    token = kube.run("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cluster = config["clusters"][0]
    config["users"] = [{"name": name, "user": {"token": token}}]
    config["contexts"] = [{"name": name, "context": {"cluster": cluster["name"], "user": name}}]
    config["current-context"] = name
    path.write_text(yaml.safe_dump(config))
    return Kube(str(path))


def test_the_operator_is_granted_exactly_what_it_uses(kube: Kube, namespace: str, tmp_path: Path, install: Any) -> None:
    audit_log(kube)
    release = namespace  # ClusterRoles are named after the release: one per test
    docs = render(release, namespace, f"operator.watchNamespaces={{{namespace}}}", "networkPolicy.enabled=true")
    install(release, docs)
    sa = f"{release}-cutover-operator"
    user = account(namespace, sa)
    # The chart's settings that change what the operator asks for: a NetworkPolicy per model.
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == sa)
    chart_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    operator = Operator(
        service_account_kube(kube, namespace, sa, tmp_path / "kubeconfig"),
        namespace,
        tmp_path,
        lease=f"{release}-cutover-operator",
        args=[arg for arg in chart_args if arg.startswith("--serving-network-policy=")],
    ).start()
    try:
        # A Prometheus bearer token (read by the AlertRule's evaluation) and a crisis webhook
        # (copied by the SafetyPolicy).
        token = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prometheus"}}
        kube.apply(token | {"stringData": {"token": "t0k3n"}}, webhook_secret(PAGER), policy_doc(), namespace=namespace)
        doc = fast_canary(
            safetyPolicyRef={"name": "consumer-chat"},
            traffic={"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "edge"}]}},
        )
        doc["spec"]["analysis"]["prometheus"]["bearerTokenSecretRef"] = {"name": "prometheus", "key": "token"}
        doc["metadata"]["finalizers"] = ["cutover.dev/finalizer"]  # as earlier versions left it
        alert = {
            "apiVersion": "cutover.dev/v1alpha1",
            "kind": "AlertRule",
            "metadata": {"name": "errors"},
            "spec": {
                "target": {"name": "ranker"},
                "metric": {"builtin": "errorRate", "window": "1m"},
                "condition": {"operator": ">", "threshold": 0.05},
                "interval": "1s",
                "severity": "warning",
            },
        }
        gpu = fast_canary("big-model")
        gpu["spec"]["runtime"]["gpu"] = {"count": 8}
        kube.apply(alert, gpu, namespace=namespace)
        stable = deploy_v1(kube, namespace, doc)

        # A candidate rolled back: its Service, PodDisruptionBudget and Deployment deleted.
        operator.verdict("ranker", "continue")
        new_version(kube, namespace, doc, "v2")
        candidate = wait_until(lambda: md(kube, namespace, "ranker")["status"].get("candidateRevision"), what="v2")
        operator.verdict("ranker", "rollback")
        wait_until(
            lambda: kube.run("get", "deployment", f"ranker-{candidate}", "-n", namespace, check=False).returncode,
            what="the candidate's Deployment deleted",
        )
        assert md(kube, namespace, "ranker")["status"]["stableRevision"] == stable
        wait_until(lambda: condition(md(kube, namespace, "big-model"), "GPUCapacity"), what="the GPU preflight")
        # The policy without its webhook: the copied Secret deleted.
        plain = policy_doc()
        del plain["spec"]["crisis"]["escalationWebhook"]
        plain["spec"]["crisis"]["action"] = "block"
        kube.apply(plain, namespace=namespace)
        wait_until(
            lambda: kube.run("get", "secret", "cutover-safety-consumer-chat", "-n", namespace, check=False).returncode,
            what="the copied webhook Secret deleted",
        )

        exact = Comparison(kube, user, namespace)
        wait_until(exact.all_used, what="every grant used", detail=exact.describe)
    except TimedOut as err:  # a step the operator never took: say what it was refused
        raise TimedOut(f"{err}; refused: {refused(kube, user)}") from err
    finally:
        operator.stop()
    exact.check()
    assert not {g for g in exact.here | exact.elsewhere if g[2] == "secrets" and g[0] in ("list", "watch")}


def test_the_gateway_is_granted_exactly_what_it_uses(kube: Kube, namespace: str, tmp_path: Path, install: Any) -> None:
    audit_log(kube)
    release = namespace
    install(release, render(release, namespace, f"gateway.watchNamespaces={{{namespace}}}"))
    sa = f"{release}-cutover-gateway"
    backends = tmp_path / "backends.json"
    backends.write_text("{}")
    as_gateway = service_account_kube(kube, namespace, sa, tmp_path / "kubeconfig")
    gateway = GatewayProcess(as_gateway, namespace, tmp_path, backends).start()
    try:
        exact = Comparison(kube, account(namespace, sa), namespace)
        wait_until(exact.all_used, what="every grant used", detail=exact.describe)
    finally:
        gateway.stop()
    exact.check()
    assert not exact.elsewhere, "cluster-wide grants with gateway.watchNamespaces set"


class Comparison:
    """``user``'s grants in ``namespace`` and cluster-wide (asked in ``default``) against the
    requests it made: everything granted in the namespace is used there or granted cluster-wide,
    and everything granted cluster-wide is used cluster-wide."""

    def __init__(self, kube: Kube, user: str, namespace: str) -> None:
        self.kube, self.user, self.namespace = kube, user, namespace
        self.here = granted(kube, user, namespace)
        self.elsewhere = granted(kube, user, "default")

    def compared(self) -> dict[str, tuple[set[Grant], set[Grant]]]:
        """Per scope: (granted but unused, used but not granted)."""
        requests = audited(self.kube, self.user)
        cluster = needs([r for r in requests if r["namespace"] is None])
        in_namespace = needs([r for r in requests if r["namespace"] == self.namespace]) | self.elsewhere
        return {
            "cluster-wide": unused_and_missing(self.elsewhere, cluster),
            self.namespace: unused_and_missing(self.here, in_namespace),
        }

    def all_used(self) -> bool:
        return not any(unused for unused, _ in self.compared().values())

    def describe(self) -> str:
        return str(self.compared())

    def check(self) -> None:
        """Fails on a refused request, a grant not used, a request not granted, or a request in
        a namespace it does not serve."""
        assert not refused(self.kube, self.user), f"requests the chart's RBAC refused: {refused(self.kube, self.user)}"
        for scope, (unused, missing) in self.compared().items():
            assert not unused and not missing, (
                f"{scope}: granted but unused {sorted(unused)}, used but not granted {sorted(missing)}"
            )
        requests = audited(self.kube, self.user)
        assert not {r["namespace"] for r in requests} - {self.namespace, None}, "requests in other namespaces"


def test_personas_view_edit_and_an_on_call_that_can_only_make_requests(
    kube: Kube, namespace: str, install: Any
) -> None:
    release = namespace
    docs = render(release, namespace)
    policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    requests = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}["requests"]
    assert json.loads(requests) == list(REQUEST_ANNOTATIONS.values()), "the annotations the operator reads"
    install(release, docs)
    for persona, group in (("view", "viewers"), ("edit", "editors"), ("admin", "admins")):
        kube.run("create", "rolebinding", persona, f"--clusterrole={persona}", f"--group={group}", "-n", namespace)
    kube.run(
        "create", "rolebinding", "oncall", f"--clusterrole={release}-cutover-oncall", "--group=oncall", "-n", namespace
    )
    doc = fast_canary()
    doc["metadata"]["labels"] = {"team": "risk"}
    kube.apply(doc, namespace=namespace)

    def can(group: str, verb: str, resource: str, *flags: str, where: str = namespace) -> bool:
        who = ("--as=someone", f"--as-group={group}")
        done = kube.run("auth", "can-i", verb, resource, *flags, "-n", where, *who, check=False)
        return done.stdout.strip() == "yes"

    kinds = ("modeldeployments.cutover.dev", "safetypolicies.cutover.dev", "alertrules.cutover.dev")
    # Kubernetes' own view, edit and admin take in cutover's resources, by aggregation.
    for kind in kinds:
        assert all(can(g, verb, kind) for g in ("viewers", "editors", "admins") for verb in ("get", "list", "watch"))
        assert not any(can("viewers", verb, kind) for verb in ("create", "update", "patch", "delete"))
        assert all(
            can(g, verb, kind) for g in ("editors", "admins") for verb in ("create", "update", "patch", "delete")
        )
        assert not can("editors", "update", kind, "--subresource=status"), "status is the operator's"
    assert not can("editors", "list", "modeldeployments.cutover.dev", where="default"), "bound in one namespace"
    # On-call: reads and patches ModelDeployments, nothing else of cutover's.
    assert can("oncall", "patch", kinds[0]) and can("oncall", "watch", kinds[0])
    assert not any(can("oncall", verb, kinds[0]) for verb in ("create", "update", "delete"))
    assert not any(can("oncall", "patch", kind) for kind in kinds[1:])

    def as_oncall(command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return kube.run(command, "md/ranker", *args, "-n", namespace, "--as=pager", "--as-group=oncall", check=False)

    for key in REQUEST_ANNOTATIONS.values():
        assert as_oncall("annotate", "--overwrite", f"{key}=req-1").returncode == 0, key
    assert as_oncall("annotate", "cutover.dev/rollback-").returncode == 0
    refused = {
        "another cutover.dev annotation": as_oncall("annotate", "cutover.dev/scaled-by=keda"),
        "any other annotation": as_oncall("annotate", "note=x"),
        "a label": as_oncall("label", "team=ops", "--overwrite"),
        "the spec": as_oncall("patch", "--type=merge", "-p", '{"spec": {"runtime": {"replicas": 9}}}'),
        "a finalizer": as_oncall("patch", "--type=merge", "-p", '{"metadata": {"finalizers": ["x/y"]}}'),
    }
    for what, done in refused.items():
        assert done.returncode != 0 and "ValidatingAdmissionPolicy" in done.stderr, what
    body = md(kube, namespace, "ranker")
    assert body["spec"]["runtime"]["replicas"] == 2 and body["metadata"]["labels"] == {"team": "risk"}
    assert {k for k in body["metadata"].get("annotations", {}) if k.startswith("cutover.dev/")} == set(
        REQUEST_ANNOTATIONS.values()
    ) - {"cutover.dev/rollback"}
    # Editors are not held to it.
    kube.run("annotate", "md/ranker", "note=x", "-n", namespace, "--as=dev", "--as-group=editors")
    # Every other way in is refused too: by the policy where RBAC lets the patch through, by RBAC
    # where the verb or subresource is not on-call's; and view writes nothing.
    spec = {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": {"name": "ranker"}}
    spec["spec"] = {**body["spec"], "revisionHistoryLimit": 1}
    by_policy = {
        "removing another annotation": as_oncall("annotate", "note-"),
        "a JSON patch of the spec": as_oncall(
            "patch", "--type=json", "-p", '[{"op": "replace", "path": "/spec/runtime/replicas", "value": 9}]'
        ),
        "an owner": as_oncall(
            "patch",
            "--type=merge",
            "-p",
            '{"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u"}]}}',
        ),
        # Field ownership is how a server-side applier (Flux) drops a field removed from Git.
        "emptying metadata.managedFields": as_oncall(
            "patch", "--type=merge", "-p", '{"metadata": {"managedFields": [{}]}}'
        ),
        "a server-side apply of the spec": kube.run(
            *("apply", "--server-side", "--force-conflicts", "-f", "-", "-n", namespace, "--as=pager"),
            "--as-group=oncall",
            input=json.dumps(spec),
            check=False,
        ),
    }
    for what, done in by_policy.items():
        assert done.returncode != 0 and "ValidatingAdmissionPolicy" in done.stderr, what
    status = as_oncall("patch", "--subresource=status", "--type=merge", "-p", '{"status": {"phase": "Healthy"}}')
    viewer = kube.run(
        *("annotate", "--overwrite", "md/ranker", "cutover.dev/abort=v-1", "-n", namespace, "--as=v"),
        "--as-group=viewers",
        check=False,
    )
    replaced = kube.run(
        *("replace", "-f", "-", "-n", namespace, "--as=pager", "--as-group=oncall"),
        input=json.dumps(md(kube, namespace, "ranker")),
        check=False,
    )
    for what, done in {"status": status, "replace (update)": replaced, "view annotating": viewer}.items():
        assert done.returncode != 0 and "forbidden" in done.stderr, what
    after = md(kube, namespace, "ranker")
    assert after["spec"] == body["spec"] and after["metadata"]["annotations"]["note"] == "x"
    assert after.get("status", {}).get("phase") != "Healthy" and "ownerReferences" not in after["metadata"]
    owners = kube.json("get", "md/ranker", "-n", namespace, "--show-managed-fields")["metadata"]["managedFields"]
    assert "pytest" in {m["manager"] for m in owners}, "the applier still owns what it applied"
