"""Small real models built from code, for the tests, the benchmarks and the demo.

Nothing is downloaded: a fixed four-feature Gaussian stands in for the training data, and a linear
softmax classifier over it is written as ONNX (``onnx.helper``), TorchScript and a ``torch.export``
program with the same weights. Besides the "good" baseline there are variants that a rollout should
promote or roll back: "improved" (a safe v2), "shifted" (different answers), "uncertain" (near-uniform
probabilities), "slow" (same answers, extra real compute) and "faulty" (inference fails for any
batch with a row whose first feature is over ``FAULTY_THRESHOLD``, about 5% of rows).

Every variant is a function of ``seed``; the classifier is built in whitened feature space with
orthonormal class directions, so its statistics (confidence, class balance, agreement between
variants) are the same for every seed.

``python -m cutover.serving.sample_models OUT_DIR`` writes every variant plus ``statistics.json``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import warnings
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal, get_args

import numpy as np

FEATURES = 4
CLASSES = 3

Variant = Literal["good", "improved", "shifted", "uncertain", "slow", "faulty"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)

#: The training distribution: a correlated multivariate normal.
MEAN = np.array([0.0, 1.0, -2.0, 0.5])
STD = np.array([1.0, 0.5, 2.0, 1.5])
CORRELATION = np.array(
    [
        [1.0, 0.6, -0.3, 0.2],
        [0.6, 1.0, -0.1, 0.4],
        [-0.3, -0.1, 1.0, 0.1],
        [0.2, 0.4, 0.1, 1.0],
    ]
)
COVARIANCE = CORRELATION * np.outer(STD, STD)

#: The "faulty" variant fails for any batch with a row whose first feature is above this: the
#: first feature is N(0, 1), so about 5% of sample_inputs() rows (1 - Phi(1.65) = 4.9%).
FAULTY_THRESHOLD = 1.65
#: The ONNX node that fails; onnxruntime's error message names it.
FAULTY_NODE_NAME = "faulty_sample_model_rejects_first_feature_over_threshold"

#: Chained [512, 512] MatMuls in the "slow" variant by default: about 3 ms more per inference call on
#: one CPU core, whatever the batch size.
DEFAULT_SLOW_WORK = 200
_SLOW_WIDTH = 512

_ONNX_OPSET = 17
_ONNX_IR_VERSION = 8  # the IR version released with opset 17: onnx's newer default is refused by older runtimes
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


def sample_inputs(n: int, *, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    """``n`` rows [n, FEATURES] float32 from the training distribution.

    ``shift`` moves the mean by that many standard deviations: every feature moves up in
    proportion to its own standard deviation, scaled so that the shifted mean lies exactly
    ``shift`` Mahalanobis units from the training mean.
    """
    rng = np.random.default_rng(seed)
    cholesky = np.linalg.cholesky(COVARIANCE)
    length = float(np.sqrt(STD @ np.linalg.solve(COVARIANCE, STD)))
    mean = MEAN + shift * STD / length
    rows = rng.standard_normal((n, FEATURES)) @ cholesky.T + mean
    return rows.astype(np.float32)


def training_statistics() -> dict[str, Any]:
    """Mean and covariance of the training distribution, as the serving runtime's OOD check reads
    them, and each feature's deciles with a tenth of the rows in each bin, as its input drift
    series bin them (``cutover.serving.drift``)."""
    deciles = [NormalDist().inv_cdf(k / 10) for k in range(1, 10)]
    return {
        "mean": MEAN.tolist(),
        "covariance": COVARIANCE.tolist(),
        "histograms": {
            "edges": [[float(m + s * z) for z in deciles] for m, s in zip(MEAN, STD, strict=True)],
            "proportions": [[0.1] * 10 for _ in range(FEATURES)],
        },
    }


def write_training_statistics(path: str | Path) -> Path:
    """Write :func:`training_statistics` as JSON to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(training_statistics(), indent=2) + "\n")
    return path


def checksum(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


# --- weights --------------------------------------------------------------------------------------


def _orthonormalize(matrix: np.ndarray) -> np.ndarray:
    """The orthonormal columns closest in direction to ``matrix``'s (Gram-Schmidt, signs kept)."""
    q, r = np.linalg.qr(matrix)
    return q * np.sign(np.diag(r))


def _orthonormal(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    return _orthonormalize(rng.standard_normal((rows, columns)))


def _linear(directions: np.ndarray, scale: float, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of ``scale * whiten(x - center) @ directions``."""
    whitening = np.linalg.inv(np.linalg.cholesky(COVARIANCE))  # z = whitening @ (x - mean) is N(0, I)
    weight = scale * whitening.T @ directions
    return weight, -center @ weight


def _weights(variant: Variant, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Weight [FEATURES, CLASSES] and bias [CLASSES] of a variant, float32."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    directions = _orthonormal(np.random.default_rng(seed), FEATURES, CLASSES)
    if variant == "improved":
        # A small rotation of the class directions and a little more confidence: a safe v2.
        nudge = 0.006 * np.random.default_rng([seed, 1]).standard_normal(directions.shape)
        weight, bias = _linear(_orthonormalize(directions + nudge), 4.4, MEAN)
    elif variant == "shifted":
        # Trained on data whose mean sat elsewhere: a different bias, and less confident.
        center = MEAN + 2.5 * np.linalg.cholesky(COVARIANCE) @ directions[:, 0]
        weight, bias = _linear(directions, 1.5, center)
    elif variant == "uncertain":
        weight, bias = _linear(directions, 0.3, MEAN)
    else:
        weight, bias = _linear(directions, 4.0, MEAN)
    return weight.astype(np.float32), bias.astype(np.float32)


@functools.cache
def _slow_weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A projection [FEATURES, width] and an orthogonal [width, width] matrix: repeated products stay bounded."""
    rng = np.random.default_rng([seed, 2])
    projection = rng.standard_normal((FEATURES, _SLOW_WIDTH)) / np.sqrt(FEATURES)
    return projection.astype(np.float32), _orthonormal(rng, _SLOW_WIDTH, _SLOW_WIDTH).astype(np.float32)


# --- ONNX -----------------------------------------------------------------------------------------


def onnx_classifier(
    path: str | Path,
    variant: Variant = "good",
    *,
    seed: int = 0,
    slow_work: int = DEFAULT_SLOW_WORK,
    fail_above: float = FAULTY_THRESHOLD,
) -> Path:
    """Write the classifier as ONNX: ``input`` FP32 [batch, 4] -> ``probabilities`` FP32 [batch, 3].

    ``slow_work`` is the number of chained [512, 512] MatMuls the "slow" variant computes and discards on
    every call; the "faulty" variant fails on rows whose first feature is above ``fail_above``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight, bias = _weights(variant, seed)
    initializers = [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")]
    nodes = [
        helper.make_node("MatMul", [INPUT_NAME, "weight"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["logits"]),
    ]
    if variant == "slow":
        # Real work that depends on the input (so it cannot be constant-folded), multiplied by zero. It
        # starts from the batch's column sums, so every call costs the same whatever its batch size.
        projection, mixing = _slow_weights(seed)
        initializers += [
            numpy_helper.from_array(projection, "slow_projection"),
            numpy_helper.from_array(mixing, "slow_mixing"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "slow_batch_axis"),
            numpy_helper.from_array(np.array([0, 1], dtype=np.int64), "slow_axes"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "slow_zero"),
        ]
        nodes += [
            helper.make_node("ReduceSum", [INPUT_NAME, "slow_batch_axis"], ["slow_column_sums"], keepdims=1),
            helper.make_node("MatMul", ["slow_column_sums", "slow_projection"], ["slow_projected"]),
            helper.make_node("Tanh", ["slow_projected"], ["slow_0"]),
        ]
        nodes += [helper.make_node("MatMul", [f"slow_{i}", "slow_mixing"], [f"slow_{i + 1}"]) for i in range(slow_work)]
        nodes += [
            helper.make_node("ReduceSum", [f"slow_{slow_work}", "slow_axes"], ["slow_sum"], keepdims=1),
            helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]),
            helper.make_node("Add", ["logits", "slow_nothing"], ["slow_logits"]),
        ]
    elif variant == "faulty":
        # Reshape the logits to [batch, 3 + 1e6 * rows over the threshold]: impossible exactly when a row is
        # over it. Not the Gather-out-of-bounds trick: onnxruntime's CPU Gather raises, but its CUDA kernel
        # writes 0 for an out-of-range index (onnxruntime/core/providers/cuda/tensor/gather_impl.cu), while
        # Reshape checks its shape input on the host on every provider.
        initializers += [
            numpy_helper.from_array(np.array(0, dtype=np.int64), "fault_column"),
            numpy_helper.from_array(np.array(fail_above, dtype=np.float32), "fault_threshold"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "fault_batch_axis"),
            numpy_helper.from_array(np.array([0, 1_000_000], dtype=np.int64), "fault_stride"),
        ]
        nodes += [
            helper.make_node("Gather", [INPUT_NAME, "fault_column"], ["fault_first"], axis=1),
            helper.make_node("Greater", ["fault_first", "fault_threshold"], ["fault_over"]),
            helper.make_node("Cast", ["fault_over"], ["fault_flag"], to=TensorProto.INT64),
            helper.make_node("ReduceSum", ["fault_flag", "fault_batch_axis"], ["fault_count"], keepdims=1),
            helper.make_node("Mul", ["fault_count", "fault_stride"], ["fault_extra"]),
            helper.make_node("Shape", ["logits"], ["fault_shape"]),
            helper.make_node("Add", ["fault_shape", "fault_extra"], ["fault_target"]),
            helper.make_node("Reshape", ["logits", "fault_target"], ["fault_logits"], name=FAULTY_NODE_NAME),
        ]
    logits = nodes[-1].output[0]
    nodes.append(helper.make_node("Softmax", [logits], [OUTPUT_NAME], axis=-1))
    graph = helper.make_graph(
        nodes,
        f"classifier_{variant}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", CLASSES])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _ONNX_OPSET)],
        ir_version=_ONNX_IR_VERSION,
        producer_name="cutover.serving.sample_models",
        doc_string=f"sample classifier, variant {variant}, seed {seed}",
    )
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


# --- PyTorch --------------------------------------------------------------------------------------


def _torch_module(variant: Variant, seed: int, slow_work: int) -> Any:
    """The same classifier as an ``nn.Module``; torch is imported here because it is an optional extra."""
    import torch

    def constant(array: np.ndarray) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.from_numpy(array.astype(np.float32)), requires_grad=False)

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            weight, bias = _weights(variant, seed)
            # Placeholders keep the attributes TorchScript compiles against (torch.export.save rejects empty tensors).
            projection, mixing = (
                _slow_weights(seed) if variant == "slow" else (np.zeros((FEATURES, 1)), np.zeros((1, 1)))
            )
            self.weight, self.bias = constant(weight), constant(bias)
            self.slow_projection, self.slow_mixing = constant(projection), constant(mixing)
            self.slow_steps = slow_work if variant == "slow" else 0
            self.faulty = variant == "faulty"
            self.threshold = FAULTY_THRESHOLD
            self.fault_message = f"faulty sample model: a row's first feature is above {FAULTY_THRESHOLD}"

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            logits = input @ self.weight + self.bias
            if self.slow_steps > 0:
                hidden = torch.tanh(input.sum(dim=0, keepdim=True) @ self.slow_projection)
                for _ in range(self.slow_steps):
                    hidden = hidden @ self.slow_mixing
                logits = logits + 0.0 * hidden.sum(dim=(0, 1), keepdim=True)
            if self.faulty:
                if torch.jit.is_scripting():  # type: ignore[attr-defined]
                    # TorchScript ignores _assert_async on CPU, so raise explicitly.
                    if bool((input[:, 0] > self.threshold).any()):
                        raise RuntimeError(self.fault_message)
                else:
                    # torch.export cannot trace data-dependent control flow; this becomes a runtime assert. It runs
                    # on a CPU copy of the flag: on CUDA it would be a device-side assert, which breaks the process's
                    # CUDA context. copy_ rather than .cpu(), which export records with a check that its source is
                    # on the traced device (CPU), failing every call once the program is moved to a GPU.
                    fine = torch.empty((), dtype=torch.bool).copy_((input[:, 0] <= self.threshold).all())
                    torch._assert_async(fine, self.fault_message)
            return torch.softmax(logits, dim=-1)

    return Classifier().eval()


def torchscript_classifier(
    path: str | Path, variant: Variant = "good", *, seed: int = 0, slow_work: int = DEFAULT_SLOW_WORK
) -> Path:
    """Write the classifier as TorchScript (``torch.jit.script`` + save); same outputs as the ONNX model."""
    import torch

    with warnings.catch_warnings():
        # torch 2.10+ deprecates TorchScript, but serving runtimes still load it.
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(_torch_module(variant, seed, slow_work))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path))
    return path


def exported_program_classifier(
    path: str | Path, variant: Variant = "good", *, seed: int = 0, slow_work: int = DEFAULT_SLOW_WORK
) -> Path:
    """Write the classifier as a ``torch.export`` program (a ``.pt2`` file) with a dynamic batch dimension.

    Its input is named ``input`` (the forward() argument); its output is a single tensor.
    """
    import torch

    example = (torch.from_numpy(sample_inputs(4, seed=seed)).clamp(max=FAULTY_THRESHOLD),)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(
        _torch_module(variant, seed, slow_work), example, dynamic_shapes={"input": {0: batch}}
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path


# --- command --------------------------------------------------------------------------------------


def write_all(out_dir: str | Path, *, seed: int = 0, slow_work: int = DEFAULT_SLOW_WORK) -> list[Path]:
    """Every variant as ONNX, and as TorchScript and an exported program when torch is installed, plus statistics."""
    out_dir = Path(out_dir)
    options = {"seed": seed, "slow_work": slow_work}
    paths = [onnx_classifier(out_dir / f"{variant}.onnx", variant, **options) for variant in VARIANTS]
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: skipping the TorchScript and exported-program models", file=sys.stderr)
    else:
        paths += [torchscript_classifier(out_dir / f"{variant}.pt", variant, **options) for variant in VARIANTS]
        paths += [exported_program_classifier(out_dir / f"{variant}.pt2", variant, **options) for variant in VARIANTS]
    paths.append(write_training_statistics(out_dir / "statistics.json"))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cutover.serving.sample_models", description="Write the sample models and their statistics."
    )
    parser.add_argument("out_dir", type=Path, help="folder to write into (created if missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow-work", type=int, default=DEFAULT_SLOW_WORK, help="chained MatMuls in the slow variant")
    args = parser.parse_args(argv)
    for path in write_all(args.out_dir, seed=args.seed, slow_work=args.slow_work):
        print(f"{path}  {checksum(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
