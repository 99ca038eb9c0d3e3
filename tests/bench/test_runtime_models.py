"""The benchmark's last steps, run for real on small inputs: the TensorFlow vs ONNX Runtime comparison of
``bench.runtime_models`` on a VGG16 with its head (a features-only twin, like the default vgg16), and
``bench.serving`` keeping what it measured when a step fails (a crash in its last step once lost a
65-minute run)."""

from __future__ import annotations

import json

import pytest

import bench.common
from bench import runtime_models, serving
from bench.report import report_runtime_models

pytestmark = pytest.mark.timeout(900)


@pytest.mark.slow  # VGG16 with its head on both runtimes
def test_vgg16_with_its_head_is_compared_on_its_features(tmp_path, monkeypatch, capsys):
    # VGG16 with its head at 32x32: 37.7 M parameters, over the twin's limit; its features fit.
    monkeypatch.setattr(runtime_models, "export_root", lambda size: tmp_path / str(size))
    result = runtime_models.measure("vgg16", 32, 0.2)

    assert (result["measured"], result["kind"]) == ("with its head", "features")
    assert result["with_head"]["onnx_kinds"] == ["features"]
    assert result["with_head"]["runtime_detail"].startswith("features on onnxruntime, classify on tensorflow")
    for runtime in ("tensorflow", "onnxruntime"):
        assert result["runtimes"][runtime]["best_images_per_s"] > 0
        assert result["feature_extraction"]["images_per_s"][runtime] > 0
    report_runtime_models({"vgg16:32": result})
    out = capsys.readouterr().out
    assert "with its head: features on onnxruntime, classify on tensorflow" in out
    assert "measured: with its head, the features function" in out
    assert "fine-tuning feature extraction (with its head)" in out


def test_a_failing_step_is_recorded_and_the_run_still_writes_its_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    code = serving.main(["--quick", "--models", "", "--runtime-models", "no_such_model:32"])

    assert code == 1
    (written,) = tmp_path.glob("serving-*.json")
    results = json.loads(written.read_text())
    assert "no_such_model" in results["errors"]["runtime_models no_such_model:32"]
    missed = results["targets_missed"]
    assert any(line.startswith("step runtime_models no_such_model:32 failed") for line in missed), missed
    assert "targets missed" in capsys.readouterr().out
