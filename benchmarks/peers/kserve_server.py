"""KServe Python model server for the serving benchmark: a kserve.Model wrapping one onnxruntime session.

    .bench/kserve/bin/python benchmarks/peers/kserve_server.py --model-path model.onnx --http_port 8080 \
        --enable_grpc false [--quiet]

KServe's own flags (--http_port, --workers, --enable_grpc, --enable_latency_logging, ...) are read by
kserve.model_server from the same command line. `--quiet` silences uvicorn's access log, one line per
request, which cutover's server does not write. The session uses the same settings as cutover's ONNX
adapter and the in-process baseline: one intra-op and one inter-op thread, sequential, CPU provider.
"""

from __future__ import annotations

import argparse
import logging
import uuid

import kserve
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self._output_names = [output.name for output in self._session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        feed = {request_input.name: request_input.as_numpy() for request_input in payload.inputs}
        results = self._session.run(self._output_names, feed)
        outputs = []
        for name, result in zip(self._output_names, results, strict=True):
            output = InferOutput(name=name, shape=list(result.shape), datatype="FP32")
            output.set_data_from_numpy(result, binary_data=False)
            outputs.append(output)
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or str(uuid.uuid4()))


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--quiet", action="store_true", help="no access log line per request")
    args, _ = parser.parse_known_args()
    model = OnnxModel(args.model_name, args.model_path)
    server = kserve.ModelServer()
    if args.quiet:
        # After ModelServer() configured logging: requests below WARNING are dropped before formatting.
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
