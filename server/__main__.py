import os

# TensorFlow's C++ logs (CUDA probing on a CPU machine) are noise for a server; set 0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from server.app import main  # noqa: E402

raise SystemExit(main())
