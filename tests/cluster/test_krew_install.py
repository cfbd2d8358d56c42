"""`kubectl cutover` installed by krew (offline, from the archive hack/krew_package builds) on
the real control plane: kubectl finds it through krew's bin/, it runs on a python3 that sees
none of the project's packages, and `status` (text, -o json, -o yaml), `history -o json` and shell
completion of ModelDeployment names work against the API server (issue 19, item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.krew import install
from tests.support.kubectl import Kube

from .test_operator import fast_canary

pytestmark = pytest.mark.cluster

STATUS = {
    "phase": "Progressing",
    "message": "step 1: analysis",
    "stableRevision": "5d8f7c9b6a",
    "candidateRevision": "7b9c1d2e3f",
    "currentStepIndex": 1,
    "traffic": [
        {"revision": "5d8f7c9b6a", "role": "stable", "weight": 80},
        {"revision": "7b9c1d2e3f", "role": "candidate", "weight": 20},
    ],
    "history": [{"revision": "5d8f7c9b6a", "modelVersion": "v1", "promotedAt": "2026-11-30T09:00:00Z"}],
}


def test_kubectl_cutover_installed_by_krew_reads_the_cluster(kube: Kube, namespace: str, tmp_path: Path) -> None:
    for name in ("ranker", "ranker-eu", "fraud"):
        kube.apply(fast_canary(name), namespace=namespace)
    kube.run("patch", "md", "ranker", "-n", namespace, "--subresource=status", "--type=merge",
             "-p", json.dumps({"status": STATUS}))  # fmt: skip
    stored = kube.json("get", "md", "ranker", "-n", namespace)["status"]  # with the CRD's defaults
    user = install(tmp_path, kube.kubeconfig)

    text = user.kubectl("cutover", "status", "ranker", "-n", namespace)
    assert text.returncode == 0, text.stderr
    assert "Phase:      Progressing  step 1: analysis" in text.stdout
    assert "  candidate  7b9c1d2e3f    20%" in text.stdout and "  -> 1: analysis" in text.stdout

    as_json = json.loads(user.kubectl("cutover", "-n", namespace, "status", "ranker", "-o", "json").stdout)
    as_yaml = yaml.safe_load(user.kubectl("cutover", "-n", namespace, "status", "ranker", "-o", "yaml").stdout)
    assert as_yaml == as_json
    assert (as_json["name"], as_json["namespace"], as_json["candidateRevision"]) == ("ranker", namespace, "7b9c1d2e3f")
    assert [s["state"] for s in as_json["steps"]] == ["done", "current", "pending", "pending", "pending"]
    assert as_json["traffic"] == stored["traffic"] and [t["weight"] for t in as_json["traffic"]] == [80, 20]
    history = json.loads(user.kubectl("cutover", "history", "ranker", "-n", namespace, "-o", "json").stdout)
    assert history["revisions"] == stored["history"] and history["revisions"][0]["revision"] == "5d8f7c9b6a"
    assert history["requests"] == []

    missing = user.kubectl("cutover", "status", "nothing", "-n", namespace, "-o", "json")
    assert missing.returncode == 1 and "not found" in missing.stderr and missing.stdout == ""

    script = user.root / "bin" / "kubectl_complete-cutover"
    script.write_text(user.kubectl("cutover", "completion").stdout)
    script.chmod(0o755)
    names = user.kubectl("__complete", "cutover", "status", "-n", namespace, "ran")
    assert names.stdout.splitlines() == ["ranker", "ranker-eu", ":4"], names.stderr
    revisions = user.kubectl("__complete", "cutover", "rollback", "ranker", "-n", namespace, "--to", "")
    assert revisions.stdout.splitlines() == ["5d8f7c9b6a", ":4"], revisions.stderr
    spaces = user.kubectl("__complete", "cutover", "-n", namespace[:4])
    assert namespace in spaces.stdout.splitlines(), spaces.stdout
