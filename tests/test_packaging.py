"""The distribution installs and imports the same way as a wheel and as an editable install."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import yaml

from cutover.operator import cli, kubectl_plugin

REPO = Path(__file__).resolve().parent.parent

# Run from the repository root, where operator/ sits in the current directory: the standard
# library's operator must still win (operator/ has no __init__.py for that reason).
PROBE = """
import operator, sys
assert operator.__file__.startswith(sys.base_prefix), operator.__file__
from cutover.api.v1alpha1 import ModelDeployment
from cutover.operator import cli, kubectl_plugin
import cutover.api
print(cutover.api.__file__)
"""


def test_wheel_installs_and_imports_in_a_clean_venv(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp_path / "dist", REPO],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("cutover-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "--quiet", wheel], check=True)
    out = subprocess.run([py, "-c", PROBE], cwd=REPO, check=True, capture_output=True, text=True)
    assert out.stdout.strip().startswith(str(env_dir)), "imported from the work tree, not the wheel"
    crds = subprocess.run([env_dir / "bin" / "cutover", "crds", "--stdout"], check=True, capture_output=True, text=True)
    kinds = [d["spec"]["names"]["kind"] for d in yaml.safe_load_all(crds.stdout)]
    assert kinds == ["ModelDeployment", "SafetyPolicy", "AlertRule"]
    assert (env_dir / "bin" / "kubectl-cutover").exists()
    # kubectl 1.26+ completes `kubectl cutover` by running it from PATH.
    complete = subprocess.run([env_dir / "bin" / "kubectl_complete-cutover", "hist"], capture_output=True, text=True)
    assert complete.stdout.splitlines() == ["history\tlist past stable revisions and handled requests", ":4"]
    # Away from the work tree, only the cutover names exist.
    for bare in ("operator.api", "serving", "api", "analysis"):
        probe = f"import importlib\ntry:\n importlib.import_module({bare!r})\nexcept ImportError:\n exit(0)\nexit(1)"
        assert subprocess.run([py, "-c", probe], cwd=tmp_path).returncode == 0, f"{bare} is importable"


def test_editable_install_keeps_the_standard_library_operator() -> None:
    subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, check=True)


def test_cli_writes_crds(tmp_path: Path) -> None:
    assert cli.main(["crds", "--output", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cutover.dev_alertrules.yaml",
        "cutover.dev_modeldeployments.yaml",
        "cutover.dev_safetypolicies.yaml",
    ]


def test_cli_lists_only_working_commands() -> None:
    help_text = cli.parser().format_help()
    assert "crds" in help_text


def test_plugin_request_ids_are_unique() -> None:
    ids = {kubectl_plugin.request_id("rollback") for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("rollback-") for i in ids)


def test_plugin_status_summary() -> None:
    body = {
        "metadata": {"name": "fraud-scorer"},
        "spec": {"model": {"name": "fraud-scorer", "version": "v2"}, "strategy": {"type": "canary"}},
        "status": {
            "phase": "Progressing",
            "stableRevision": "5f7c9d",
            "candidateRevision": "a1b2c3",
            "currentStepIndex": 2,
            "traffic": [
                {"revision": "5f7c9d", "role": "stable", "weight": 80},
                {"revision": "a1b2c3", "role": "candidate", "weight": 20},
            ],
            "lastAnalysis": {"verdict": "continue", "reason": "not enough samples", "metrics": []},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "3/3 pods"}],
        },
    }
    text = "\n".join(kubectl_plugin.status_lines(body))
    assert "candidate  a1b2c3        20%" in text
    assert "Analysis:   continue  not enough samples" in text
    assert "Ready              True    Serving: 3/3 pods" in text
