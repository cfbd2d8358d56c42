"""`cutover serve --grpc-port` as gRPC clients meet it: the real process, called with the real
``tritonclient.grpc`` (raw contents, its default) and with the generated stub (typed contents,
as KServe's clients send them); every datatype, BYTES included, health, metadata and config;
bad input is INVALID_ARGUMENT and counted as a 4xx, never against the revision."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from onnx import TensorProto, helper
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from cutover.api.contract import PROBE_TIMEOUT_SECONDS
from cutover.serving import sample_models
from cutover.serving.grpc_protocol import TYPED_CONTENTS
from cutover.serving.grpc_server import InferenceService, parsed_in_handlers
from cutover.serving.grpc_threads import POLL_IO_EXPERIMENTS, POLLER_NICE, use_poll_io
from cutover.serving.protocol import DATATYPES
from tests.support.ports import free_port
from tests.support.waiting import wait_until

from .support import CLASSIFIER_INPUTS, Serving, probe_while
from .test_server import expected, models

__all__ = ["models"]  # the fixture, used by name

ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
assert set(ONNX_TYPES) == set(DATATYPES), "every datatype the protocol carries is served here"


class GrpcServing(Serving):
    """A `cutover serve` with gRPC on its own port; ``target`` is its ``host:port``."""

    def __init__(self, workdir: Path, *args: str, name: str = "classifier", version: str = "1") -> None:
        self.grpc_port = free_port()
        self.target = f"127.0.0.1:{self.grpc_port}"
        super().__init__(workdir, "--grpc-port", str(self.grpc_port), *args, name=name, version=version)


def echo_model(path: Path, datatypes: list[str]) -> Path:
    """An ONNX model that answers each input as it came: one Identity per datatype, inputs
    ``in_<DATATYPE>`` and outputs ``out_<DATATYPE>`` of shape [-1, 2]."""
    nodes, inputs, outputs = [], [], []
    for datatype in datatypes:
        onnx_type = ONNX_TYPES[datatype]
        inputs.append(helper.make_tensor_value_info(f"in_{datatype}", onnx_type, ["n", 2]))
        outputs.append(helper.make_tensor_value_info(f"out_{datatype}", onnx_type, ["n", 2]))
        nodes.append(helper.make_node("Identity", [f"in_{datatype}"], [f"out_{datatype}"]))
    graph = helper.make_graph(nodes, "echo", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def samples() -> dict[str, np.ndarray]:
    """Two rows of each datatype, at the edges of its range where it has them."""
    arrays: dict[str, np.ndarray] = {}
    for datatype, dtype in DATATYPES.items():
        if datatype == "BYTES":
            array = np.array([["café".encode(), b""], ["日本".encode(), b"x" * 300]], dtype=object)
        elif datatype == "BOOL":
            array = np.array([[True, False], [False, True]])
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            array = np.array([[info.min, info.max], [0, 1]], dtype=dtype)
        else:
            array = np.array([[-1.5, 0.25], [np.finfo(dtype).max, 3.0]], dtype=dtype)
        arrays[datatype] = array
    return arrays


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServing]:
    workdir = tmp_path_factory.mktemp("serve-grpc")
    serving = GrpcServing(
        workdir, "--format", "onnx", "--model-uri", str(models / "good.onnx"), "--inputs", CLASSIFIER_INPUTS
    ).start()
    yield serving
    assert serving.stop() == 0


def serve_echo(tmp_path_factory: pytest.TempPathFactory, datatypes: list[str]) -> Iterator[GrpcServing]:
    workdir = tmp_path_factory.mktemp("serve-echo")
    model = echo_model(workdir / "echo.onnx", datatypes)
    serving = GrpcServing(workdir, "--format", "onnx", "--model-uri", str(model), name="echo").start()
    yield serving
    assert serving.stop() == 0


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServing]:
    """An echo model of every datatype."""
    yield from serve_echo(tmp_path_factory, list(DATATYPES))


@pytest.fixture(scope="module")
def typed_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServing]:
    """An echo model of every datatype that has typed contents (FP16 has none)."""
    yield from serve_echo(tmp_path_factory, list(TYPED_CONTENTS))


def stub(target: str) -> tuple[grpc.Channel, service_pb2_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(target)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_health_metadata_and_config_through_tritonclient(server: GrpcServing) -> None:
    client = grpcclient.InferenceServerClient(server.target)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("classifier")
    assert client.get_server_metadata().name == "cutover"
    metadata = client.get_model_metadata("classifier", "1")
    assert metadata.versions == ["1"] and metadata.platform == "onnx_onnxv1"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("input", "FP32", [-1, 4])]
    config = client.get_model_config("classifier").config
    assert config.name == "classifier" and config.input[0].data_type == pb.model__config__pb2.TYPE_FP32
    assert list(config.input[0].dims) == [-1, 4] and config.max_batch_size == 0
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as found:
        client.get_model_metadata("nope")
    assert found.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match="unknown version '7'"):
        client.is_model_ready("classifier", "7")
    client.close()


def test_tritonclient_infers_with_raw_contents_as_rest_does(server: GrpcServing, models: Path) -> None:
    x = sample_models.sample_inputs(3, seed=4)
    client = grpcclient.InferenceServerClient(server.target)
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("classifier", [tensor], request_id="grpc-1")
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected(models, x), rtol=1e-6)
    response = result.get_response()
    assert response.id == "grpc-1" and response.model_version == "1" and len(response.raw_output_contents) == 1
    status, answer = server.post(
        "/v2/models/classifier/infer",
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]},
    )
    assert status == 200
    np.testing.assert_allclose(result.as_numpy("probabilities").ravel(), answer["outputs"][0]["data"], rtol=1e-6)
    client.close()


def test_typed_contents_as_kserve_clients_send_them(server: GrpcServing, models: Path) -> None:
    x = sample_models.sample_inputs(2, seed=5)
    request = pb.ModelInferRequest(model_name="classifier", id="typed")
    request.inputs.add(name="input", datatype="FP32", shape=[2, 4]).contents.fp32_contents.extend(x.ravel().tolist())
    channel, service = stub(server.target)
    with channel:
        response, call = service.ModelInfer.with_call(request)
    assert dict(call.trailing_metadata())["cutover-revision"] == "rev-1"
    output = response.outputs[0]
    assert (output.name, output.datatype, list(output.shape)) == ("probabilities", "FP32", [2, 3])
    answered = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 3)
    np.testing.assert_allclose(answered, expected(models, x), rtol=1e-6)


def test_every_datatype_round_trips_raw_through_tritonclient(echo: GrpcServing) -> None:
    arrays = samples()
    client = grpcclient.InferenceServerClient(echo.target)
    tensors = []
    for datatype, array in arrays.items():
        tensor = grpcclient.InferInput(f"in_{datatype}", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer("echo", tensors)
    for datatype, array in arrays.items():
        answered = result.as_numpy(f"out_{datatype}")
        np.testing.assert_array_equal(answered, array, err_msg=datatype)
        assert answered.dtype == array.dtype or datatype == "BYTES", datatype
    client.close()


def test_every_typed_datatype_round_trips(typed_echo: GrpcServing) -> None:
    arrays = {datatype: array for datatype, array in samples().items() if datatype in TYPED_CONTENTS}
    request = pb.ModelInferRequest(model_name="echo")
    for datatype, array in arrays.items():
        tensor = request.inputs.add(name=f"in_{datatype}", datatype=datatype, shape=array.shape)
        getattr(tensor.contents, TYPED_CONTENTS[datatype]).extend(array.ravel().tolist())
    channel, service = stub(typed_echo.target)
    with channel:
        response = service.ModelInfer(request)
        assert len(response.outputs) == len(arrays)
        for position, output in enumerate(response.outputs):
            datatype = output.datatype
            raw = response.raw_output_contents[position]
            flat = deserialize_bytes_tensor(raw) if datatype == "BYTES" else np.frombuffer(raw, DATATYPES[datatype])
            np.testing.assert_array_equal(flat.reshape(list(output.shape)), arrays[datatype], err_msg=datatype)
        fp16 = pb.ModelInferRequest(model_name="echo")
        fp16.inputs.add(name="in_FP16", datatype="FP16", shape=[1, 2])
        with pytest.raises(grpc.RpcError) as refused:
            service.ModelInfer(fp16)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP16 has no typed contents" in refused.value.details()


def test_bytes_that_are_not_utf8_for_a_string_input_are_invalid_argument_not_a_model_failure(
    echo: GrpcServing,
) -> None:
    arrays = samples()
    arrays["BYTES"] = np.array([[b"ok", b"\xff\xfe"], [b"", b"x"]], dtype=object)
    tensors = []
    for datatype, array in arrays.items():
        tensor = grpcclient.InferInput(f"in_{datatype}", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    before = echo.metric("cutover_serving_requests_total", code="400")
    client = grpcclient.InferenceServerClient(echo.target)
    with pytest.raises(InferenceServerException, match="not UTF-8") as refused:
        client.infer("echo", tensors)
    client.close()
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert echo.metric("cutover_serving_requests_total", code="400") == before + 1
    assert echo.metric("cutover_serving_requests_total", code="500") == 0


def _request(**tensor: object) -> pb.ModelInferRequest:
    """A request for the classifier with one input: FP32 [1, 4] unless ``tensor`` says otherwise."""
    request = pb.ModelInferRequest(model_name="classifier")
    request.inputs.add(**{"name": "input", "datatype": "FP32", "shape": [1, 4], **tensor})
    return request


def bad_requests() -> list[tuple[pb.ModelInferRequest, str]]:
    """One request per way a gRPC client gets its input wrong, and what the error says."""
    zeros = np.zeros(4, dtype="<f4").tobytes()
    fp64 = pb.ModelInferRequest(model_name="classifier", raw_input_contents=[np.zeros(4).tobytes()])
    fp64.inputs.add(name="input", datatype="FP64", shape=[1, 4])
    mixed = _request(contents=pb.InferTensorContents(fp32_contents=[0, 0, 0, 0]))
    mixed.raw_input_contents.append(zeros)
    twice = _request(contents=pb.InferTensorContents(fp32_contents=[0] * 4))
    twice.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0] * 4)
    unknown_output = _request(contents=pb.InferTensorContents(fp32_contents=[0] * 4))
    unknown_output.outputs.add(name="nope")
    output_twice = _request(contents=pb.InferTensorContents(fp32_contents=[0] * 4))
    output_twice.outputs.add(name="probabilities")
    output_twice.outputs.add(name="probabilities").parameters["classification"].int64_param = 2
    return [
        (pb.ModelInferRequest(model_name="classifier"), "at least one input"),
        (fp64, "input 'input' is FP64; the model takes FP32"),
        (_request(contents=pb.InferTensorContents(fp32_contents=[0, 0, 0, 99])), "maximum"),
        (_request(contents=pb.InferTensorContents(fp32_contents=[0, 0, 0])), "needs 4 values, got 3"),
        (_request(contents=pb.InferTensorContents(int_contents=[0, 0, 0, 0])), "go in contents.fp32_contents"),
        (_request(), "needs 4 values, got 0"),
        (_request(datatype="BF16"), "datatype 'BF16' is not supported"),
        (mixed, "both contents and raw_input_contents"),
        (twice, "given twice"),
        (unknown_output, "unknown output 'nope'"),
        (output_twice, "output 'probabilities' is asked for twice"),
    ]


def test_bad_input_is_invalid_argument_and_counted_as_a_4xx(server: GrpcServing) -> None:
    before = server.metric("cutover_serving_requests_total", code="400")
    failures = sum(server.metric("cutover_serving_requests_total", code=str(c)) for c in (500, 502, 503))
    cases = bad_requests()
    channel, service = stub(server.target)
    with channel:
        for request, message in cases:
            with pytest.raises(grpc.RpcError) as refused:
                service.ModelInfer(request)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (message, refused.value.details())
            assert message in refused.value.details(), (message, refused.value.details())
        raw = _request()
        raw.raw_input_contents.append(np.zeros(4, dtype="<f4").tobytes()[:7])
        with pytest.raises(grpc.RpcError) as short:
            service.ModelInfer(raw)
    assert short.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 16 bytes, got 7" in short.value.details()
    assert server.metric("cutover_serving_requests_total", code="400") == before + len(cases) + 1
    assert sum(server.metric("cutover_serving_requests_total", code=str(c)) for c in (500, 502, 503)) == failures


def test_bytes_that_are_not_a_message_are_invalid_argument(server: GrpcServing) -> None:
    """A body that does not parse, or a string field that is not UTF-8: the client's mistake,
    not grpcio's UNKNOWN (read as a server failure)."""
    name_not_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (model_name), two bytes that are not UTF-8
    channel = grpc.insecure_channel(server.target)
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # sends bytes as they are
    with channel:
        for body in (name_not_utf8, b"\xff\xff\xff"):
            with pytest.raises(grpc.RpcError) as refused:
                infer(body)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
            assert "not a valid inference.ModelInferRequest" in refused.value.details()
    client = grpcclient.InferenceServerClient(server.target)
    with pytest.raises(InferenceServerException) as unserved:
        client.get_system_shared_memory_status()
    assert unserved.value.status() == "StatusCode.UNIMPLEMENTED"
    client.close()


def test_unknown_model_is_not_found(server: GrpcServing) -> None:
    request = _request(contents=pb.InferTensorContents(fp32_contents=[0] * 4))
    request.model_name = "nope"
    channel, service = stub(server.target)
    with channel, pytest.raises(grpc.RpcError) as refused:
        service.ModelInfer(request)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND and "unknown model 'nope'" in refused.value.details()


def test_a_model_not_ready_is_unavailable_with_retry_after(tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnx"
    serving = GrpcServing(tmp_path, "--format", "onnx", "--model-uri", str(missing)).start(ready=False)
    try:
        serving.load_error()
        client = grpcclient.InferenceServerClient(serving.target)
        assert client.is_server_live()
        assert not client.is_server_ready() and not client.is_model_ready("classifier")
        client.close()
        request = _request(contents=pb.InferTensorContents(fp32_contents=[0] * 4))
        channel, service = stub(serving.target)
        with channel, pytest.raises(grpc.RpcError) as refused:
            service.ModelInfer(request)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "is not ready" in refused.value.details()
        assert dict(refused.value.trailing_metadata())["retry-after"] == "1"
        assert serving.metric("cutover_serving_requests_total", code="503") == 1
    finally:
        serving.stop()


def test_a_failing_model_is_internal_and_counted_as_a_500(models: Path, tmp_path: Path) -> None:
    serving = GrpcServing(tmp_path, "--format", "onnx", "--model-uri", str(models / "faulty.onnx")).start()
    try:
        x = sample_models.sample_inputs(1, seed=0)
        x[0, 0] = sample_models.FAULTY_THRESHOLD + 1
        client = grpcclient.InferenceServerClient(serving.target)
        tensor = grpcclient.InferInput("input", [1, 4], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException, match="model failed") as failed:
            client.infer("classifier", [tensor])
        assert failed.value.status() == "StatusCode.INTERNAL"
        client.close()
        assert serving.metric("cutover_serving_requests_total", code="500") == 1
    finally:
        serving.stop()


def test_grpc_calls_are_batched_with_their_own_rows_and_audited(models: Path, tmp_path: Path) -> None:
    """Concurrent gRPC calls share the batcher as HTTP requests do, each answered with its own rows,
    and each is audited under its request id."""
    audit = tmp_path / "audit.jsonl"
    serving = GrpcServing(
        tmp_path,
        "--format",
        "onnx",
        "--model-uri",
        str(models / "good.onnx"),
        "--max-batch-size",
        "16",
        "--max-queue-delay",
        "5ms",
        "--audit-log",
        str(audit),
    ).start()
    try:
        inputs = [sample_models.sample_inputs(1 + i % 3, seed=200 + i) for i in range(40)]

        async def call_all() -> list[np.ndarray]:
            client = grpcaio.InferenceServerClient(serving.target)

            async def one(i: int, x: np.ndarray) -> np.ndarray:
                tensor = grpcaio.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                result = await client.infer("classifier", [tensor], request_id=f"grpc-{i}")
                answer: np.ndarray = result.as_numpy("probabilities")
                return answer

            try:
                return await asyncio.gather(*(one(i, x) for i, x in enumerate(inputs)))
            finally:
                await client.close()

        for x, answer in zip(inputs, asyncio.run(call_all()), strict=True):
            np.testing.assert_allclose(answer, expected(models, x), rtol=1e-5, atol=1e-6)
        assert serving.metric("cutover_serving_batch_size_sum") == sum(x.shape[0] for x in inputs)
        assert serving.metric("cutover_serving_batch_size_count") < len(inputs), "no two calls were batched together"

        def audited() -> set[str] | None:
            lines = audit.read_text().splitlines() if audit.exists() else []
            ids = {json.loads(line)["request_id"] for line in lines}
            return ids if len(ids) == len(inputs) else None

        assert wait_until(audited, 10, "every call audited") == {f"grpc-{i}" for i in range(len(inputs))}
    finally:
        serving.stop()


def test_liveness_answers_within_the_probe_timeout_while_three_50_mb_typed_requests_decode(
    server: GrpcServing, models: Path
) -> None:
    """Typed contents become numpy arrays value by value under the GIL; three 50 MB requests
    decoded on the event loop would stall /v2/health/live (HTTP, the same loop) past the
    kubelet's probe timeout, as JSON bodies once did over HTTP. They decode in a worker."""
    x = sample_models.sample_inputs(3_200_000, seed=5)
    request = pb.ModelInferRequest(model_name="classifier", id="large")
    request.inputs.add(name="input", datatype="FP32", shape=list(x.shape)).contents.fp32_contents.extend(x.ravel())
    assert request.ByteSize() > 50_000_000
    answers: list[np.ndarray] = []

    def send() -> None:
        options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        with grpc.insecure_channel(server.target, options=options) as channel:
            response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=120)
        answers.append(np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(-1, 3))

    answered = probe_while(server.url + "/v2/health/live", [threading.Thread(target=send) for _ in range(3)])
    assert len(answers) == 3
    np.testing.assert_allclose(answers[0][:100], expected(models, x[:100]), rtol=1e-6)
    assert len(answered) > 5 and max(answered) < PROBE_TIMEOUT_SECONDS, sorted(answered)[-5:]


def test_grpcs_poller_thread_yields_to_the_event_loop(server: GrpcServing) -> None:
    """One thread of the serving process, grpc.aio's completion-queue poller, runs at nice
    POLLER_NICE so that its wake-ups do not preempt the event loop (``grpc_threads``); the event
    loop's thread and the process's other threads keep theirs."""
    assert server.process is not None
    channel, client = stub(server.target)
    with channel:
        client.ServerLive(pb.ServerLiveRequest(), timeout=10)
    nices = {}
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        fields = task.joinpath("stat").read_text().rpartition(")")[2].split()
        nices[int(task.name)] = int(fields[16])  # stat's 19th field, after pid and (comm)
    loop = nices.pop(server.process.pid)  # 0, unless the tests themselves run niced
    if loop >= POLLER_NICE:
        pytest.skip(f"the tests run at nice {loop}: nothing to lower")
    assert sorted(nices.values()) == [*[loop] * (len(nices) - 1), POLLER_NICE], nices
    assert "Unknown experiment" not in server.log_path.read_text()  # every name in GRPC_EXPERIMENTS is grpcio's


def test_poll_io_is_asked_for_before_grpc_is_imported_unless_the_operator_chose() -> None:
    environ: dict[str, str] = {}
    assert use_poll_io(environ, imported=False)
    assert environ == {"GRPC_EXPERIMENTS": POLL_IO_EXPERIMENTS}
    chosen = {"GRPC_EXPERIMENTS": "event_engine_client"}
    assert not use_poll_io(chosen, imported=False)
    assert chosen == {"GRPC_EXPERIMENTS": "event_engine_client"}
    late: dict[str, str] = {}
    assert not use_poll_io(late, imported=True)  # grpc read its experiments already: it would not act
    assert late == {}


async def test_model_infer_is_handed_the_request_as_it_came_and_other_methods_are_not() -> None:
    """A large request goes to the decoding worker as the bytes that came: serializing it again on
    the event loop (and sizing it) took four times as long as parsing it, with probes waiting."""
    seen: dict[str, tuple[object, ...]] = {}

    class Recording(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        TAKES_SERIALIZED = InferenceService.TAKES_SERIALIZED

        async def ModelInfer(self, request: pb.ModelInferRequest, context: object, *rest: object) -> object:
            seen["ModelInfer"] = (request, *rest)
            return pb.ModelInferResponse(id=request.id)

        async def ServerLive(self, request: pb.ServerLiveRequest, context: object, *rest: object) -> object:
            seen["ServerLive"] = (request, *rest)
            return pb.ServerLiveResponse(live=True)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((parsed_in_handlers(Recording()),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    infer = pb.ModelInferRequest(model_name="classifier", id="as-sent", raw_input_contents=[b"\x00" * 16])
    infer.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ModelInfer(infer)).id == "as-sent"
            assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    finally:
        await server.stop(0)
    assert seen["ModelInfer"] == (infer, infer.SerializeToString())
    assert seen["ServerLive"] == (pb.ServerLiveRequest(),)
