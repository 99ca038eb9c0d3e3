"""``runtime = openvino``: the checked twin compiled by OpenVINO, at fp32, bf16 or int8 behind a gate;
``precision = auto``; ``runtime = auto`` with a reduced precision.

The choice on tiny real ONNX models (fast); a served MobileNetV2 at 64x64 with its exported twin and
calibration images, through Classify and ExtractFeatures against the same version on TensorFlow, its
status and metrics (the door), and a fine-tuning job's features on the same base.
"""

from __future__ import annotations

import re

import grpc
import numpy as np
import pytest

from graphs import openvino_twin
from graphs.onnx_twin import TwinUnusable, new_session
from model_format import signatures as sig
from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from server import runtime as rt
from server.settings import ModelConfig, ServerSettings, SettingsError
from tests.images import encode, photo
from tests.server.runtime.test_choice import tiny_twin

TINY = 4  # tiny_twin's input size
#: bf16 needs AVX512-BF16 or AMX; on other CPUs the server falls back to fp32 (tested below either way).
HAS_BF16 = not openvino_twin.bf16_support()


def choose(
    precision: str, check=None, model=None, calibration=None, runtime="openvino", **timing
) -> rt.Choice:
    model = model or tiny_twin()
    return rt.choose(
        rt.RuntimeOptions(runtime=runtime, onnx_threads=1, precision=precision),
        lambda: (new_session(model, 1), "built here", model),
        timing.get("run_tensorflow"),
        timing.get("run_onnx"),
        "tiny v1",
        needed=frozenset({sig.FEATURES_OUTPUT}),
        check=check,
        size=TINY,
        own_images=lambda: rt.GateImages(*(calibration() if calibration else (None,))),
    )


def conv_twin(cancelling: bool = False) -> bytes:
    """A real convolutional ONNX twin (what int8 quantizes): features = mean of a 3x3 convolution.

    ``cancelling``: made sensitive on purpose, the features are the difference of two convolutions
    whose weights differ by 0.1%: fp32 computes the small difference exactly, int8's rounding of each
    weight (0.4% of its range) swamps it.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    weights = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Transpose", [sig.PIXELS_INPUT], ["nchw"], perm=[0, 3, 1, 2])]
    initializers = [numpy_helper.from_array(weights, "w1")]
    nodes.append(helper.make_node("Conv", ["nchw", "w1"], ["c1"], pads=[1, 1, 1, 1]))
    last = "c1"
    if cancelling:
        near = weights * (1 + 1e-3 * rng.standard_normal(weights.shape)).astype(np.float32)
        initializers.append(numpy_helper.from_array(near, "w2"))
        nodes += [
            helper.make_node("Conv", ["nchw", "w2"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("Sub", ["c1", "c2"], ["difference"]),
        ]
        last = "difference"
    nodes.append(helper.make_node("ReduceMean", [last], [sig.FEATURES_OUTPUT], axes=[2, 3], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info(sig.PIXELS_INPUT, TensorProto.FLOAT, [None, TINY, TINY, 3])],
        [helper.make_tensor_value_info(sig.FEATURES_OUTPUT, TensorProto.FLOAT, [None, 8])],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def calibration_pixels() -> tuple[np.ndarray]:
    return (np.random.default_rng(4).uniform(0, 255, (16, TINY, TINY, 3)).astype(np.float32),)


def classifier_twin(sign: float = 1.0) -> bytes:
    """A real twin with features (the mean colour x ``sign``) and probabilities (their softmax)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", [sig.PIXELS_INPUT], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["mean", "sign"], [sig.FEATURES_OUTPUT]),
        helper.make_node("Softmax", [sig.FEATURES_OUTPUT], [sig.PROBABILITIES_OUTPUT], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info(sig.PIXELS_INPUT, TensorProto.FLOAT, [None, TINY, TINY, 3])],
        [
            helper.make_tensor_value_info(sig.FEATURES_OUTPUT, TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info(sig.PROBABILITIES_OUTPUT, TensorProto.FLOAT, [None, 3]),
        ],
        initializer=[numpy_helper.from_array(np.float32(sign), "sign")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_openvino_at_fp32_runs_the_twin_after_the_savedmodel_check():
    checked = []
    choice = choose("fp32", check=lambda session: checked.append(session) or {"max_feature_error": 1e-7})
    assert choice.runtime == "openvino" and choice.precision == "fp32"
    # The same check as ONNX Runtime's twin, against the SavedModel: the lone-batch and batch sessions.
    assert checked == [s for s in (choice.lone_session, choice.session) if s is not None]
    assert choice.detail.startswith("runtime = openvino (setting), precision fp32 (max_feature_error 1e-07)")
    pixels = np.random.default_rng(0).uniform(0, 255, (3, TINY, TINY, 3)).astype(np.float32)
    (features,) = choice.session.run([sig.FEATURES_OUTPUT], {sig.PIXELS_INPUT: pixels})
    np.testing.assert_allclose(features, pixels.mean(axis=(1, 2)), rtol=1e-5)


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 instructions (the fallback is tested below)")
def test_bf16_serves_when_it_passes_the_gate_and_shows_its_figures():
    choice = choose("bf16")
    assert (choice.runtime, choice.precision) == ("openvino", "bf16")
    gate = r"precision bf16 \(images 6, features_cosine_min (1|0\.99\d+)\)"
    assert re.search(gate, choice.detail), choice.detail
    assert [o.name for o in choice.session.get_outputs()] == [sig.FEATURES_OUTPUT]
    assert choice.session.compiled_precision == "bf16"


def test_bf16_falls_back_to_fp32_with_the_reason_on_a_cpu_without_it(monkeypatch):
    monkeypatch.setattr(openvino_twin, "bf16_support", lambda: "this CPU has no bf16 instructions (test)")
    choice = choose("bf16")
    assert (choice.runtime, choice.precision) == ("openvino", "fp32")
    assert "bf16 asked, fp32 used: this CPU has no bf16 instructions (test)" in choice.detail


def test_bf16_failing_its_gate_serves_fp32_with_the_figures(monkeypatch):
    monkeypatch.setattr(openvino_twin, "bf16_support", lambda: "")
    monkeypatch.setattr(openvino_twin, "MIN_FEATURE_COSINE", 1.1)  # no answer passes a cosine above 1
    choice = choose("bf16")
    assert (choice.runtime, choice.precision) == ("openvino", "fp32")
    assert "bf16 failed its gate against fp32, fp32 used: features cosine" in choice.detail
    assert "(needs >= 1.1)" in choice.detail


def test_the_gate_refuses_answers_that_differ_from_fp32():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMax", [sig.PIXELS_INPUT], [sig.FEATURES_OUTPUT], axes=[1, 2], keepdims=0)],
        "other",
        [helper.make_tensor_value_info(sig.PIXELS_INPUT, TensorProto.FLOAT, [None, TINY, TINY, 3])],
        [helper.make_tensor_value_info(sig.FEATURES_OUTPUT, TensorProto.FLOAT, [None, 3])],
    )
    other = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    reference = new_session(tiny_twin(), 1)
    pixels = np.random.default_rng(1).uniform(0, 255, (6, TINY, TINY, 3)).astype(np.float32)
    same = openvino_twin.new_session(tiny_twin(), 1, "fp32")
    assert openvino_twin.precision_gate(reference, same, pixels)["features_cosine_min"] > 0.99999
    with pytest.raises(TwinUnusable, match=r"features cosine 0\.\d+ against fp32 \(needs >= 0.999\)"):
        openvino_twin.precision_gate(reference, openvino_twin.new_session(other, 1, "fp32"), pixels)


def test_a_twin_openvino_cannot_compile_is_served_by_tensorflow():
    with pytest.raises(TwinUnusable, match="OpenVINO cannot run the twin"):
        openvino_twin.new_session(b"not an onnx model", 1, "fp32")


@pytest.mark.parametrize(
    "failure, reason",
    [
        (
            TwinUnusable("OpenVINO cannot run the twin: no such op"),
            "OpenVINO cannot run the twin: no such op",
        ),
        (RuntimeError("/srv/models/x: infer failed"), "OpenVINO failed: RuntimeError"),
    ],
)
def test_when_openvino_fails_tensorflow_serves_and_status_says_why(monkeypatch, failure, reason):
    """A compile error or any error of OpenVINO's never fails the version; its text may name server
    paths, so only a TwinUnusable's (our) message reaches the status."""

    def fail(*args):
        raise failure

    monkeypatch.setattr(openvino_twin, "new_session", fail)
    choice = choose("fp32")
    assert (choice.runtime, choice.session) == ("tensorflow", None)
    assert choice.detail == f"runtime = openvino (setting), but {reason}"
    assert choice.reference is not None  # the checked ONNX Runtime twin: the caller shrinks the arena with it


def test_int8_quantized_on_the_calibration_images_serves_past_its_gate():
    choice = choose("int8", model=conv_twin(), calibration=calibration_pixels)
    assert (choice.runtime, choice.precision) == ("openvino", "int8"), choice.detail
    # The gate ran on the 6 check images plus the 16 calibration images, and its figures are shown.
    assert re.search(r"^int8 \(images 22, features_cosine_min 0\.99\d+\)$", choice.precision_detail)
    assert f"precision int8 ({choice.precision_detail[6:-1]})" in choice.detail
    (pixels,) = calibration_pixels()
    (reference,) = new_session(conv_twin(), 1).run([sig.FEATURES_OUTPUT], {sig.PIXELS_INPUT: pixels})
    (quantized,) = choice.session.run([sig.FEATURES_OUTPUT], {sig.PIXELS_INPUT: pixels})
    assert not np.array_equal(quantized, reference)  # int8 really computed it
    np.testing.assert_allclose(quantized, reference, rtol=0.05, atol=0.05 * np.abs(reference).max())


def test_the_gate_refuses_int8_on_a_network_made_sensitive_to_it():
    choice = choose("int8", model=conv_twin(cancelling=True), calibration=calibration_pixels)
    assert (choice.runtime, choice.precision) == ("openvino", "fp32")
    refused = r"int8 failed its gate against fp32, fp32 used: features cosine -?\d\.\d+ against fp32"
    assert re.search(refused + r" \(needs >= 0.999\)", choice.precision_detail), choice.precision_detail


def test_a_fine_tuned_versions_held_out_accuracy_must_stay_within_half_a_point_of_fp32():
    reference = new_session(classifier_twin(), 1)
    pixels = np.random.default_rng(6).uniform(0, 255, (40, TINY, TINY, 3)).astype(np.float32)
    (probabilities,) = reference.run([sig.PROBABILITIES_OUTPUT], {sig.PIXELS_INPUT: pixels})
    classes = probabilities.argmax(axis=1)
    classes[:10] = (classes[:10] + 1) % 3  # fp32 is right on 30 of 40
    same = openvino_twin.new_session(classifier_twin(), 1, "fp32")
    figures = openvino_twin.held_out_gate(reference, same, pixels, classes)
    assert figures == {"heldout_images": 40, "heldout_accuracy_fp32": 0.75, "heldout_accuracy": 0.75}
    flipped = openvino_twin.new_session(classifier_twin(sign=-1.0), 1, "fp32")  # another top class
    with pytest.raises(TwinUnusable, match=r"held-out accuracy 0\.\d+ against fp32's 0\.7500 on 40 images"):
        openvino_twin.held_out_gate(reference, flipped, pixels, classes)
    features_only = new_session(tiny_twin(), 1)  # no probabilities: nothing to measure
    assert openvino_twin.held_out_gate(features_only, features_only, pixels, classes) == {}


def test_the_held_out_gate_runs_with_the_others_on_a_reduced_precision():
    pixels = np.random.default_rng(7).uniform(0, 255, (12, TINY, TINY, 3)).astype(np.float32)
    (probabilities,) = new_session(classifier_twin(), 1).run(
        [sig.PROBABILITIES_OUTPUT], {sig.PIXELS_INPUT: pixels}
    )
    held_out = (pixels, pixels, probabilities.argmax(axis=1))
    choice = choose("int8", model=classifier_twin(), calibration=lambda: held_out)
    assert (choice.runtime, choice.precision) == ("openvino", "int8"), choice.detail
    assert "heldout_images 12, heldout_accuracy_fp32 1, heldout_accuracy 1" in choice.precision_detail


def test_int8_without_calibration_images_serves_fp32_and_says_how_to_get_them():
    choice = choose("int8", model=conv_twin(), calibration=lambda: (None,))
    assert (choice.runtime, choice.precision) == ("openvino", "fp32")
    assert "int8 asked, fp32 used: the version has no calibration images (export with --calibration DIR)" in (
        choice.precision_detail
    )


def test_a_precision_openvino_cannot_compile_is_reported_as_a_failure_not_a_refusal(monkeypatch):
    compile_session = openvino_twin.new_session

    def new_session(model, threads, precision):
        if precision == "bf16":
            raise TwinUnusable("OpenVINO cannot run the twin: no bf16 kernel (test)")
        return compile_session(model, threads, precision)

    monkeypatch.setattr(openvino_twin, "bf16_support", lambda: "")
    monkeypatch.setattr(openvino_twin, "new_session", new_session)
    choice = choose("bf16")
    assert (choice.runtime, choice.precision) == ("openvino", "fp32")
    assert (
        "bf16 failed, fp32 used: OpenVINO cannot run the twin: no bf16 kernel (test)"
        in choice.precision_detail
    )


def test_a_candidate_failing_on_the_warm_up_batch_is_dropped_not_the_version(monkeypatch):
    monkeypatch.setattr(openvino_twin, "bf16_support", lambda: "this CPU has no bf16 instructions (test)")
    seen = []

    def run_onnx(session, output):
        seen.append(session)
        if len(seen) == 1:  # the first candidate timed: int8
            raise RuntimeError("infer failed (test)")

    choice = choose("auto", model=conv_twin(), calibration=calibration_pixels, run_onnx=run_onnx)
    assert (choice.runtime, choice.precision) == ("openvino", "fp32"), choice.detail
    assert "int8 failed on the warm-up batch: RuntimeError" in choice.precision_detail


def test_precision_auto_times_every_passing_precision_and_keeps_the_fastest(monkeypatch):
    monkeypatch.setattr(openvino_twin, "bf16_support", lambda: "this CPU has no bf16 instructions (test)")
    timed = []

    def best_of_rounds(calls):
        timed.append(len(calls))
        return [0.004, 0.009][: len(calls)]  # int8 (the first candidate) faster than fp32

    monkeypatch.setattr(rt, "best_of_rounds", best_of_rounds)
    choice = choose("auto", model=conv_twin(), calibration=calibration_pixels, run_onnx=lambda *a: None)
    assert timed == [2] and (choice.runtime, choice.precision) == ("openvino", "int8")
    assert "precision auto, warm-up batch of 8: int8 4.0 ms, fp32 9.0 ms" in choice.precision_detail
    assert "bf16 not used: this CPU has no bf16 instructions (test)" in choice.precision_detail


def test_runtime_auto_with_a_reduced_precision_times_openvino_beside_both_runtimes(monkeypatch):
    monkeypatch.setattr(openvino_twin, "bf16_support", lambda: "this CPU has no bf16 instructions (test)")
    for seconds, expected in (
        ([0.02, 0.05, 0.01], ("openvino", "int8")),
        ([0.02, 0.05, 0.03], ("onnxruntime", "fp32")),
    ):
        monkeypatch.setattr(rt, "best_of_rounds", lambda calls, s=seconds: s[: len(calls)])
        choice = choose(
            "auto",
            model=conv_twin(),
            calibration=calibration_pixels,
            runtime="auto",
            run_tensorflow=lambda output: None,
            run_onnx=lambda session, output: None,
        )
        assert (choice.runtime, choice.precision) == expected, choice.detail
        onnx, int8 = (f"{s * 1000:.1f} ms" for s in (seconds[0], seconds[2]))
        timings = f"onnxruntime {onnx}, tensorflow 50.0 ms, openvino int8 {int8}"
        assert f"auto: warm-up batch of 8: {timings}" in choice.detail


def test_runtime_auto_at_fp32_never_compiles_openvino(monkeypatch):
    """The default: OpenVINO fp32 ran 0.72-1.00x ONNX Runtime here (bench/README.md); not timed."""
    monkeypatch.setattr(openvino_twin, "new_session", lambda *args: pytest.fail("OpenVINO compiled"))
    choice = choose(
        "fp32", model=conv_twin(), runtime="auto", run_tensorflow=lambda o: None, run_onnx=lambda s, o: None
    )
    assert choice.runtime in ("onnxruntime", "tensorflow") and choice.precision_detail == ""


def test_precision_is_a_checked_setting_overridable_per_model(tmp_path):
    settings = ServerSettings(
        model_root=tmp_path, runtime="openvino", precision="bf16", models={"m": ModelConfig(precision="fp32")}
    )
    assert (settings.precision_for("m"), settings.precision_for("other")) == ("fp32", "bf16")
    with pytest.raises(SettingsError, match="precision must be one of fp32, bf16, int8, auto"):
        ServerSettings(model_root=tmp_path, precision="fp16")
    with pytest.raises(SettingsError, match="precision 'fp16'; expected one of fp32, bf16, int8, auto"):
        ModelConfig(precision="fp16")


# --- served: a real network through the doors ----------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """MobileNetV2 (64x64, varied BatchNorm, its twin and calibration photos exported) as ``mnv2`` on
    OpenVINO bf16 (fp32 where the CPU has no bf16), as ``mnv2.tf`` on TensorFlow, and as ``mnv2.int8``
    at int8 (its random weights give near-uniform probabilities, whose top class int8 changes: the gate
    refuses it)."""
    import shutil

    from tests.server.runtime.varied import export_varied
    from tests.servers import InProcessServer, test_settings

    root = tmp_path_factory.mktemp("openvino-models")
    photos = tmp_path_factory.mktemp("calibration")
    for index, name in enumerate(("chelsea", "coffee", "astronaut", "rocket")):
        (photos / f"{index}.jpg").write_bytes(encode(photo(name), "JPEG", quality=90))
    export_varied(root, "mobilenet_v2_keras", 64, seed=5, calibration=str(photos))
    shutil.move(root / "mobilenet_v2_keras", root / "mnv2")
    shutil.copytree(root / "mnv2", root / "mnv2.tf")
    shutil.copytree(root / "mnv2", root / "mnv2.int8")
    models = {"mnv2.tf": ModelConfig(runtime="tensorflow"), "mnv2.int8": ModelConfig(precision="int8")}
    settings = test_settings(root, runtime="openvino", precision="bf16", models=models, metrics_port=0)
    running = InProcessServer(settings).start(timeout=600)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(served):
    with grpc.insecure_channel(served.address) as channel:
        yield pb_grpc.ImageModelServiceStub(channel)


def images() -> list[bytes]:
    return [encode(photo(name), "JPEG", quality=92) for name in ("chelsea", "coffee")]


def test_a_served_version_on_openvino_answers_like_tensorflow(stub):
    status = stub.GetModelStatus(pb.GetModelStatusRequest(name="mnv2"), timeout=30).versions[0]
    precision = "bf16" if HAS_BF16 else "fp32"
    available = pb.ModelVersionStatus.AVAILABLE
    assert (status.state, status.runtime) == (available, "openvino"), status.runtime_detail
    assert f"precision {precision}" in status.runtime_detail, status.runtime_detail
    assert "twin exported with the version" in status.runtime_detail

    def answers(name: str) -> tuple[np.ndarray, list[int]]:
        model = pb.ModelSpec(name=name)
        response = stub.ExtractFeatures(pb.ExtractFeaturesRequest(model=model, images=images()), timeout=60)
        features = np.array([list(vector.values) for vector in response.features], np.float32)
        classified = stub.Classify(pb.ClassifyRequest(model=model, images=images(), top_k=1), timeout=60)
        return features, [result.predictions[0].class_id for result in classified.results]

    (mine, my_top), (theirs, their_top) = answers("mnv2"), answers("mnv2.tf")
    assert status.precision == precision
    assert (
        status.precision_detail.startswith(f"{precision} (")
        if HAS_BF16
        else "bf16 asked" in status.precision_detail
    )
    cosine = (mine * theirs).sum(axis=1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= openvino_twin.MIN_FEATURE_COSINE, cosine
    assert my_top == their_top
    if precision == "fp32":  # every twin's fidelity promise (docs/runtime.md)
        error = np.abs(mine - theirs).max(axis=1) / np.abs(theirs).max(axis=1)
        assert error.max() <= 1e-5, error


def test_status_and_metrics_show_the_precision_and_the_gate_that_refused_int8(served, stub):
    from tests.server.test_observability import scrape, value

    status = stub.GetModelStatus(pb.GetModelStatusRequest(name="mnv2.int8"), timeout=30).versions[0]
    assert (status.runtime, status.precision) == ("openvino", "fp32"), status.precision_detail
    assert re.search(
        r"int8 failed its gate against fp32, fp32 used: top-1 agreement", status.precision_detail
    )
    stub.Classify(pb.ClassifyRequest(model=pb.ModelSpec(name="mnv2"), images=images()), timeout=60)
    samples = scrape(served)
    precision = "bf16" if HAS_BF16 else "fp32"
    call = dict(model="mnv2", kind="classify", runtime="openvino", precision=precision)
    assert value(samples, "imageserve_model_duration_seconds_count", **call) >= 1


def test_fine_tuning_extracts_the_features_the_base_serves_at_its_precision(served, stub):
    """A head is trained on the base's features at the base's precision (the features it is served with)."""
    from server.finetune.trainer import FrozenBase

    status = stub.GetModelStatus(pb.GetModelStatusRequest(name="mnv2"), timeout=30).versions[0]
    base = FrozenBase(str(served.settings.model_root / "mnv2" / "1"), 64, None, 1, status.runtime, "bf16")
    assert (base.runtime, base.precision) == (status.runtime, status.precision)
    request = pb.ExtractFeaturesRequest(model=pb.ModelSpec(name="mnv2"), images=images())
    response = stub.ExtractFeatures(request, timeout=60)
    served_features = np.array([list(vector.values) for vector in response.features], np.float32)
    np.testing.assert_allclose(base.features(images()), served_features, rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # a whole job (38 s); the fast tier checks the extraction itself (the test above)
def test_a_fine_tuning_job_on_a_reduced_precision_base_trains_on_the_features_it_serves(served, stub):
    """StartFineTune on ``mnv2`` (served on OpenVINO bf16): the job extracts on the base's runtime and
    precision (what the loaded version chose), says so, and records it in the new version."""
    import json

    from tests.server.finetune.helpers import load_digit_images, upload, wait_done

    digits = load_digit_images().subset(per_class=8, classes=("0", "1", "2"))
    dataset = upload(stub, *digits, name="digits-on-bf16")
    request = pb.StartFineTuneRequest(
        base_model=pb.ModelSpec(name="mnv2"),
        output_model="tuned_on_bf16",
        dataset_id=dataset.dataset_id,
        # Random-weight base: the job is about where features come from; the gate is set here.
        hyperparameters=pb.FineTuneHyperparameters(epochs=3, hidden_units=32, min_val_accuracy=0.0),
    )
    job, events = wait_done(stub, stub.StartFineTune(request, timeout=60).job_id)
    assert job.state == pb.SUCCEEDED, job.error
    precision = "bf16" if HAS_BF16 else "fp32"
    said = f"the base's features on openvino at {precision}, as it serves them"
    assert any(event.message == said for event in events), [event.message for event in events]
    version = served.settings.model_root / "tuned_on_bf16" / str(job.output_version)
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["training"]["base_features"] == {"runtime": "openvino", "precision": precision}
