"""A real S3 API on loopback (moto's server mode), started once per session, and a fresh bucket per test.

The endpoint and dummy credentials travel the standard way, as ``AWS_*`` environment variables, so
that server subprocesses and training workers started by the tests find the bucket as a user's
would (docs/object-storage.md).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from model_format.layout import PUBLISHED_MARKER
from tests.servers import SubprocessServer, wait_for

pytest.importorskip(
    "s3fs", reason="the object-store model root needs the s3 extra: pip install 'imageserve[s3]'"
)
pytest.importorskip("moto", reason="tests/storage needs moto[server] (the test extra) for a loopback S3 API")

_buckets = itertools.count(1)

#: A small classifier for these tests (MobileNetV2 at 32x32, random weights, no ONNX twin: seconds to export).
SMALL_CLASSIFIER = {"name": "mobilenet_v2_keras", "weights": "random", "input_size": 32, "onnx": False}


def export_small(export_cache, seed: int, **options):
    settings = dict(SMALL_CLASSIFIER, seed=seed, **options)
    return export_cache.get(settings.pop("name"), **settings)


@pytest.fixture(scope="session")
def exported_to_bucket(s3_endpoint, export_cache):
    """The exporter's own publish to a bucket: version 1 of the small classifier (its result)."""
    return export_small(export_cache, seed=1, output_dir=new_bucket())


@pytest.fixture(scope="session")
def small_v1(exported_to_bucket, tmp_path_factory):
    """That version as a local directory (downloaded, without its marker), to publish to other buckets."""
    local = tmp_path_factory.mktemp("small-v1")
    fs = s3()
    source = bucket_path(exported_to_bucket.path)
    for key in fs.find(source):
        relative = key.removeprefix(source + "/")
        if relative != PUBLISHED_MARKER:
            (local / relative).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(key, str(local / relative))
    return SimpleNamespace(path=local)


@pytest.fixture(scope="session")
def small_v2(export_cache):
    """A second version (another seed), for hot swaps."""
    return export_small(export_cache, seed=2)


@pytest.fixture(scope="session")
def moto():
    """A moto S3 server process (port 0: it prints the one it bound) and its endpoint URL."""
    # Port 0: moto binds a free port and prints it ("Running on http://127.0.0.1:<port>").
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    bound: list[str] = []

    def read_log() -> None:
        for line in process.stderr:  # read to the end, so that moto never blocks on a full pipe
            if not bound and (found := re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)):
                bound.append(found.group(1))

    threading.Thread(target=read_log, name="moto-log", daemon=True).start()
    wait_for(lambda: bound or process.poll() is not None, 60, 0.05, "moto's S3 server to report its port")
    assert bound, "moto's S3 server exited at start"
    endpoint = bound[0]

    def answering() -> bool:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return True
        except OSError:
            return process.poll() is not None  # ended: fail below instead of waiting

    wait_for(answering, 60, 0.1, "moto's S3 server")
    assert process.poll() is None, "moto's S3 server exited at start"
    yield SimpleNamespace(process=process, endpoint=endpoint)
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="session")
def s3_endpoint(moto):
    """``http://127.0.0.1:<port>`` of the moto S3 server, with AWS_* pointing every client at it."""
    endpoint = moto.endpoint
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield endpoint


@pytest.fixture
def bucket_url(s3_endpoint) -> str:
    """A new, empty bucket's model root: ``s3://imageserve-test-<n>/models``."""
    return new_bucket()


def new_bucket() -> str:
    name = f"imageserve-test-{next(_buckets)}"
    s3().mkdir(name)
    return f"s3://{name}/models"


def s3():
    """The s3fs filesystem (listings never cached: every test looks at the bucket as it is now)."""
    import fsspec

    return fsspec.filesystem("s3", use_listings_cache=False)


def bucket_path(url: str) -> str:
    return url.removeprefix("s3://")


def publish_version(local: Path, url: str, name: str, version: int) -> str:
    """Upload an exported version directory the way the exporter does: files, then the marker."""
    from storage.object_store import upload_version

    return upload_version(Path(local), url, name, version)


def start_server(url: str, state_dir: Path, *extra: str) -> SubprocessServer:
    """``python -m server --model-root s3://...`` on a free port (listening; models may still load).
    TensorFlow runs the network: an ONNX twin made at load would add seconds that test nothing here."""
    return SubprocessServer(
        ["--model-root", url, "--host", "127.0.0.1", "--port", "0", "--metrics-port", "off",
         "--poll-interval-s", "0.3", "--state-dir", str(state_dir), "--runtime", "tensorflow", *extra]
    ).start()  # fmt: skip


def serve(url: str, state_dir: Path, *extra: str) -> SubprocessServer:
    """:func:`start_server`, once a version is loaded."""
    server = start_server(url, state_dir, *extra)
    server.wait_serving()
    return server
