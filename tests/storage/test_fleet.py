"""Issue 17's fleet: two replicas on one machine serving from one S3 bucket; a new version published to
the bucket under load (a client alternating between the replicas) is picked up by both with zero failed
requests."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.storage.conftest import publish_version, start_server

# Two `python -m server` replicas on a bucket under load: the fleet is the slow tier's.
pytestmark = pytest.mark.slow

NAME = "mobilenet_v2_keras"
CLIENT_THREADS = 2
#: Both replicas must answer with the new version this many times in a row before the load stops.
SETTLED = 20
SWAP_DEADLINE_S = 120.0


def test_a_version_published_under_load_reaches_both_replicas_without_a_failed_request(
    bucket_url, tmp_path, small_v1, small_v2, photos
):
    publish_version(small_v1.path, bucket_url, NAME, 1)
    replicas = [start_server(bucket_url, tmp_path / f"state-{i}") for i in range(2)]  # both start at once
    for replica in replicas:
        replica.wait_serving()
    channels = [grpc.insecure_channel(replica.address) for replica in replicas]
    stubs = [pb_grpc.ImageModelServiceStub(channel) for channel in channels]
    request = pb.ClassifyRequest(model=pb.ModelSpec(name=NAME), images=[photos["chelsea.jpg"]], top_k=1)
    answers: list[tuple[int, int]] = []  # (replica, version), in the order they came back
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(10**9))

    def client() -> None:
        while not stop.is_set():
            with lock:
                replica = next(counter) % 2  # alternate between the replicas, like round-robin DNS
            try:
                version = stubs[replica].Classify(request, timeout=60).model.version
            except grpc.RpcError as exc:
                with lock:
                    failures.append(f"replica {replica}: {exc.code().name} {exc.details()}")
                continue
            with lock:
                answers.append((replica, version))

    def settled() -> bool:
        with lock:
            tails = [[v for r, v in answers if r == replica][-SETTLED:] for replica in (0, 1)]
        return all(len(tail) == SETTLED and set(tail) == {2} for tail in tails)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENT_THREADS)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2.0)  # load on version 1 first
        published_at = time.monotonic()
        publish_version(small_v2.path, bucket_url, NAME, 2)
        while not settled() and time.monotonic() - published_at < SWAP_DEADLINE_S:
            time.sleep(0.2)
        swap_s = time.monotonic() - published_at
    finally:
        stop.set()
        for thread in threads:
            thread.join(90)
        for channel in channels:
            channel.close()
        exit_codes = [replica.terminate() for replica in replicas]
    per_replica = {r: {v: sum(1 for rr, vv in answers if (rr, vv) == (r, v)) for v in (1, 2)} for r in (0, 1)}
    print(
        f"fleet: {len(answers)} answers {per_replica}, {len(failures)} failed, both on v2 {swap_s:.1f} s "
        "after publishing"
    )
    assert failures == []
    assert settled(), f"not both replicas on version 2 within {SWAP_DEADLINE_S:.0f} s: {per_replica}"
    assert all(counts[1] > 0 and counts[2] >= SETTLED for counts in per_replica.values()), per_replica
    assert {version for _replica, version in answers} == {1, 2}
    assert exit_codes == [0, 0]
