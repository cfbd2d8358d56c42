"""krew as a user runs it: `kubectl krew install` of cutover's manifest and archive into a
private KREW_ROOT, offline (``--archive`` instead of the manifest's uri). krew itself is built
from its Go module by hack/krew (cached)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hack import krew_package

REPO = Path(__file__).resolve().parent.parent.parent


def krew_bin() -> Path:
    """The folder holding krew, kubectl-krew and validate-krew-manifest (hack/krew builds it once)."""
    done = subprocess.run([REPO / "hack" / "krew"], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Installed:
    """cutover installed by krew under ``root``; ``env`` runs kubectl as that user does."""

    root: Path
    env: dict[str, str]

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``kubectl ARGS`` with this user's PATH (at most 60 s)."""
        return subprocess.run(["kubectl", *args], env=self.env, capture_output=True, text=True, timeout=60)


def install(tmp: Path, kubeconfig: str | None = None) -> Installed:
    """Build the archive and install it with ``kubectl krew install --manifest --archive`` under
    ``tmp``. The PATH it leaves holds krew's bin/, a folder with only kubectl and python3 (the
    interpreter this virtual environment was made from, which sees none of its packages), and
    /usr/bin:/bin: the plugin runs as on a machine where nothing of the project is installed.
    kubectl then reads ``kubeconfig`` (else the KUBECONFIG of this process, if any). Raises
    ``CalledProcessError`` when krew refuses it."""
    archive = tmp / krew_package.archive_name()
    archive.write_bytes(krew_package.archive())
    tools = tmp / "tools"
    tools.mkdir()
    (tools / "kubectl").symlink_to(shutil.which("kubectl") or "kubectl")
    (tools / "python3").symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    root = tmp / "krew"
    path = os.pathsep.join([str(root / "bin"), str(tools), str(krew_bin()), "/usr/bin", "/bin"])
    # KREW_NO_UPGRADE_CHECK: krew would otherwise ask GitHub, now and then, for its latest release.
    env = {"PATH": path, "HOME": str(tmp), "KREW_ROOT": str(root), "KREW_NO_UPGRADE_CHECK": "1", "LANG": "C.UTF-8"}
    if kubeconfig or "KUBECONFIG" in os.environ:
        env["KUBECONFIG"] = kubeconfig or os.environ["KUBECONFIG"]
    subprocess.run(
        ["kubectl", "krew", "install", f"--manifest={krew_package.MANIFEST}", f"--archive={archive}"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return Installed(root, env)
