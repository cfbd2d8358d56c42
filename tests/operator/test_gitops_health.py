"""What GitOps tools make of a ModelDeployment: Argo CD's health check (Lua 5.1, the language
of Argo CD's gopher-lua, from lupa) and kstatus, the library Flux's health checks run (built
from its Go module by hack/build-kstatus), both over the objects the operator writes
(:mod:`.gitops_cases`)."""

from __future__ import annotations

import asyncio
import copy
import logging
from pathlib import Path
from typing import Any, cast

import httpx
import lupa.lua51
import pytest
import yaml

from cutover.api.v1alpha1 import AlertRule
from cutover.operator import safety_handlers
from cutover.operator.alerts import handlers as alert_handlers
from cutover.operator.alerts import notify
from cutover.operator.alerts.evaluator import Problem
from cutover.operator.alerts.handlers import AlertContext
from cutover.operator.alerts.status import Delivered, decide
from cutover.operator.kube import Kube
from tests.support import kstatus as kstatus_support

from ..cases import AR, load
from .gitops_cases import CASES, HEALTH_CHECK, TESTDATA, render
from .test_alert_status import T0, evaluated
from .test_loop_memory import StatusServer, frozen
from .test_safety_policy import FakeKube, policy_body, run_pass, secret

HEALTH_LUA = (HEALTH_CHECK / "health.lua").read_text()
HEALTH_TESTS: list[dict[str, Any]] = yaml.safe_load((HEALTH_CHECK / "health_test.yaml").read_text())["tests"]
ARGOCD_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def argocd_health(obj: dict[str, Any], script: str = HEALTH_LUA) -> tuple[str, str]:
    """(status, message) of a health check run as Argo CD runs one from argocd-cm: the object
    as the global ``obj``, with the base, table and package libraries only (no string, math,
    io, os, debug or coroutine, and no string methods), and Unknown for a status Argo CD does
    not know (argo-cd util/lua/lua.go)."""
    lua = lupa.lua51.LuaRuntime(register_eval=False, register_builtins=False)
    lua.execute(
        "debug.getmetatable('').__index = nil "
        "string, math, io, os, debug, coroutine, python = nil, nil, nil, nil, nil, nil, nil"
    )
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    status, message = result["status"], result["message"] or ""
    if status not in ARGOCD_STATUSES:
        return "Unknown", "Lua returned an invalid health status"
    return str(status), str(message)


@pytest.mark.parametrize("name", sorted(CASES))
def test_testdata_is_what_the_operator_writes(name: str) -> None:
    """A change to what the operator writes shows here first: the health check's testdata
    must be rewritten (python -m tests.operator.gitops_cases) and its expectations reread."""
    written = render(CASES[name]())
    assert (TESTDATA / f"{name}.yaml").read_text() == written, (
        "rewrite: .venv/bin/python -m tests.operator.gitops_cases"
    )


def test_every_case_is_in_the_health_test_and_nothing_else_is() -> None:
    tested = sorted(Path(t["inputPath"]).stem for t in HEALTH_TESTS)
    assert tested == sorted(CASES)
    assert sorted(p.stem for p in TESTDATA.iterdir()) == sorted(CASES)


@pytest.mark.parametrize("case", HEALTH_TESTS, ids=lambda t: Path(t["inputPath"]).stem)
def test_argocd_health(case: dict[str, Any]) -> None:
    """Each case of health_test.yaml as Argo CD's own test runner checks it (argo-cd
    util/lua/health_test.go): status and message equal, an omitted message empty."""
    obj = yaml.safe_load((HEALTH_CHECK / case["inputPath"]).read_text())
    expected = case["healthStatus"]
    assert argocd_health(obj) == (expected["status"], expected.get("message", ""))


def test_the_runner_withholds_the_libraries_argocd_cm_withholds() -> None:
    """A check that called string.* or math.* would pass here and fail in Argo CD (scripts
    from argocd-cm run without them unless useOpenLibs is set): the runner must refuse it."""
    obj = yaml.safe_load((TESTDATA / "healthy.yaml").read_text())
    for call in ("string.lower('X')", "math.floor(1.5)", "('X'):lower()", "os.time()"):
        with pytest.raises(lupa.lua51.LuaError):
            argocd_health(obj, f"return {{status = 'Healthy', message = {call}}}")
    assert argocd_health(obj, "return {status = 'Fine'}") == ("Unknown", "Lua returned an invalid health status")


KSTATUS = {
    "created": "Current",  # no status yet: kstatus cannot tell (docs/gitops.md, healthCheckExprs)
    "pending": "InProgress",
    "healthy": "Current",
    "scaled-to-zero": "Current",  # Ready True ScaledToZero (its old Ready False read as InProgress)
    "not-observed": "InProgress",
    "canary": "InProgress",
    "paused": "InProgress",
    "awaiting-promotion": "InProgress",
    "safety-hold": "InProgress",
    "scaling-up": "InProgress",
    "rolled-back": "Failed",
    "rolled-back-by-older-operator": "Current",  # the fault: Ready True and nothing else to read
    "no-ready-pods": "Failed",
    "fallback": "Failed",
    "invalid-spec": "Failed",
    "deleting": "Terminating",
}
"""What kstatus makes of each case."""

ARGOCD_TO_KSTATUS = {"Healthy": "Current", "Progressing": "InProgress", "Suspended": "InProgress", "Degraded": "Failed"}
"""Where Argo CD and Flux must agree: Flux has no Suspended, and waits on a paused rollout."""


@pytest.fixture(scope="module")
def kstatus_command() -> str:
    """hack/kstatus, built or found in its cache."""
    return kstatus_support.command()


@pytest.fixture(scope="module")
def kstatus(kstatus_command: str) -> dict[str, dict[str, str]]:
    """kstatus' result for every testdata file, by case name."""
    return kstatus_support.read(kstatus_command, sorted(TESTDATA.glob("*.yaml")))


@pytest.mark.parametrize("name", sorted(KSTATUS))
def test_kstatus(kstatus: dict[str, dict[str, str]], name: str) -> None:
    """kstatus reads Reconciling (InProgress with its message), Stalled (Failed with its
    message) and observedGeneration, in that order of precedence after deletion."""
    result = kstatus[name]
    assert result["status"] == KSTATUS[name]
    obj = yaml.safe_load((TESTDATA / f"{name}.yaml").read_text())
    if result["status"] in ("InProgress", "Failed") and name != "not-observed":
        assert result["message"] == obj["status"]["message"]


KSTATUS_ALONE = {"created", "deleting", "rolled-back-by-older-operator"}
"""Cases where kstatus' own rules decide: no status reads as Current, deletion as Terminating,
and an older operator's status has nothing but Ready to read."""


@pytest.mark.parametrize(
    "case",
    [t for t in HEALTH_TESTS if Path(t["inputPath"]).stem not in KSTATUS_ALONE],
    ids=lambda t: Path(t["inputPath"]).stem,
)
def test_argocd_and_flux_agree(kstatus: dict[str, dict[str, str]], case: dict[str, Any]) -> None:
    """A rollback that Argo CD shows Degraded fails a Flux health check too, rather than
    passing it (as Ready True alone did) or timing it out."""
    name = Path(case["inputPath"]).stem
    assert kstatus[name]["status"] == ARGOCD_TO_KSTATUS[case["healthStatus"]["status"]]


def test_kstatus_fails_a_safety_policy_or_alert_rule_only_a_new_spec_can_fix(
    kstatus_command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same kind of fault as a ModelDeployment's InvalidSpec: Ready False alone reads as
    InProgress, so a Flux wait on a SafetyPolicy or AlertRule with a spec problem timed out
    instead of failing (a spec only the operator rejects, or a query Prometheus refuses). A
    webhook Secret that is not there yet may still come: InProgress."""
    for kind in ("info", "warn"):
        monkeypatch.setattr(safety_handlers.kopf, kind, lambda *args, **kwargs: None)
    policies = {
        "policy-valid": (policy_body(), [secret("crisis-escalation", url="https://pager.example/hook")]),
        "policy-invalid": (policy_body(toxicity={"threshold": 0.85, "action": "quarantine"}), []),
        "policy-no-secret": (policy_body(), []),
    }
    objects = {name: {**body, "status": run_pass(FakeKube(*held), body)} for name, (body, held) in policies.items()}
    rule = {**copy.deepcopy(load(AR)), "metadata": {"name": "r", "namespace": "payments", "generation": 1}}
    for name, problems in (
        ("rule-firing", []),
        ("rule-bad-query", [Problem("QueryInvalid", "Prometheus refused the query: parse error")]),
    ):
        status, _ = decide(
            AlertRule.model_validate(rule), None, evaluated([2.0, 2.0, 2.0]), problems, None, Delivered(), T0
        )
        objects[name] = {**rule, "status": status.wire()}
    invalid = {**copy.deepcopy(rule), "metadata": {**rule["metadata"], "resourceVersion": "1"}}
    invalid["spec"]["for"] = 0
    server = StatusServer(invalid)
    ctx = AlertContext(cast(Kube, server), cast(httpx.AsyncClient, None), cast(notify.Notifier, None))
    asyncio.run(alert_handlers.evaluate_once(ctx, ("payments", "r"), frozen(invalid), logging.getLogger("test")))
    objects["rule-invalid"] = server.body
    for name, obj in objects.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(obj))
    read = kstatus_support.read(kstatus_command, sorted(tmp_path.glob("*.yaml")))
    assert {name: r["status"] for name, r in read.items()} == {
        "policy-valid": "Current",
        "policy-invalid": "Failed",
        "policy-no-secret": "InProgress",
        "rule-firing": "Current",
        "rule-bad-query": "Failed",
        "rule-invalid": "Failed",
    }
    assert "toxicity.action" in read["policy-invalid"]["message"]
    assert read["rule-bad-query"]["message"] == "Prometheus refused the query: parse error"
