"""OpenTelemetry: a traced request shows its server, decode, queue and model spans, under the
caller's traceparent, over gRPC and REST; log lines carry the ids; off means no-op."""

from __future__ import annotations

import base64
import io
import json
import logging

import grpc
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from server import tracing
from server.logs import JsonFormatter, RequestIdFilter
from tests.conftest import CLASSIFIER
from tests.rest_client import http
from tests.servers import InProcessServer, test_settings, wait_for

in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(scope="module")
def exporter():
    spans = in_memory.InMemorySpanExporter()
    tracing.enable(spans, batch=False)
    yield spans
    tracing.disable()


@pytest.fixture(scope="module")
def server(model_root, exporter):
    running = InProcessServer(test_settings(model_root, rest_port=0)).start()
    yield running
    running.stop()


def spans_of(exporter, trace_id: str) -> dict[str, list]:
    by_name: dict[str, list] = {}
    for span in exporter.get_finished_spans():
        if f"{span.context.trace_id:032x}" == trace_id:
            by_name.setdefault(span.name, []).append(span)
    return by_name


def assert_request_tree(spans: dict[str, list], root_name: str) -> None:
    (root,) = spans[root_name]
    assert f"{root.parent.span_id:016x}" == PARENT_ID and root.parent.is_remote
    for name in ("decode", "queue", "model"):
        (child,) = spans[name]
        assert child.parent.span_id == root.context.span_id, name
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time, name
    (queue,), (model,) = spans["queue"], spans["model"]
    assert queue.end_time == model.start_time
    assert (
        model.attributes["imageserve.batch.size"] == 1 and model.attributes["imageserve.model.runtime_ms"] > 0
    )


def test_grpc_call_traced_under_the_callers_traceparent(server, exporter, photos):
    exporter.clear()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ImageModelServiceStub(channel)
        stub.Classify(
            pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["chelsea.png"]]),
            metadata=(("traceparent", TRACEPARENT),),
            timeout=60,
        )
    spans = spans_of(exporter, TRACE_ID)
    assert_request_tree(spans, "imageserve.v1.ImageModelService/Classify")
    (root,) = spans["imageserve.v1.ImageModelService/Classify"]
    assert root.attributes["rpc.system"] == "grpc" and root.attributes["imageserve.status"] == "OK"


def test_server_streaming_call_traced_with_its_outcome(server, exporter):
    exporter.clear()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ImageModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(
                stub.WatchFineTuneJob(
                    pb.WatchFineTuneJobRequest(job_id="ft-0000000000000000"),
                    metadata=(("traceparent", TRACEPARENT),),
                    timeout=60,
                )
            )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # The server ends a stream's span after the client has its status: wait for it (bounded).
    name = "imageserve.v1.ImageModelService/WatchFineTuneJob"
    wait_for(lambda: name in spans_of(exporter, TRACE_ID), 10, what="the stream's span")
    (root,) = spans_of(exporter, TRACE_ID)[name]
    assert f"{root.parent.span_id:016x}" == PARENT_ID
    assert (
        root.attributes["imageserve.status"] == "NOT_FOUND"
        and root.attributes["rpc.method"] == "WatchFineTuneJob"
    )


def test_rest_call_traced_under_the_callers_traceparent(server, exporter, photos):
    exporter.clear()
    body = {
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [1],
                "data": [{"b64": base64.b64encode(photos["chelsea.png"]).decode()}],
            }
        ]
    }
    answer = http(
        "POST",
        f"http://127.0.0.1:{server.server.rest.port}/v2/models/{CLASSIFIER}/infer",
        body,
        {"traceparent": TRACEPARENT},
    )
    assert answer.status == 200
    spans = spans_of(exporter, TRACE_ID)
    assert_request_tree(spans, "POST v2.infer")
    assert spans["POST v2.infer"][0].attributes["http.response.status_code"] == 200


def test_json_log_lines_carry_trace_and_span_ids(server, exporter, photos):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("server.api.servicer")  # logs every call at DEBUG, inside its span
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with grpc.insecure_channel(server.address) as channel:
            pb_grpc.ImageModelServiceStub(channel).Classify(
                pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["chelsea.png"]]),
                metadata=(("traceparent", TRACEPARENT),),
                timeout=60,
            )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (line,) = [entry for entry in lines if entry["message"].startswith("Classify")]
    (root,) = spans_of(exporter, TRACE_ID)["imageserve.v1.ImageModelService/Classify"][-1:]
    assert line["trace_id"] == TRACE_ID and line["span_id"] == f"{root.context.span_id:016x}"


def test_only_the_standard_environment_turns_it_on():
    assert tracing.wanted({}) is False and tracing.wanted({"OTEL_TRACES_EXPORTER": "none"}) is False
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) is True
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) is False
