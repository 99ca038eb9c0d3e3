"""Metrics move with traffic, request ids round-trip, logs can be JSON."""

from __future__ import annotations

import json
import logging
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from server.logs import JsonFormatter, RequestIdFilter, TextFormatter, request_id
from tests.conftest import CLASSIFIER, FEATURES
from tests.servers import InProcessServer, SubprocessServer, test_settings, wait_for

DOCUMENTED_SERIES = (
    "imageserve_requests_total",
    "imageserve_request_duration_seconds",
    "imageserve_queue_duration_seconds",
    "imageserve_model_duration_seconds",
    "imageserve_batch_size",
    "imageserve_images_total",
    "imageserve_model_loads_total",
    "imageserve_model_load_duration_seconds",
    "imageserve_model_unloads_total",
    "imageserve_model_unload_duration_seconds",
    "imageserve_served_versions",
    "imageserve_finetune_jobs",
    "imageserve_pending_images",
    "imageserve_inflight_requests",
    # prometheus_client's standard collectors, which a custom registry lacks unless registered
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "python_info",
    "python_gc_collections_total",
)


@pytest.fixture(scope="module")
def metrics_server(model_root):
    running = InProcessServer(test_settings(model_root, metrics_port=0)).start()
    yield running
    running.stop()


def scrape(server) -> dict[tuple, float]:
    url = f"http://127.0.0.1:{server.server.metrics.port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_documented_series_are_exposed(metrics_server):
    url = f"http://127.0.0.1:{metrics_server.server.metrics.port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    for series in DOCUMENTED_SERIES:
        assert f"# HELP {series.removesuffix('_total')}" in text or f"# HELP {series}" in text, series


async def _runtime_of(running, name: str) -> str:
    from server.served import ModelRef

    return running.server.repository.resolve(ModelRef(name)).model.runtime


def test_metrics_move_with_traffic(metrics_server, photos):
    with grpc.insecure_channel(metrics_server.address) as channel:
        stub = pb_grpc.ImageModelServiceStub(channel)
        before = scrape(metrics_server)
        for _ in range(3):
            stub.Classify(
                pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["chelsea.jpg"]])
            )
        stub.ExtractFeatures(
            pb.ExtractFeaturesRequest(model=pb.ModelSpec(name=FEATURES), images=[photos["coffee.png"]] * 2)
        )
        with pytest.raises(grpc.RpcError):
            stub.Classify(
                pb.ClassifyRequest(model=pb.ModelSpec(name="no-such-model"), images=[photos["chelsea.jpg"]])
            )
        after = scrape(metrics_server)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    ok = dict(rpc="Classify", model=CLASSIFIER, version="1", code="OK")
    assert delta("imageserve_requests_total", **ok) == 3
    assert delta("imageserve_requests_total", rpc="Classify", model="-", version="", code="NOT_FOUND") == 1
    assert (
        delta("imageserve_requests_total", rpc="ExtractFeatures", model=FEATURES, version="1", code="OK") == 1
    )
    assert delta("imageserve_images_total", model=CLASSIFIER, version="1", kind="classify") == 3
    assert delta("imageserve_images_total", model=FEATURES, version="1", kind="features") == 2
    assert delta("imageserve_request_duration_seconds_count", rpc="Classify", model=CLASSIFIER) == 3
    assert delta("imageserve_batch_size_count", model=CLASSIFIER, kind="classify") >= 1
    runtime = metrics_server.call(_runtime_of(metrics_server, CLASSIFIER))
    call = dict(model=CLASSIFIER, kind="classify", runtime=runtime, precision="fp32")  # the default precision
    assert delta("imageserve_model_duration_seconds_sum", **call) > 0
    assert value(after, "imageserve_model_loads_total", model=CLASSIFIER, result="loaded") == 1
    assert value(after, "imageserve_served_versions", model=CLASSIFIER) == 1
    assert value(after, "imageserve_model_load_duration_seconds_count", model=FEATURES) == 1


def pending(samples, model: str) -> tuple[float, float, float]:
    """(queued images, running images, requests in flight) of the model's version 1."""
    return (
        value(samples, "imageserve_pending_images", model=model, version="1", stage="queued"),
        value(samples, "imageserve_pending_images", model=model, version="1", stage="running"),
        value(samples, "imageserve_inflight_requests", model=model, version="1"),
    )


def test_pending_images_gauge_follows_load_and_returns_to_zero(metrics_server, photos):
    """The HPA's metric: under load a scrape sees queued and running images; idle, zeros (not absent)."""
    idle = scrape(metrics_server)
    assert (
        "imageserve_pending_images",
        (("model", CLASSIFIER), ("stage", "queued"), ("version", "1")),
    ) in idle
    assert pending(idle, CLASSIFIER) == (0, 0, 0)
    request = pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["chelsea.jpg"]] * 4)
    seen = {"queued": 0.0, "running": 0.0, "requests": 0.0}
    with grpc.insecure_channel(metrics_server.address) as channel:
        stub = pb_grpc.ImageModelServiceStub(channel)

        def loaded_scrape_sees_work() -> bool:
            # 24 requests of 4 images against batches of 8 on 2 model threads: most must wait in the queue.
            calls = [stub.Classify.future(request, timeout=120) for _ in range(24)]
            try:
                queued, running, requests = pending(scrape(metrics_server), CLASSIFIER)
            finally:
                for call in calls:
                    assert call.result().results  # every request is answered
            seen.update(
                queued=max(seen["queued"], queued),
                running=max(seen["running"], running),
                requests=max(seen["requests"], requests),
            )
            return seen["queued"] > 0 and seen["running"] > 0

        wait_for(
            loaded_scrape_sees_work,
            120,
            interval=0,
            what=f"a scrape under load to see queued and running images: {seen}",
        )
    assert seen["running"] <= metrics_server.settings.model_threads * metrics_server.settings.max_batch_size
    assert seen["requests"] >= 1
    assert pending(scrape(metrics_server), CLASSIFIER) == (0, 0, 0)


def test_request_ids_round_trip(stub, photos):
    request = pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["chelsea.png"]])
    _, call = stub.Classify.with_call(request, metadata=(("x-request-id", "order-42"),))
    assert ("x-request-id", "order-42") in call.trailing_metadata()
    _, call = stub.Classify.with_call(request)
    generated = dict(call.trailing_metadata())["x-request-id"]
    assert len(generated) == 16
    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(
            pb.ClassifyRequest(model=pb.ModelSpec(name="nope"), images=[b"x"]),
            metadata=(("x-request-id", "bad-1"),),
        )
    assert ("x-request-id", "bad-1") in caught.value.trailing_metadata()


def test_json_log_lines_carry_the_request_id():
    record = logging.LogRecord("server.test", logging.INFO, __file__, 1, "loaded %s v%d", ("vgg16", 3), None)
    token = request_id.set("order-42")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert (
        line["message"] == "loaded vgg16 v3" and line["request_id"] == "order-42" and line["level"] == "INFO"
    )


def test_server_logs_json_when_asked(real_model_root, tmp_path):
    server = SubprocessServer(
        [
            "--model-root",
            str(real_model_root),
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--log-format",
            "json",
            "--runtime",
            "tensorflow",
            "--state-dir",
            str(tmp_path / "state"),
        ]
    ).start()
    try:
        server.wait_serving()
    finally:
        server.terminate()
    lines = [json.loads(line) for line in server.log_lines if line.startswith("{")]
    assert any("listening on" in line["message"] for line in lines)
    assert any(line["message"].startswith("loaded ") for line in lines)
    assert all({"time", "level", "logger", "message", "request_id"} <= set(line) for line in lines)


def test_a_text_log_record_stays_one_line_whatever_a_client_sends():
    """A path like /v2/models/x%0A2026-01-01 INFO forged must not start a second, forged record."""
    formatter = TextFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.makeLogRecord(
        {"msg": "POST %s -> 500", "args": ("/v2/x\n2026-01-01 INFO server.app: forged\r\t\x1b[31m",)}
    )
    record.levelname, record.name = "ERROR", "server.rest"
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line == "ERROR server.rest: POST /v2/x\\n2026-01-01 INFO server.app: forged\\r\\t\\x1b[31m -> 500"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert "\nTraceback" in formatter.format(record)  # a traceback keeps its lines
