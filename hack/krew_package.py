"""The krew archive and manifest of `kubectl cutover`.

``python -m hack.krew_package`` writes ``build/krew/kubectl-cutover_vVERSION.tar.gz`` (the
archive a release uploads) and ``plugins/cutover.yaml`` (the manifest, at the path krew-index
keeps it, with the archive's sha256). The archive is reproducible: the same files give the same
bytes (sorted entries, no owners, a fixed time), so ``tests/test_krew_plugin.py`` builds it
again and fails when the committed manifest no longer matches the plugin.

The archive holds ``kubectl-cutover`` (``operator/kubectl_plugin.py``, which needs only
python3 and kubectl), ``kubectl_complete-cutover`` (its shell completion, what ``kubectl
cutover completion`` prints) and ``LICENSE`` (krew-index asks for the license inside).
Manifest fields follow krew's docs/developer-guide/plugin-manifest.md (v1alpha2).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import yaml

from cutover.operator import kubectl_plugin

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "plugins" / "cutover.yaml"
RELEASES = "https://github.com/cutover/cutover/releases/download"
"""Where a release's archive is uploaded (the project's images are ghcr.io/cutover/...)."""
MTIME = 1_767_225_600
"""Every entry's time (2026-01-01T00:00:00Z), so that the archive depends on its files only."""


def version() -> str:
    """The plugin's version, ``v`` and the package version (krew wants semver with a ``v``)."""
    with open(REPO / "pyproject.toml", "rb") as f:
        return "v" + str(tomllib.load(f)["project"]["version"])


def archive_name() -> str:
    """The archive's file name, as a release uploads it."""
    return f"kubectl-cutover_{version()}.tar.gz"


def archive() -> bytes:
    """The tar.gz krew installs, byte for byte the same for the same files."""
    files = {
        "LICENSE": ((REPO / "LICENSE").read_bytes(), 0o644),
        "kubectl-cutover": ((REPO / "operator" / "kubectl_plugin.py").read_bytes(), 0o755),
        "kubectl_complete-cutover": (kubectl_plugin.COMPLETION_SCRIPT.encode(), 0o755),
    }
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, MTIME
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(tar_bytes.getvalue())
    return out.getvalue()


def manifest(sha256: str) -> dict[str, Any]:
    """krew's Plugin manifest for an archive whose sha256 (lowercase hex) is ``sha256``."""
    return {
        "apiVersion": "krew.googlecontainertools.github.com/v1alpha2",
        "kind": "Plugin",
        "metadata": {"name": "cutover"},
        "spec": {
            "version": version(),
            "homepage": "https://github.com/cutover/cutover",
            "shortDescription": "Promote, pause, abort and roll back cutover model rollouts",
            "description": (
                "On-call control of cutover's ModelDeployments (ML model rollouts decided by\n"
                "sequential statistics): status, watch and history of a rollout (-o json|yaml for\n"
                "scripts), and promote, pause, resume, abort, retry and rollback (--to REVISION),\n"
                "each written as a request the operator answers once and records in status.\n"
            ),
            "caveats": (
                "Needs python3 (3.11 or later) on PATH; nothing else beyond kubectl.\n"
                "Shell completion (kubectl 1.26 or later), which krew does not install:\n"
                '  kubectl cutover completion > "${KREW_ROOT:-$HOME/.krew}/bin/kubectl_complete-cutover"\n'
                '  chmod +x "${KREW_ROOT:-$HOME/.krew}/bin/kubectl_complete-cutover"\n'
            ),
            "platforms": [
                {
                    # One archive for every architecture: the plugin is a Python script (not for
                    # Windows, which runs no "#!" line).
                    "selector": {"matchExpressions": [{"key": "os", "operator": "In", "values": ["darwin", "linux"]}]},
                    "uri": f"{RELEASES}/{version()}/{archive_name()}",
                    "sha256": sha256,
                    "bin": "kubectl-cutover",
                    "files": [
                        {"from": name, "to": "."} for name in ("kubectl-cutover", "kubectl_complete-cutover", "LICENSE")
                    ],
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Writes a string of several lines as a literal block, as a person would."""


_Dumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def manifest_text(data: bytes) -> str:
    """``plugins/cutover.yaml`` for the archive ``data``, as committed."""
    header = "# Generated by `python -m hack.krew_package` (make krew); edit that, not this file.\n"
    doc = manifest(hashlib.sha256(data).hexdigest())
    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    """Write the archive under ``--output`` (default build/krew) and the manifest."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    cli.add_argument("--output", type=Path, default=REPO / "build" / "krew", help="folder for the archive")
    args = cli.parse_args(argv)
    data = archive()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / archive_name()).write_bytes(data)
    MANIFEST.write_text(manifest_text(data))
    print(args.output / archive_name())
    print(MANIFEST)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
