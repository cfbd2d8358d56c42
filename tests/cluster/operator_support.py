"""Run the real `cutover operator` process against the test cluster, scoped to one namespace,
with verdicts scripted through files (`--verdicts-from`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..conftest import Kube


class Operator:
    def __init__(self, kube: Kube, namespace: str, workdir: Path) -> None:
        self.kube, self.namespace, self.workdir = kube, namespace, workdir
        self.verdicts = workdir / "verdicts"
        self.verdicts.mkdir(exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Operator:
        env = {**os.environ, "KUBECONFIG": self.kube.kubeconfig}
        log = (self.workdir / "operator.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cutover.operator.cli",
                "operator",
                "-n",
                self.namespace,
                "--metrics-port",
                "0",
                "--verdicts-from",
                str(self.verdicts),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crashed or evicted pod."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def verdict(self, name: str, verdict: str, **extra: Any) -> None:
        path = self.verdicts / f"{self.namespace}_{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"verdict": verdict, "reason": f"scripted {verdict}", **extra}))
        tmp.replace(path)

    def log(self) -> str:
        return (self.workdir / "operator.log").read_text(errors="replace")


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition", interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
