"""`kubectl cutover` as one file krew can install: it imports nothing outside the standard
library, the names it shares with the operator match cutover.api, `status` and `history` print
one JSON or YAML document with `-o`, its YAML reads back as the same values, and it completes
commands, flags and names the way kubectl's plugin completion asks (issue 19, item 8)."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cutover.api import contract
from cutover.api.v1alpha1 import REQUEST_ANNOTATIONS
from cutover.operator import kubectl_plugin
from cutover.operator.kubectl_plugin import DEFAULT_COMPLETION, NO_FILE_COMPLETION, completions, yaml_text
from tests.test_kubectl_plugin_requests import Kubectl

PLUGIN = Path(kubectl_plugin.__file__)


def test_the_plugin_imports_only_the_standard_library() -> None:
    tree = ast.parse(PLUGIN.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    outside = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names | {"__future__"}}
    assert not outside, f"kubectl-cutover must run on python3 and kubectl alone; it imports {outside}"


def test_the_plugin_starts_with_no_site_packages(tmp_path: Path) -> None:
    """As krew installs it: the file alone, run by an interpreter that sees no installed package."""
    plugin = tmp_path / "kubectl-cutover"
    plugin.write_bytes(PLUGIN.read_bytes())
    assert PLUGIN.read_text().startswith("#!/usr/bin/env python3\n")
    for args in (["--help"], ["status", "--help"], ["completion"], ["__complete", "st"]):
        done = subprocess.run([sys.executable, "-I", "-S", plugin, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"status\t{kubectl_plugin.COMMANDS['status']}", f":{NO_FILE_COMPLETION}"]


@pytest.mark.parametrize(
    ("lower", "upper"),
    [(0.0, None), (None, 2.5), (None, None), (0.81, 1.9), (1.23456, math.inf), (-math.inf, 1e-7), (12345.6, 1e9)],
)
def test_the_names_it_shares_with_the_operator_match(lower: float | None, upper: float | None) -> None:
    assert kubectl_plugin.REQUEST_ANNOTATIONS == REQUEST_ANNOTATIONS
    assert kubectl_plugin.ANNOTATION_SCALED_BY == contract.ANNOTATION_SCALED_BY
    assert kubectl_plugin.interval_text(lower, upper) == contract.interval_text(lower, upper)
    assert kubectl_plugin.interval_text(lower, upper, 5) == contract.interval_text(lower, upper, 5)


BODY: dict[str, Any] = {
    "metadata": {"name": "fraud", "namespace": "payments"},
    "spec": {
        "model": {"name": "fraud-scorer", "version": "v2"},
        "strategy": {"type": "canary", "canary": {"steps": [{"setWeight": 20}, {"analysis": {}}, {"setWeight": 50}]}},
        "safetyPolicyRef": {"name": "strict"},
    },
    "status": {
        "phase": "Progressing",
        "message": "step 1: analysis",
        "stableRevision": "5d8f7c9b6a",
        "candidateRevision": "7b9c1d2e3f",
        "currentStepIndex": 1,
        "traffic": [
            {"revision": "5d8f7c9b6a", "role": "stable", "weight": 80},
            {"revision": "7b9c1d2e3f", "role": "candidate", "weight": 20},
        ],
        "lastAnalysis": {
            "verdict": "inconclusive",
            "metrics": [{"name": "error-rate", "decision": "inconclusive", "estimate": 1.2, "lower": 0.0}],
        },
        "conditions": [{"type": "SafetyPolicyReady", "status": "True", "reason": "Ready", "message": ""}],
        "history": [{"revision": "5d8f7c9b6a", "modelVersion": "v1", "promotedAt": "2026-11-30T09:00:00Z"}],
        "handledRequests": [
            {"action": "pause", "id": "pause-1", "by": "alice", "at": "2026-11-30T10:00:00Z", "result": "paused"}
        ],
    },
}


def run_plugin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``kubectl cutover ARGS`` against a kubectl that answers ``get`` with BODY; its stdout."""
    fake = Kubectl()
    fake.body = BODY
    monkeypatch.setattr(subprocess, "run", fake)
    assert kubectl_plugin.main(list(args)) == 0
    return capsys.readouterr().out


def test_status_and_history_print_one_document_with_dash_o(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = json.loads(run_plugin(monkeypatch, capsys, "status", "fraud", "-o", "json"))
    assert yaml.safe_load(run_plugin(monkeypatch, capsys, "status", "fraud", "-o", "yaml")) == status
    assert status == kubectl_plugin.status_document(BODY)
    assert status["name"] == "fraud" and status["namespace"] == "payments" and status["phase"] == "Progressing"
    assert [s["state"] for s in status["steps"]] == ["done", "current", "pending"]
    assert status["steps"][1] == {"index": 1, "state": "current", "step": {"analysis": {}}}
    assert status["safetyPolicy"] == {"name": "strict", "ready": "True", "reason": "Ready", "holding": False}
    assert status["traffic"] == BODY["status"]["traffic"] and status["fallback"] is None
    assert status["lastAnalysis"]["metrics"][0]["lower"] == 0.0 and "upper" not in status["lastAnalysis"]["metrics"][0]

    history = yaml.safe_load(run_plugin(monkeypatch, capsys, "history", "-n", "payments", "fraud", "-o", "yaml"))
    assert history == json.loads(run_plugin(monkeypatch, capsys, "history", "fraud", "--output=json"))
    assert history == {
        "name": "fraud",
        "namespace": "payments",
        "revisions": BODY["status"]["history"],
        "requests": BODY["status"]["handledRequests"],
    }
    # Without -o, the text for people, unchanged.
    assert "  -> 1: analysis" in run_plugin(monkeypatch, capsys, "status", "fraud")


def test_an_object_the_operator_has_not_touched_still_has_every_key() -> None:
    doc = kubectl_plugin.status_document({"metadata": {"name": "new"}, "spec": {}})
    assert doc["phase"] == "Pending" and doc["steps"] == [] and doc["traffic"] == [] and doc["conditions"] == []
    assert set(doc) == set(kubectl_plugin.status_document(BODY))
    assert kubectl_plugin.history_document({"metadata": {"name": "new"}})["revisions"] == []


def test_the_documented_shape_names_every_key() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "rollouts.md").read_text()
    keys = {*kubectl_plugin.status_document(BODY), *kubectl_plugin.history_document(BODY)}
    assert not {key for key in keys if f"`{key}`" not in docs}, "docs/rollouts.md leaves out a key of -o json"


def test_an_unknown_output_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        kubectl_plugin.main(["status", "fraud", "-o", "wide"])
    assert exit_.value.code == 2 and "invalid choice: 'wide'" in capsys.readouterr().err


def test_yaml_writes_plain_words_plainly() -> None:
    doc = {"phase": "Progressing", "weight": 20, "ratio": 0.5, "held": False, "at": "2026-11-30T10:00:00Z", "m": None}
    assert yaml_text(doc).splitlines() == [
        "phase: Progressing",
        "weight: 20",
        "ratio: 0.5",
        "held: false",
        'at: "2026-11-30T10:00:00Z"',
        "m: null",
    ]
    assert yaml_text({"steps": [{"setWeight": 20}, {"analysis": {}}], "empty": []}).splitlines() == [
        "steps:",
        "  - setWeight: 20",
        "  - analysis: {}",
        "empty: []",
    ]


# Strings a YAML 1.1 reader would take for something else if they were written plainly, and keys
# longer than an implicit key may be.
TRAPS = ["yes", "No", "ON", "off", "y", "n", "null", "Null", "~", "", "true", "1e3", "0x1F", "0o17", "012", "1_000",
         "12:30:00", "2026-11-30", ".inf", "-.inf", ".NaN", "- a", "a: b", "#x", "a #b", "[1]", "{a: 1}", "&a", "*a",
         "!tag", "|", ">", "'q'", '"q"', "%x", "@x", "`x", " lead", "trail ", "a\nb", "tab\there", "\x00\x7f\x85",
         "\u2028\u2029\ufeff", "é ∞ 😀", "=", "<<", "?", "-", "---", "...", "k" * 1100, "é\n" * 400]  # fmt: skip


@pytest.mark.parametrize("text", TRAPS)
def test_yaml_reads_back_every_string_as_that_string(text: str) -> None:
    assert yaml.safe_load(yaml_text({text: [text, {"k": text}]})) == {text: [text, {"k": text}]}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_yaml_round_trips_through_pyyaml(value: Any) -> None:
    assert yaml.safe_load(yaml_text(value)) == value


class Cluster:
    """Answers the kubectl commands completion runs, and records them."""

    def __init__(self, answers: dict[str, str | None]) -> None:
        self.answers, self.commands = answers, list[list[str]]()

    def __call__(self, command: list[str]) -> str | None:
        self.commands.append(command)
        return next((out for key, out in self.answers.items() if key in " ".join(command)), None)


CLUSTER = Cluster(
    {
        "get modeldeployments.cutover.dev -o name": "modeldeployment.cutover.dev/fraud\n"
        "modeldeployment.cutover.dev/fraud-eu\nmodeldeployment.cutover.dev/ranker\n",
        "get namespaces": "namespace/default\nnamespace/payments\nnamespace/prod\n",
        "get-contexts": "dev\nprod-eu\n",
        "get modeldeployments.cutover.dev fraud -o json": json.dumps(BODY),
    }
)


@pytest.mark.parametrize(
    ("words", "offered", "directive"),
    [
        (["ro"], ["rollback"], NO_FILE_COMPLETION),
        (["status", ""], ["fraud", "fraud-eu", "ranker"], NO_FILE_COMPLETION),
        (["-n", "payments", "promote", "fr"], ["fraud", "fraud-eu"], NO_FILE_COMPLETION),
        (["status", "fraud", ""], [], NO_FILE_COMPLETION),
        (["-n", "p"], ["payments", "prod"], NO_FILE_COMPLETION),
        (["status", "--namespace", ""], ["default", "payments", "prod"], NO_FILE_COMPLETION),
        (["--context", "pr"], ["prod-eu"], NO_FILE_COMPLETION),
        (["history", "fraud", "-o", ""], ["json", "yaml"], NO_FILE_COMPLETION),
        (["rollback", "fraud", "--to", ""], ["5d8f7c9b6a"], NO_FILE_COMPLETION),
        (["promote", "--f"], ["--full"], NO_FILE_COMPLETION),
        (["status", "--o"], ["--output"], NO_FILE_COMPLETION),
        (["--kubeconfig", ""], [], DEFAULT_COMPLETION),
        (["completion", ""], [], NO_FILE_COMPLETION),
        (["pause", "fraud", "--wait", ""], [], NO_FILE_COMPLETION),
    ],
)
def test_completion_offers_what_fits_the_word(words: list[str], offered: list[str], directive: int) -> None:
    candidates, said = completions(words, CLUSTER)
    assert [c.split("\t")[0] for c in candidates] == offered and said == directive


def test_completion_asks_the_cluster_the_words_name() -> None:
    """ModelDeployment names come from the namespace, context and kubeconfig on the line; the
    namespaces from that context and kubeconfig in any namespace."""
    cluster = Cluster(CLUSTER.answers)
    completions(["--context=prod-eu", "status", "-n", "payments", "--kubeconfig", "/k", ""], cluster)
    completions(["--context", "prod-eu", "-n", "payments", "status", "-n", ""], cluster)
    assert cluster.commands == [
        ["kubectl", "--kubeconfig", "/k", "--context", "prod-eu", "--namespace", "payments",
         "get", "modeldeployments.cutover.dev", "-o", "name"],
        ["kubectl", "--context", "prod-eu", "get", "namespaces", "-o", "name"],
    ]  # fmt: skip


def test_completion_offers_nothing_when_kubectl_fails() -> None:
    assert completions(["status", ""], lambda command: None) == ([], NO_FILE_COMPLETION)
    assert completions(["rollback", "fraud", "--to", ""], lambda command: None) == ([], NO_FILE_COMPLETION)


def smallest(schema: dict[str, Any]) -> Any:
    """The least a CRD's structural schema accepts: an object with its required properties only,
    an array of one such item, the first enum value, else a plain string, 1 or 0.5."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: smallest(properties[key]) for key in schema.get("required", [])}
    if kind == "array":
        return [smallest(schema["items"])]
    return {"integer": 1, "number": 0.5, "boolean": True}.get(kind, "x")


def test_the_text_reads_a_status_with_only_what_the_crd_requires() -> None:
    """An operator (an older one, or this one on a path it rarely takes) may leave out every field
    the CRD does not require, and the API server keeps such a status: `kubectl cutover status`
    failed with a KeyError on an autoscaling status without its target and a post-promotion
    watch without its state."""
    crd = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "crds" / "cutover.dev_modeldeployments.yaml").read_text()
    )
    properties = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    status = {key: smallest(schema) for key, schema in properties.items()}
    assert {"autoscaling", "postPromotion", "lastAnalysis", "traffic", "history"} <= status.keys()
    body = {**BODY, "status": status}
    text = "\n".join(kubectl_plugin.status_lines(body) + kubectl_plugin.history_lines(body))
    assert "Watch:      Watching" in text
    # A metric's value without the target beside it.
    status["autoscaling"] |= {"value": 0.5}
    assert "Scaling:    1 -> 1 pods, 0.5/pod" in "\n".join(kubectl_plugin.status_lines(body))
