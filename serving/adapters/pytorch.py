"""PyTorch: TorchScript modules (``torch.jit.save``) and exported programs (``torch.export.save``,
a ``.pt2`` file), on CUDA when a GPU is visible.

An exported program records its inputs' names (forward() arguments), types and shapes;
TorchScript keeps neither names nor types, so a TorchScript model's tensors come from
``model.inputs`` / ``model.outputs`` in the ModelDeployment, in forward() argument order.
Outputs are a tensor, or a tuple of tensors named in order.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cutover.api.v1alpha1.modeldeployment import TensorSpec

from .base import DATATYPES_BY_DTYPE_NAME, LocalAdapter, TensorInfo


def _datatype(dtype: Any, tensor: str) -> str:
    """The protocol datatype of ``torch.dtype`` ``dtype``; raises ValueError, naming ``tensor``,
    for one the protocol cannot carry (bfloat16, complex, quantized)."""
    name = str(dtype).removeprefix("torch.")
    if name not in DATATYPES_BY_DTYPE_NAME:
        raise ValueError(f"the exported program's {tensor} is {name}, which the protocol cannot carry")
    return DATATYPES_BY_DTYPE_NAME[name]


def _is_exported_program(path: Path) -> bool:
    if path.suffix == ".pt2":
        return True
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("serialized_exported_program.json") for name in archive.namelist())


class PyTorchAdapter(LocalAdapter):
    platform = "pytorch_torchscript"

    def __init__(self, path: Path, *, threads: int = 0, device: str = "auto") -> None:
        super().__init__()
        self.path = path
        self.threads = threads
        self.device_request = device
        self._declared_inputs: list[TensorInfo] = []
        self._declared_outputs: list[TensorInfo] = []
        self._module: Any = None
        self._device: Any = None

    def declare(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        self._declared_inputs = [TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in inputs]
        self._declared_outputs = [TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in outputs]

    def load_sync(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        use_cuda = self.device_request != "cpu" and torch.cuda.is_available()
        self._device = torch.device("cuda" if use_cuda else "cpu")
        if _is_exported_program(self.path):
            self.platform = "pytorch_exportedprogram"  # type: ignore[misc]
            program = torch.export.load(str(self.path))
            self.inputs = self._declared_inputs or self._exported_inputs(program)
            self.outputs = self._declared_outputs or self._exported_outputs(program)
            self._module = program.module().to(self._device)
        else:
            if not self._declared_inputs or not self._declared_outputs:
                raise ValueError("a TorchScript model keeps no tensor names or types: declare model.inputs and outputs")
            # torch.jit.load has no annotations in torch 2.x.
            self._module = torch.jit.load(str(self.path), map_location=self._device)  # type: ignore[no-untyped-call]
            self._module.eval()
            self.inputs, self.outputs = self._declared_inputs, self._declared_outputs

    @staticmethod
    def _exported_inputs(program: Any) -> list[TensorInfo]:
        placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        infos = []
        for name in program.graph_signature.user_inputs:
            value = placeholders[name].meta["val"]
            shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
            infos.append(TensorInfo(name, _datatype(value.dtype, f"input {name!r}"), shape))
        return infos

    @staticmethod
    def _exported_outputs(program: Any) -> list[TensorInfo]:
        output = next(n for n in program.graph.nodes if n.op == "output")
        values = [arg.meta["val"] for arg in output.args[0]]
        return [
            TensorInfo(
                f"output__{position}",
                _datatype(v.dtype, f"output output__{position}"),
                tuple(d if isinstance(d, int) else -1 for d in v.shape),
            )
            for position, v in enumerate(values)
        ]

    @property
    def device(self) -> Any:
        """The ``torch.device`` the model runs on."""
        return self._device

    def differentiable(self, output: int) -> Callable[..., Any]:
        """The model as a function of tensors (in ``inputs`` order) to its ``output``-th output,
        for gradient methods (``serving/explain.py``): called outside ``torch.inference_mode()``,
        which ``run`` uses and under which no gradient can be taken."""

        def forward(*tensors: Any) -> Any:
            result = self._module(*tensors)
            return (result if isinstance(result, tuple | list) else (result,))[output]

        return forward

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(inputs[t.name])).to(self._device) for t in self.inputs]
            result = self._module(*args)
        tensors = result if isinstance(result, tuple | list) else (result,)
        if len(tensors) != len(self.outputs):
            raise ValueError(f"the model returned {len(tensors)} tensors for {len(self.outputs)} declared outputs")
        return {info.name: tensor.detach().cpu().numpy() for info, tensor in zip(self.outputs, tensors, strict=True)}
