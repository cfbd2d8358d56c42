"""MLServer custom runtime for the serving benchmark: one onnxruntime session, as MLServer's docs suggest.

Loaded by `mlserver start` through `implementation: mlserver_runtime.OnnxRuntime` in the generated
model-settings.json (benchmarks/serving.py puts this folder on PYTHONPATH). The session uses the same
settings as cutover's ONNX adapter and the in-process baseline: one intra-op and one inter-op thread,
sequential execution, CPU provider. Runs inside the MLServer virtual environment (.bench/mlserver).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        path = await get_model_uri(self.settings)
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._output_names = [output.name for output in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {
            request_input.name: self.decode(request_input, default_codec=NumpyCodec).astype(np.float32, copy=False)
            for request_input in payload.inputs
        }
        results = self._session.run(self._output_names, feed)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name, result) for name, result in zip(self._output_names, results, strict=True)
            ],
        )
