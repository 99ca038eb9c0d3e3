"""The benchmark's server processes serve callers and time their own model on request.

``python -m bench.hosted`` is the real server plus a timer; ``--bare`` is the floor the benchmark
compares it with. Both must answer calls, answer timing commands, and stop at the end of stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import CLASSIFIER, REPO_ROOT
from tests.servers import loopback_args


def _photo() -> bytes:
    from bench.common import real_jpegs

    return real_jpegs()[0]


def _classify_real(address: str) -> None:
    from client import ModelClient

    with ModelClient(address, timeout=30) as client:
        assert client.classify(_photo(), model=CLASSIFIER, top_k=1).version == 1


def _classify_bare(address: str) -> None:
    import grpc

    from bench.hosted import BARE_METHOD, BARE_SERVICE

    with grpc.insecure_channel(address) as channel:
        top_class = channel.unary_unary(f"/{BARE_SERVICE}/{BARE_METHOD}")(_photo(), timeout=30)
    assert 0 <= int.from_bytes(top_class, "little") < 1000


@pytest.mark.parametrize("mode", ["server", "bare"])
def test_hosted_process_answers_calls_times_its_model_and_stops_at_end_of_input(
    mode, real_model_root, tmp_path
):
    model_root = real_model_root  # a process of its own: a real network
    if mode == "server":
        args = [CLASSIFIER, *loopback_args(model_root, "--state-dir", str(tmp_path / "state"))]
    else:
        args = ["--bare", str(model_root / CLASSIFIER / "1")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.hosted", *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        if not line:  # the process died before it was ready: show why
            process.wait(30)
            pytest.fail(f"bench.hosted exited with {process.returncode}:\n{process.stderr.read()[-3000:]}")
        ready = json.loads(line)
        assert ready["ready"] is True and ready["port"] > 0
        (_classify_real if mode == "server" else _classify_bare)(f"127.0.0.1:{ready['port']}")
        process.stdin.write(json.dumps({"op": "single", "count": 3}) + "\n")
        process.stdin.flush()
        latencies = json.loads(process.stdout.readline())
        assert len(latencies) == 3 and all(0 < seconds < 30 for seconds in latencies)
        process.stdin.close()  # end of commands: the process stops cleanly
        assert process.wait(timeout=60) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
