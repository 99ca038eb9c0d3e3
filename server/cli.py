"""``python -m server``: read the settings, then serve.

TensorFlow loads only once the settings are valid, so ``--help`` and setting mistakes answer at once
(exit code 2) instead of after seconds of imports.
"""

from __future__ import annotations

import os
import sys

from graphs.tensorflow_import import import_tensorflow_quietly
from server.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # TensorFlow's C++ logs (CUDA probing on a CPU machine) are noise for a server; set 0 to see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import_tensorflow_quietly()
    from server.app import run

    return run(settings)
