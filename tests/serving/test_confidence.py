"""The confidence the fallback chain and the confidence histogram read: the top-class probability."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from cutover.serving.fallback import top1_confidence


def test_probabilities_are_read_as_they_are() -> None:
    probabilities = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]], dtype=np.float32)
    np.testing.assert_allclose(top1_confidence({"p": probabilities}, None), [0.5, 0.9], rtol=1e-6)


def test_scores_that_are_not_probabilities_go_through_softmax() -> None:
    rng = np.random.default_rng(7)
    for logits in (rng.normal(0, 3, (16, 5)), np.array([[0.4, 0.4, 0.4]]), np.array([[1000.0, 0.0]])):
        expected = softmax(logits, axis=1).max(axis=1)
        np.testing.assert_allclose(top1_confidence({"logits": logits}, None), expected, rtol=1e-12)


def test_the_named_output_is_used_and_non_classifier_outputs_have_none() -> None:
    outputs = {"embedding": np.ones((2, 8), np.float32) / 8, "label": np.array([[0.1, 0.9]] * 2)}
    np.testing.assert_allclose(top1_confidence(outputs, "label"), [0.9, 0.9])
    assert top1_confidence({"ids": np.array([[1, 2]])}, None) is None, "integers are not scores"
    assert top1_confidence({"value": np.array([0.3, 0.7])}, None) is None, "one dimension: not [rows, classes]"
    assert top1_confidence({"value": np.zeros((3, 1))}, None) is None, "one class"


def test_small_and_large_outputs_agree() -> None:
    """Small outputs are read in plain Python, large ones with numpy: the same answers."""
    rng = np.random.default_rng(8)
    for rows in (1, 4, 200):
        logits = rng.normal(0, 2, (rows, 10))
        for scores in (logits, softmax(logits, axis=1)):
            expected = softmax(scores, axis=1).max(axis=1) if scores is logits else scores.max(axis=1)
            np.testing.assert_allclose(top1_confidence({"s": scores}, None), expected, rtol=1e-12)
