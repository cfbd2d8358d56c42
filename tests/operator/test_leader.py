"""Leader election's decisions without a cluster: when a candidate may take the Lease, what it
writes, and settings that cannot work. The processes themselves are tested on the real control
plane (tests/cluster/test_operator.py)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from cutover.operator import cli
from cutover.operator.leader import LeaseSettings, Observed, claimed, free_in, released

SETTINGS = LeaseSettings("cutover-operator", "cutover-system", lease_duration=10, renew_deadline=7, retry_period=2)
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def lease(holder: str | None, renew_time: str = "2026-12-01T09:59:59.000000Z", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "cutover-operator", "namespace": "cutover-system", "resourceVersion": "41"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10, "renewTime": renew_time, **spec},
    }


def test_a_lease_expires_by_the_candidates_own_clock_not_by_the_renew_time_written_there() -> None:
    """The holder's node clock may be an hour behind: its renewTime says nothing to a candidate."""
    seen = Observed(None, 0.0).after_read(lease("a", renew_time="2026-12-01T09:00:00.000000Z"), now=100.0)
    assert free_in(seen, "b", now=100.0) == 10.0
    assert free_in(seen.after_read(lease("a", renew_time="2026-12-01T09:00:00.000000Z"), now=105.0), "b", 105.0) == 5.0
    assert free_in(seen, "b", now=110.0) == 0.0
    renewed = seen.after_read(lease("a", renew_time="2026-12-01T09:00:02.000000Z"), now=108.0)
    assert free_in(renewed, "b", now=110.0) == 8.0  # a renewal restarts the wait


def test_a_released_missing_or_own_lease_is_free_at_once() -> None:
    for seen in (lease(None), lease(""), None, lease("b")):
        assert free_in(Observed(seen, 100.0), "b", now=100.0) == 0.0


def test_taking_a_lease_counts_a_transition_and_renewing_it_does_not() -> None:
    taken = claimed(lease("a", leaseTransitions=4, acquireTime="2026-12-01T08:00:00.000000Z"), "b", SETTINGS, NOW)
    assert taken["metadata"]["resourceVersion"] == "41"  # the write fails if anyone wrote since
    assert taken["spec"] == {
        "holderIdentity": "b",
        "leaseDurationSeconds": 10,
        "renewTime": "2026-12-01T10:00:00.000000Z",
        "acquireTime": "2026-12-01T10:00:00.000000Z",
        "leaseTransitions": 5,
    }
    kept = claimed(
        {**taken, "metadata": {**taken["metadata"], "resourceVersion": "42"}}, "b", SETTINGS, NOW.replace(second=2)
    )
    assert kept["spec"]["acquireTime"] == "2026-12-01T10:00:00.000000Z" and kept["spec"]["leaseTransitions"] == 5
    assert kept["spec"]["renewTime"] == "2026-12-01T10:00:02.000000Z"
    first = claimed(None, "b", SETTINGS, NOW)
    assert "resourceVersion" not in first["metadata"] and first["spec"]["leaseTransitions"] == 0


def test_a_released_lease_has_no_holder_and_a_one_second_duration() -> None:
    spec = released(lease("b", leaseTransitions=5), NOW)["spec"]
    assert spec["holderIdentity"] is None and spec["leaseDurationSeconds"] == 1 and spec["leaseTransitions"] == 5


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"),
    [(10, 10, 2), (10, 12, 2), (10, 7, 7), (10, 7, 0), (0, 0, 0)],
)
def test_settings_without_a_margin_are_refused(duration: int, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseSettings("l", "ns", lease_duration=duration, renew_deadline=deadline, retry_period=retry)


def test_the_cli_refuses_settings_without_a_margin_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["operator", "--leader-elect", "--leader-elect-lease-duration", "5", "--leader-elect-renew-deadline", "6"]
    assert cli.main(args) == 2
    assert "renew deadline < lease duration" in capsys.readouterr().err


STOPPED_SCRIPT = """
import asyncio, os, signal, sys, threading
import kopf
from cutover.operator import main
from cutover.operator.leader import LeaseSettings


class Unreachable:
    async def __aenter__(self): return self
    async def __aexit__(self, *_): return None
    async def get(self, *_): raise OSError("no API server here")


class Leading:
    def __init__(self, settings, client): pass
    def start(self): pass
    def wait_leading(self, stop=None):
        if sys.argv[1] == "leading":
            os.kill(os.getpid(), signal.SIGTERM)  # as the Lease is taken
    def stop(self): print("released", flush=True)


async def refused(**_):
    raise AssertionError("kopf started after SIGTERM")


async def starting(stop_flag, **_):
    os.kill(os.getpid(), signal.SIGTERM)  # before kopf sets its own handlers
    await asyncio.wait_for(stop_flag.wait(), 10)
    print("stopped", flush=True)


kopf.operator = starting if sys.argv[1] == "starting" else refused
if sys.argv[1] in ("leading", "starting"):
    main.Elector = Leading
else:  # a standby: the real Elector, which never reaches an API server
    main._client = Unreachable
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
settings = LeaseSettings("l", "ns", lease_duration=4, renew_deadline=3, retry_period=0.5)
main.run(namespaces=["t"], metrics_port=None, leader_election=settings)
print("exited", flush=True)
"""


@pytest.mark.parametrize("when", ["standby", "leading", "starting"])
def test_sigterm_before_kopf_sets_its_handlers_stops_the_process_cleanly(when: str) -> None:
    """SIGTERM while a standby waits for the Lease, between taking it and kopf's start, or as
    kopf starts (before it sets its own handlers): the process exits 0 (kopf not started, or
    stopped by its stop flag) and a leader gives the Lease up, where the signal's default action
    killed it holding the Lease."""
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_SCRIPT, when], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    expected = {"standby": [], "leading": ["released"], "starting": ["stopped", "released"]}[when]
    assert done.stdout.split() == [*expected, "exited"]
