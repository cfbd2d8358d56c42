"""The sample models behave as their names promise: the good baseline is confident, improved agrees
with it, shifted and uncertain do not, slow answers the same, faulty fails exactly on rows over the
threshold, and the ONNX, TorchScript and exported-program forms give the same probabilities."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cutover.serving import sample_models
from cutover.serving.sample_models import FAULTY_NODE_NAME, FAULTY_THRESHOLD, VARIANTS, Variant

SMALL_SLOW_WORK = 3  # keeps the unrolled torch.export of the slow variant quick


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the faulty model's failures are expected; keep them off stderr
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ort.InferenceSession]:
    folder = tmp_path_factory.mktemp("onnx")
    return {
        variant: session(sample_models.onnx_classifier(folder / f"{variant}.onnx", variant)) for variant in VARIANTS
    }


def predict(models: dict[str, ort.InferenceSession], variant: str, x: np.ndarray) -> np.ndarray:
    result: np.ndarray = models[variant].run(None, {"input": x})[0]
    return result


def below_threshold(x: np.ndarray) -> np.ndarray:
    return x[x[:, 0] <= FAULTY_THRESHOLD]


def mahalanobis(x: np.ndarray) -> np.ndarray:
    statistics = sample_models.training_statistics()
    centered = x - np.array(statistics["mean"])
    return np.sqrt(np.einsum("ij,ij->i", centered, np.linalg.solve(np.array(statistics["covariance"]), centered.T).T))


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_onnx_variant_declares_a_dynamic_batch_of_four_features_in_and_three_probabilities_out(
    onnx_models: dict[str, ort.InferenceSession], tmp_path: Path, variant: Variant
) -> None:
    (model_input,) = onnx_models[variant].get_inputs()
    (model_output,) = onnx_models[variant].get_outputs()
    assert (model_input.name, model_input.type, model_input.shape) == ("input", "tensor(float)", ["batch", 4])
    assert (model_output.name, model_output.type, model_output.shape) == (
        "probabilities",
        "tensor(float)",
        ["batch", 3],
    )
    model = onnx.load(str(sample_models.onnx_classifier(tmp_path / "model.onnx", variant, slow_work=2)))
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    for batch in (1, 7):
        probabilities = predict(
            onnx_models, variant, below_threshold(sample_models.sample_inputs(50, seed=batch))[:batch]
        )
        assert probabilities.shape == (batch, 3) and probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_good_is_confident_and_uses_every_class(onnx_models: dict[str, ort.InferenceSession]) -> None:
    probabilities = predict(onnx_models, "good", sample_models.sample_inputs(10_000))
    assert np.median(probabilities.max(axis=1)) > 0.8
    assert np.bincount(probabilities.argmax(axis=1), minlength=3).min() > 2_000


def test_improved_agrees_with_good(onnx_models: dict[str, ort.InferenceSession]) -> None:
    x = sample_models.sample_inputs(10_000)
    good, improved = predict(onnx_models, "good", x), predict(onnx_models, "improved", x)
    assert not np.allclose(good, improved)
    assert (good.argmax(axis=1) == improved.argmax(axis=1)).mean() >= 0.98


def test_shifted_disagrees_with_good_and_is_less_confident(onnx_models: dict[str, ort.InferenceSession]) -> None:
    x = sample_models.sample_inputs(10_000)
    good, shifted = predict(onnx_models, "good", x), predict(onnx_models, "shifted", x)
    assert (good.argmax(axis=1) == shifted.argmax(axis=1)).mean() < 0.7
    assert np.median(shifted.max(axis=1)) < np.median(good.max(axis=1)) - 0.05


def test_uncertain_is_near_uniform(onnx_models: dict[str, ort.InferenceSession]) -> None:
    top = predict(onnx_models, "uncertain", sample_models.sample_inputs(10_000)).max(axis=1)
    assert (top < 0.5).mean() > 0.8


def test_slow_answers_exactly_like_good(onnx_models: dict[str, ort.InferenceSession]) -> None:
    for batch in (1, 64):
        x = sample_models.sample_inputs(batch, seed=batch)
        np.testing.assert_allclose(predict(onnx_models, "slow", x), predict(onnx_models, "good", x), rtol=1e-6)


def test_faulty_fails_exactly_the_batches_with_a_row_over_the_threshold(
    onnx_models: dict[str, ort.InferenceSession],
) -> None:
    x = sample_models.sample_inputs(2_000, seed=1)
    assert 0.03 < (x[:, 0] > FAULTY_THRESHOLD).mean() < 0.07
    failed = 0
    for batch in np.split(x, 250):
        if (batch[:, 0] > FAULTY_THRESHOLD).any():
            with pytest.raises(Exception, match=FAULTY_NODE_NAME):
                predict(onnx_models, "faulty", batch)
            failed += 1
        else:
            np.testing.assert_array_equal(predict(onnx_models, "faulty", batch), predict(onnx_models, "good", batch))
    assert 0 < failed < 250
    row = sample_models.sample_inputs(1)
    row[0, 0] = FAULTY_THRESHOLD
    predict(onnx_models, "faulty", row)  # the threshold itself is still fine
    row[0, 0] = np.nextafter(np.float32(FAULTY_THRESHOLD), np.float32(np.inf))
    with pytest.raises(Exception, match=FAULTY_NODE_NAME):
        predict(onnx_models, "faulty", row)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_torchscript_and_exported_program_agree(tmp_path: Path, variant: Variant) -> None:
    torch = pytest.importorskip("torch")
    onnx_model = session(sample_models.onnx_classifier(tmp_path / "m.onnx", variant, slow_work=SMALL_SLOW_WORK))
    scripted = torch.jit.load(
        str(sample_models.torchscript_classifier(tmp_path / "m.pt", variant, slow_work=SMALL_SLOW_WORK))
    )
    program = torch.export.load(
        str(sample_models.exported_program_classifier(tmp_path / "m.pt2", variant, slow_work=SMALL_SLOW_WORK))
    )
    assert list(program.graph_signature.user_inputs) == ["input"]
    exported = program.module()
    for batch in (1, 33):
        x = below_threshold(sample_models.sample_inputs(100, seed=batch))[:batch]
        expected = onnx_model.run(None, {"input": x})[0]
        with torch.inference_mode():
            np.testing.assert_allclose(scripted(torch.from_numpy(x)).numpy(), expected, atol=1e-5, rtol=0)
            np.testing.assert_allclose(exported(torch.from_numpy(x)).numpy(), expected, atol=1e-5, rtol=0)
    if variant == "faulty":
        x = sample_models.sample_inputs(4)
        x[2, 0] = FAULTY_THRESHOLD + 0.5
        with pytest.raises(Exception, match=re.escape(f"above {FAULTY_THRESHOLD}")):
            scripted(torch.from_numpy(x))
        with pytest.raises(Exception, match=re.escape(f"above {FAULTY_THRESHOLD}")):
            exported(torch.from_numpy(x))


def test_statistics_describe_the_sampled_inputs(tmp_path: Path) -> None:
    path = sample_models.write_training_statistics(tmp_path / "stats" / "statistics.json")
    statistics = json.loads(path.read_text())
    assert statistics == sample_models.training_statistics()
    x = sample_models.sample_inputs(50_000, seed=7).astype(np.float64)
    assert x.shape == (50_000, 4)
    np.testing.assert_allclose(x.mean(axis=0), statistics["mean"], atol=0.05)
    np.testing.assert_allclose(np.cov(x, rowvar=False), statistics["covariance"], atol=0.1)
    covariance = np.array(statistics["covariance"])
    assert np.all(np.linalg.eigvalsh(covariance) > 0) and abs(covariance[0, 1]) > 0.1  # correlated


def test_shift_moves_inputs_away_in_mahalanobis_distance() -> None:
    near = mahalanobis(sample_models.sample_inputs(5_000, seed=2))
    far = mahalanobis(sample_models.sample_inputs(5_000, seed=2, shift=8.0))
    assert np.median(near) < 3 and np.median(far) > 6
    assert mahalanobis(sample_models.sample_inputs(50_000, seed=3, shift=5.0).mean(axis=0, keepdims=True))[0] == (
        pytest.approx(5.0, abs=0.05)
    )
    np.testing.assert_array_equal(sample_models.sample_inputs(3, seed=4), sample_models.sample_inputs(3, seed=4))


def test_models_are_reproducible_per_seed_and_checksummed(tmp_path: Path) -> None:
    first = sample_models.onnx_classifier(tmp_path / "a.onnx")
    again = sample_models.onnx_classifier(tmp_path / "b.onnx")
    other_seed = sample_models.onnx_classifier(tmp_path / "c.onnx", seed=1)
    assert sample_models.checksum(first) == f"sha256:{hashlib.sha256(first.read_bytes()).hexdigest()}"
    assert sample_models.checksum(first) == sample_models.checksum(again) != sample_models.checksum(other_seed)
    x = sample_models.sample_inputs(10_000)
    assert np.median(session(other_seed).run(None, {"input": x})[0].max(axis=1)) > 0.8


def test_unknown_variant_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown variant 'great'"):
        sample_models.onnx_classifier(tmp_path / "m.onnx", "great")  # type: ignore[arg-type]


def test_command_writes_every_model_and_prints_checksums(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sample_models.main([str(tmp_path / "out"), "--slow-work", str(SMALL_SLOW_WORK)]) == 0
    printed = dict(line.split("  ") for line in capsys.readouterr().out.splitlines())
    names = {Path(path).name for path in printed}
    assert {f"{variant}.onnx" for variant in VARIANTS} | {"statistics.json"} <= names
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        assert {f"{variant}.{suffix}" for variant in VARIANTS for suffix in ("pt", "pt2")} <= names
    for path, digest in printed.items():
        assert sample_models.checksum(path) == digest
