"""`kubectl cutover` installs with krew: the committed manifest (plugins/cutover.yaml) names the
archive that hack/krew_package builds from today's plugin, krew-index's validator accepts it,
and `kubectl krew install --manifest --archive` (offline) gives a plugin kubectl finds, that runs
on a python3 that sees none of the project's packages and completes through kubectl_complete-cutover.
Against a cluster: tests/cluster/test_krew_install.py."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

from cutover.operator import kubectl_plugin
from hack import krew_package
from tests.support.krew import install, krew_bin


def test_the_committed_manifest_matches_the_plugin() -> None:
    """The manifest's sha256 is the archive's: a changed plugin without `make krew` fails here."""
    data = krew_package.archive()
    assert krew_package.archive() == data, "the archive is not reproducible"
    committed = krew_package.MANIFEST.read_text()
    assert committed == krew_package.manifest_text(data), "plugins/cutover.yaml is stale: run `make krew`"
    (platform,) = yaml.safe_load(committed)["spec"]["platforms"]
    assert platform["sha256"] == hashlib.sha256(data).hexdigest()
    assert platform["uri"].endswith("/" + krew_package.archive_name())


def test_krew_index_validation_accepts_the_manifest() -> None:
    done = subprocess.run(
        [krew_bin() / "validate-krew-manifest", "-manifest", krew_package.MANIFEST, "-skip-install"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_krew_installs_a_plugin_that_runs_and_completes(tmp_path: Path) -> None:
    user = install(tmp_path)
    store = user.root / "store" / "cutover" / krew_package.version()
    assert sorted(p.name for p in store.iterdir()) == ["LICENSE", "kubectl-cutover", "kubectl_complete-cutover"]
    listed = user.kubectl("plugin", "list")
    assert str(user.root / "bin" / "kubectl-cutover") in listed.stdout, listed.stdout + listed.stderr
    helped = user.kubectl("cutover", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: kubectl cutover"), helped.stderr
    # The caveat's two commands, then kubectl's own completion of a plugin (kubectl >= 1.26).
    script = user.root / "bin" / "kubectl_complete-cutover"
    script.write_text(user.kubectl("cutover", "completion").stdout)
    script.chmod(0o755)
    assert script.read_bytes() == (store / "kubectl_complete-cutover").read_bytes()
    completed = user.kubectl("__complete", "cutover", "ro")
    assert completed.stdout.splitlines() == [f"rollback\t{kubectl_plugin.COMMANDS['rollback']}", ":4"]
    flags = user.kubectl("__complete", "cutover", "history", "--o")
    assert flags.stdout.splitlines() == ["--output", ":4"], flags.stderr
