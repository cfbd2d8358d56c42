"""kubectl bound to one kubeconfig: the client a platform engineer uses, for tests and the demo."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubectlFailed(AssertionError):
    """kubectl exited non-zero; the message has its arguments, exit status and stderr.

    An AssertionError, so that a test whose kubectl call fails is reported as failed."""


@dataclass(frozen=True)
class Kube:
    """kubectl against one cluster (``kubeconfig``), applying with one field manager."""

    kubeconfig: str
    pid_dir: Path | None = None
    """Where the local control plane's process ids are, when this run started it."""
    field_manager: str = "pytest"
    """The server-side apply field manager of ``apply``."""

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``kubectl --kubeconfig K ARGS`` with ``input`` on stdin; at most 120 s.

        Raises:
            KubectlFailed: when ``check`` and kubectl exits non-zero.
        """
        cmd = [shutil.which("kubectl") or "kubectl", "--kubeconfig", self.kubeconfig, *args]
        done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise KubectlFailed(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def json(self, *args: str) -> Any:
        """``kubectl ARGS -o json``, parsed."""
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(
        self, *docs: dict[str, Any], namespace: str | None = None, check: bool = True, dry_run: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Server-side apply of ``docs`` (wire-form dicts) as ``field_manager``; ``dry_run`` asks
        the API server to validate only."""
        args = ["apply", "--server-side", f"--field-manager={self.field_manager}", "-f", "-"]
        if namespace:
            args += ["--namespace", namespace]
        if dry_run:
            args.append("--dry-run=server")
        return self.run(*args, input=yaml.safe_dump_all(docs), check=check)
