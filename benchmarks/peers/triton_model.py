"""Triton Python-backend model for the serving benchmark: one onnxruntime session, as Triton's Python backend
documents a model (a `TritonPythonModel` class in `model.py` with `initialize` and `execute`).

benchmarks/serving.py copies this file to `<repository>/classifier/1/model.py` and writes the model's
config.pbtxt, whose `onnx_model` parameter names the ONNX file. tritonserver's Python backend runs it in a
stub process in the Triton virtual environment (.bench/triton). The session uses the same settings as
cutover's ONNX adapter and the in-process baseline: one intra-op and one inter-op thread, sequential
execution, CPU provider. Each request is run on its own (the config has no dynamic batching).
"""

from __future__ import annotations

import json
from typing import Any

import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by the Python backend at run time


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        path = config["parameters"]["onnx_model"]["string_value"]
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}
            results = self.session.run(self.output_names, feed)
            tensors = [pb_utils.Tensor(name, result) for name, result in zip(self.output_names, results, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
