"""Run the real `cutover operator` process against the test cluster, scoped to one namespace,
with verdicts scripted through files (`--verdicts-from`) and its metrics on a loopback port, so
that a test can wait for reconcile passes instead of sleeping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.kubectl import Kube
from tests.support.ports import free_port
from tests.support.waiting import wait_until

LEASE_TIMING = (
    "--leader-elect-lease-duration=4",
    "--leader-elect-renew-deadline=3",
    "--leader-elect-retry-period=0.5",
)
"""Short leader election settings, so a takeover takes seconds: a standby takes a dead leader's
Lease 4 to 4.5 s after its last renewal."""


class Operator:
    """One operator process. With ``lease``, one of several replicas electing a leader on that
    Lease in the test's namespace (``LEASE_TIMING``); ``verdicts``: a folder shared with another
    replica (default: its own, under ``workdir``); ``args``: more `cutover operator` arguments."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        workdir: Path,
        *,
        lease: str | None = None,
        verdicts: Path | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.kube, self.namespace, self.workdir, self.lease, self.args = kube, namespace, workdir, lease, args
        workdir.mkdir(exist_ok=True)
        self.verdicts = verdicts or workdir / "verdicts"
        self.verdicts.mkdir(exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = 0

    def start(self) -> Operator:
        env = {**os.environ, "KUBECONFIG": self.kube.kubeconfig}
        log = (self.workdir / "operator.log").open("ab")
        self.metrics_port = free_port()
        election = [
            "--leader-elect",
            f"--leader-elect-resource-name={self.lease}",
            f"--leader-elect-resource-namespace={self.namespace}",
            *LEASE_TIMING,
        ]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cutover.operator.cli",
                "operator",
                "-n",
                self.namespace,
                "--metrics-port",
                str(self.metrics_port),
                "--verdicts-from",
                str(self.verdicts),
                *(election if self.lease else []),
                *self.args,
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

    def stop(self) -> int | None:
        """SIGTERM, as Kubernetes stops a pod; its exit status (None: it had to be killed)."""
        if self.process is None:
            return None
        self.process.terminate()
        try:
            status = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self.process = None
        return status

    def exited(self, timeout: float) -> int:
        """Its exit status, once it exits by itself within ``timeout`` seconds.

        Raises:
            subprocess.TimeoutExpired: it is still running.
        """
        assert self.process is not None
        status = self.process.wait(timeout=timeout)
        self.process = None
        return status

    def verdict(self, name: str, verdict: str, **extra: Any) -> None:
        path = self.verdicts / f"{self.namespace}_{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"verdict": verdict, "reason": f"scripted {verdict}", **extra}))
        tmp.replace(path)

    def log(self) -> str:
        return (self.workdir / "operator.log").read_text(errors="replace")

    def _metric(self, series: str) -> int | None:
        """The value of one series of this process's metrics (0 when it has none yet), or None
        while its metrics endpoint does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(f"{series} "):
                return int(float(line.rpartition(" ")[2]))
        return 0

    def passes(self) -> int | None:
        """Reconcile passes this process has finished (``cutover_operator_reconciles_total``), or
        None while its metrics endpoint does not answer yet."""
        return self._metric('cutover_operator_reconciles_total{kind="ModelDeployment"}')

    def leading(self) -> bool | None:
        """Whether this process holds the Lease (``cutover_operator_leader``), or None while its
        metrics endpoint does not answer yet."""
        value = self._metric(f'cutover_operator_leader{{lease="{self.lease or ""}"}}')
        return None if value is None else value == 1

    def wait_passes(self, count: int = 2, timeout: float = 60) -> None:
        """Until this process has finished ``count`` more reconcile passes than it had now.

        What a test waits for before asserting that the operator did NOT do something: with
        ``count`` 2, at least one whole pass began after everything the test saw. The process
        must be up (its metrics answering) when this is called.

        Raises:
            TimedOut: fewer passes within ``timeout`` seconds.
        """
        before = self.passes()
        assert before is not None, "the operator's metrics endpoint does not answer"
        wait_until(lambda: (self.passes() or 0) >= before + count, timeout, f"{count} more reconcile passes")


def leader_and_standby(replicas: list[Operator]) -> tuple[Operator, Operator]:
    """The two replicas as (leader, standby), once one leads and the other answers as a standby.

    Raises:
        TimedOut: not so within 30 s.
    """
    pairs = [(replicas[0], replicas[1]), (replicas[1], replicas[0])]
    return wait_until(
        lambda: [(a, b) for a, b in pairs if a.leading() and b.leading() is False], 30, "one leader and one standby"
    )[0]
