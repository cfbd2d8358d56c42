"""Triton Python-backend model for the serving benchmark: one onnxruntime session, as Triton's Python backend
documents a model (a `TritonPythonModel` class in `model.py` with `initialize` and `execute`).

benchmarks/serving.py copies this file to `<repository>/classifier/1/model.py` and writes the model's
config.pbtxt, whose `onnx_model` parameter names the ONNX file. tritonserver's Python backend runs it in a
stub process in the Triton virtual environment (.bench/triton). The session uses the same settings as
cutover's ONNX adapter and the in-process baseline: one intra-op and one inter-op thread, sequential
execution, CPU provider. With Triton's dynamic batcher on (max_batch_size > 0 in the config), `execute`
gets the requests the batcher gathered and runs their rows as one batch, as a Python-backend model must
to gain from it; without it, each request alone.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
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
        feeds = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}
            for request in requests
        ]
        if len(feeds) == 1:
            batch = feeds[0]
        else:
            batch = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.input_names}
        results = self.session.run(self.output_names, batch)
        responses, start = [], 0
        for feed in feeds:
            end = start + len(feed[self.input_names[0]])
            tensors = [
                pb_utils.Tensor(name, result[start:end])
                for name, result in zip(self.output_names, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses
