"""benchmarks/serving.py measures two floors of cutover's gRPC server (benchmarks/grpc_floor.py: grpc.aio as
cutover serve runs it, answering without any work, and the same answering with the model) beside cutover serve
and MLServer: the floors must run grpc as cutover serve does and pass the same answer check as the servers, and
the report must tell a target point missed because of cutover's own work from one a floor misses too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks import serving as bench
from cutover.serving.grpc_threads import POLLER_NICE


@pytest.fixture
def floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[bench.Running, np.ndarray]]:
    """The floor started as the benchmark starts it (its answer file and log in ``tmp_path``, not the
    benchmark's own .bench/), answering ``expected``."""
    monkeypatch.setattr(bench, "BENCH", tmp_path)
    monkeypatch.delenv("GRPC_EXPERIMENTS", raising=False)  # grpc's defaults, as a pod's
    expected = np.array([[0.125, 0.5, 0.375]])
    servers = bench.grpc_servers(tmp_path / "unused.onnx", expected)
    running = bench.Running(next(server for server in servers if server.label == "grpc-floor"))
    try:
        running.wait_ready()
        yield running, expected
    finally:
        running.stop()


def test_the_floor_answers_the_fixed_input_as_the_servers_must(floor: tuple[bench.Running, np.ndarray]) -> None:
    running, expected = floor
    bench.verify_grpc(running, expected)  # raises SystemExit on a wrong answer
    with pytest.raises(SystemExit, match="over gRPC"):
        bench.verify_grpc(running, expected + 0.25)


def test_the_floor_runs_grpc_as_cutover_serve_does(floor: tuple[bench.Running, np.ndarray]) -> None:
    """Its poller thread at nice 10, and the poll-based I/O: asked for before grpc was imported, so
    grpc's EventEngine threads take no part in a call (with them, the floor halves)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    running, _ = floor
    with grpc.insecure_channel(f"127.0.0.1:{running.ports['grpc']}") as channel:
        infer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        for _ in range(2000):  # with EventEngine's I/O its threads took 4 ticks here
            infer(service_pb2.ModelInferRequest(model_name=bench.MODEL), timeout=10)
    nice = [int(Path(task, "stat").read_text().rsplit(")", 1)[1].split()[16]) for task in threads(running)]
    assert nice.count(POLLER_NICE) == 1, nice
    engine = [task for task in threads(running) if Path(task, "comm").read_text().strip() == "event_engine"]
    ticks = [sum(map(int, Path(task, "stat").read_text().rsplit(")", 1)[1].split()[11:13])) for task in engine]
    assert sum(ticks) == 0, ticks


def threads(running: bench.Running) -> list[Path]:
    """The floor's threads (``/proc/PID/task/TID``), after taskset has exec'd it."""
    tasks = Path(f"/proc/{running.process.pid}/task")
    return [task for task in tasks.iterdir() if (task / "stat").exists()]


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
    assert lines["1"].endswith("NOT met (out of reach for grpc.aio as cutover runs it: its floor is 1.80x)")
    assert lines["8"].endswith("NOT met")  # the floor is 4.5x: cutover's own work misses it
    assert lines["32"].endswith("met") and "NOT" not in lines["32"]
    assert lines["8"].split()[-5:-2] == ["9000", "4.50", "0.33"]  # floor req/s, floor x, cutover / floor


def test_the_model_floor_answers_with_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It runs the model on each call's inputs: the in-process answer, and another for other inputs."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    monkeypatch.setattr(bench, "BENCH", tmp_path)
    model = tmp_path / "classifier.onnx"
    bench.build_model(model)
    expected = bench.in_process(model, seconds=0.01).expected
    servers = bench.grpc_servers(model, expected)
    running = bench.Running(next(server for server in servers if server.label == "grpc-model-floor"))
    try:
        running.wait_ready()
        bench.verify_grpc(running, expected)
        request = service_pb2.ModelInferRequest(
            model_name=bench.MODEL, raw_input_contents=[np.float32([[0] * 4]).tobytes()]
        )
        request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
        with grpc.insecure_channel(f"127.0.0.1:{running.ports['grpc']}") as channel:
            other = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        assert np.frombuffer(other.raw_output_contents[0], "<f4").tolist() != expected.ravel().tolist()
    finally:
        running.stop()


def test_a_point_only_the_model_floor_misses_is_marked_out_of_reach_for_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = {
        "cutover-grpc": {1: run(1500, 500), 8: run(3000, 3000)},
        "mlserver-grpc": {1: run(1000, 900), 8: run(2000, 5000)},
        "grpc-floor": {1: run(3000, 300), 8: run(9000, 1500)},
        "grpc-model-floor": {1: run(1900, 400), 8: run(6000, 2000)},
    }
    bench.grpc_report(results, [1, 8])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()}
    assert lines["1"].endswith("NOT met (out of reach for the model run on that grpc.aio: its floor is 1.90x)")
    assert lines["8"].endswith("NOT met")  # the model floor is 3x: cutover's own work misses it
    assert lines["8"].split()[-5:-2] == ["6000", "3.00", "0.50"]  # model floor req/s, x, cutover / model floor


def test_without_the_floor_the_report_is_the_pair_alone(capsys: pytest.CaptureFixture[str]) -> None:
    results = {"cutover-grpc": {8: run(3000, 3000)}, "mlserver-grpc": {8: run(2000, 5000)}}
    bench.grpc_report(results, [8])
    out = capsys.readouterr().out
    assert "floor" not in out
    assert next(line for line in out.splitlines() if line.startswith("8 ")).endswith("NOT met")


def test_a_point_missed_on_p99_alone_is_not_blamed_on_the_floor(capsys: pytest.CaptureFixture[str]) -> None:
    results = {
        "cutover-grpc": {1: run(2100, 1200)},  # 2.1x MLServer, but a higher p99
        "mlserver-grpc": {1: run(1000, 900)},
        "grpc-floor": {1: run(1900, 400)},
    }
    bench.grpc_report(results, [1])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("1 "))
    assert line.endswith("NOT met")
