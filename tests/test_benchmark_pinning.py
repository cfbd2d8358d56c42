"""benchmarks/serving.py (and gateway.py, which starts its processes through it) gives wrk and the servers a
CPU each. The decision to pin was once made inside on_cpu(WRK_CPU), where the script's own affinity is CPU 0
alone, so nothing was pinned and every published serving figure had wrk and the server share one core."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks import serving as bench

pytestmark = pytest.mark.skipif(not bench.pinning(), reason="needs CPUs 0 and 1")


def started(running: bench.Running, program: str) -> list[int]:
    """The server's process ids once taskset has exec'd `program` (its affinity is set by then)."""
    comm = Path(f"/proc/{running.process.pid}/comm")
    deadline = time.monotonic() + 10
    while comm.read_text().strip() != program:
        assert time.monotonic() < deadline, f"{program} never started"
        time.sleep(0.01)
    return [pid for pid, _fields in bench.group_stats(running.process.pid)]


def test_a_server_started_while_the_script_runs_on_the_wrk_cpu_is_pinned_to_the_server_cpu() -> None:
    server = bench.Server("sleep", "a process that only waits", lambda ports: ["sleep", "60"])
    with bench.on_cpu(bench.WRK_CPU):
        running = bench.Running(server)
        try:
            line = bench.check_cpu("sleep", started(running, "sleep"), bench.SERVER_CPU)
        finally:
            running.stop()
    assert line == f"sleep Cpus_allowed_list: {running.process.pid} (sleep) {bench.SERVER_CPU}"


def test_a_process_off_its_cpu_aborts_the_run() -> None:
    server = bench.Server("sleep", "a process that only waits", lambda ports: ["sleep", "60"])
    running = bench.Running(server)
    try:
        with pytest.raises(SystemExit, match="may run on CPUs"):
            bench.check_cpu("sleep", started(running, "sleep"), bench.WRK_CPU)
    finally:
        running.stop()
