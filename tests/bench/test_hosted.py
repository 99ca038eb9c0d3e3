"""The benchmark's server process serves like ``python -m server`` and times its own model on request."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import CLASSIFIER, REPO_ROOT


def test_hosted_server_answers_clients_and_times_the_model_it_serves(model_root, tmp_path):
    from client import ModelClient

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.hosted", CLASSIFIER, "--model-root", str(model_root), "--host", "127.0.0.1",
         "--port", "0", "--state-dir", str(tmp_path / "state")],
        cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready = json.loads(process.stdout.readline())
        assert ready["ready"] is True and ready["port"] > 0
        with ModelClient(f"127.0.0.1:{ready['port']}", timeout=30) as client:
            assert client.classify(_photo(), model=CLASSIFIER, top_k=1).version == 1
        process.stdin.write(json.dumps({"op": "single", "count": 3}) + "\n")
        process.stdin.flush()
        latencies = json.loads(process.stdout.readline())
        assert len(latencies) == 3 and all(0 < seconds < 30 for seconds in latencies)
        process.stdin.close()  # end of commands: the server stops cleanly
        assert process.wait(timeout=60) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def _photo() -> bytes:
    from bench.common import real_jpegs

    return real_jpegs()[0]
