"""Import TensorFlow without its import-time C++ log lines (CUDA probing on a CPU-only machine).

``import tensorflow`` on a machine without a GPU writes lines such as ``cudart_stub.cc:31] Could not
find cuda drivers on your machine`` straight to file descriptor 2, from C++ logging that runs before
``TF_CPP_MIN_LOG_LEVEL`` is read (measured with TensorFlow 2.21: that variable, ``GLOG_minloglevel``
and ``CUDA_VISIBLE_DEVICES`` do not silence them). The entry points (``python -m server``, ``python
-m exporter``, the fine-tuning worker) call :func:`import_tensorflow_quietly` once, first: the
import's output goes to a temporary file and every line except the known noise is written back, so a
real warning or error during the import still shows. ``IMAGESERVE_TF_IMPORT_LOGS=1`` keeps all lines.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

#: Lines TensorFlow's CPU wheel prints on every import and that say nothing to a CPU user.
NOISE = re.compile(
    r"cudart_stub\.cc|Could not find cuda drivers|absl::InitializeLog\(\) is called"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|cpu_feature_guard\.cc|oneDNN custom operations are on"
    r"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (once per process) with :data:`NOISE` lines dropped from its output."""
    if "tensorflow" in sys.modules or os.environ.get("IMAGESERVE_TF_IMPORT_LOGS") == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401 - imported for its side effect: the later imports are free
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                if not NOISE.search(line)
            ]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
