"""The entry points import TensorFlow without its CUDA-probing lines, and keep any other line."""

from __future__ import annotations

import os
import subprocess
import sys

from graphs.tensorflow_import import NOISE

REAL_LINES = (  # what TensorFlow 2.21's CPU wheel printed on import here, before the filter
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796151285.920116    1254 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
)


def test_the_known_lines_are_noise_and_others_are_not():
    assert all(NOISE.search(line) for line in REAL_LINES)
    assert not NOISE.search(
        "W tensorflow/core/framework/op_kernel.cc:1857] OP_REQUIRES failed: out of memory"
    )
    assert not NOISE.search("DeprecationWarning: something a user should see")


def test_import_prints_nothing_but_what_follows():
    code = (
        "import sys; from graphs.tensorflow_import import import_tensorflow_quietly;"
        "import_tensorflow_quietly(); import tensorflow as tf; print('after', tf.__version__, "
        "file=sys.stderr)"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "IMAGESERVE_TF_IMPORT_LOGS")
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("after "), result.stderr
    assert not any(NOISE.search(line) for line in result.stderr.splitlines())
