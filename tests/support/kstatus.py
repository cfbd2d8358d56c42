"""kstatus, the library Flux's health checks run (sigs.k8s.io/cli-utils pkg/kstatus), as a
command: hack/kstatus, built from the Go module proxy and cached by hack/build-kstatus."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def command() -> str:
    """The path of the kstatus command, built when its cache has none."""
    built = subprocess.run([REPO / "hack" / "build-kstatus"], check=True, capture_output=True, text=True)
    return built.stdout.strip().splitlines()[-1]


def read(kstatus: str, files: Sequence[Path]) -> dict[str, dict[str, str]]:
    """kstatus' result ({"status", "message"}) for each of ``files`` (YAML or JSON, one object
    each), keyed by file name without its suffix."""
    out = subprocess.run([kstatus, *map(str, files)], check=True, capture_output=True, text=True).stdout
    results = [json.loads(line) for line in out.splitlines()]
    return {Path(r["path"]).stem: r for r in results}
