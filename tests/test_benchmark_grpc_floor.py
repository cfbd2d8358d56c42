"""benchmarks/serving.py measures grpc.aio's floor (benchmarks/grpc_floor.py) beside cutover serve and MLServer:
the floor must pass the same answer check as the servers, and the report must tell a target point missed
because of cutover's own work from one no grpc.aio server could reach."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import serving as bench


def floor_server(expected: np.ndarray) -> bench.Server:
    servers = bench.grpc_servers(bench.BENCH / "model" / "unused.onnx", expected)
    return next(server for server in servers if server.label == "grpc-floor")


def test_the_floor_answers_the_fixed_input_as_the_servers_must() -> None:
    expected = np.array([[0.125, 0.5, 0.375]])
    running = bench.Running(floor_server(expected))
    try:
        running.wait_ready()
        bench.verify_grpc(running, expected)  # raises SystemExit on a wrong answer
        with pytest.raises(SystemExit, match="over gRPC"):
            bench.verify_grpc(running, expected + 0.25)
    finally:
        running.stop()


def run(throughput: float, p99_us: float) -> bench.Run:
    """A measured point of `throughput` req/s over one second, with its p99."""
    return bench.Run(
        requests=int(throughput),
        duration_us=1_000_000,
        connect=0,
        read=0,
        write=0,
        status=0,
        timeout=0,
        p50_us=p99_us / 2,
        p99_us=p99_us,
        mean_us=p99_us / 2,
        max_us=p99_us,
        server_cpu=100.0,
    )


def test_a_point_the_floor_misses_too_is_marked_out_of_reach(capsys: pytest.CaptureFixture[str]) -> None:
    results = {
        "cutover-grpc": {1: run(1500, 500), 8: run(3000, 3000), 32: run(4200, 9000)},
        "mlserver-grpc": {1: run(1000, 900), 8: run(2000, 5000), 32: run(2000, 20000)},
        "grpc-floor": {1: run(1800, 400), 8: run(9000, 1500), 32: run(9500, 5000)},
    }
    bench.grpc_report(results, [1, 8, 32])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()}
    assert lines["1"].endswith("NOT met (out of reach on grpc.aio: its floor is 1.80x)")
    assert lines["8"].endswith("NOT met")  # the floor is 4.5x: cutover's own work misses it
    assert lines["32"].endswith("met") and "NOT" not in lines["32"]
    assert lines["8"].split()[-5:-2] == ["9000", "4.50", "0.33"]  # floor req/s, floor x, cutover / floor


def test_without_the_floor_the_report_is_the_pair_alone(capsys: pytest.CaptureFixture[str]) -> None:
    results = {"cutover-grpc": {8: run(3000, 3000)}, "mlserver-grpc": {8: run(2000, 5000)}}
    bench.grpc_report(results, [8])
    out = capsys.readouterr().out
    assert "floor" not in out
    assert next(line for line in out.splitlines() if line.startswith("8 ")).endswith("NOT met")
