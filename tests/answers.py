"""How close two answers to the same images must be: the product's documented promise
(docs/runtime.md), never a tolerance tightened on one machine.

Answers to the same image legitimately differ in their last bits between runtimes (TensorFlow, ONNX
Runtime), batch compositions (a batched convolution rounds differently from a single one) and CPUs
(oneDNN picks its kernels per CPU: AMX, AVX-512, AVX2). A test comparing a served answer with a
reference, or two doors' answers, allows exactly what the product promises its users.
"""

from __future__ import annotations

import numpy as np

from graphs.onnx_twin import FEATURE_TOLERANCE, PROBABILITY_TOLERANCE


def assert_same_features(got, expected) -> None:
    """Per image: max |difference| <= FEATURE_TOLERANCE x max |feature| of the expected image."""
    got, expected = (
        np.atleast_2d(np.asarray(got, np.float32)),
        np.atleast_2d(np.asarray(expected, np.float32)),
    )
    assert got.shape == expected.shape, (got.shape, expected.shape)
    for row, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        allowed = FEATURE_TOLERANCE * float(np.abs(theirs).max())
        error = float(np.abs(mine - theirs).max())
        assert error <= allowed, (
            f"image {row}: features differ by {error:.3g}, more than the promised {FEATURE_TOLERANCE} x "
            f"max|feature| = {allowed:.3g}"
        )


def assert_same_probabilities(got, expected) -> None:
    """Max |difference| <= PROBABILITY_TOLERANCE, class by class."""
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(expected, np.float32), rtol=0, atol=PROBABILITY_TOLERANCE
    )
