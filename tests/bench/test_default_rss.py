"""The benchmark's plain-server pieces: ``python -m server`` started by bench itself, a short load
over the models, the runtime each model ended on, and how the new measurements are reported."""

from __future__ import annotations

import asyncio

import pytest

from bench.processes import Server
from bench.report import report_default_rss, report_runtime_models
from bench.scenarios import _runtimes, _short_load
from tests.conftest import CLASSIFIER, FEATURES


@pytest.mark.slow  # the default models in a plain server
def test_a_plain_server_serves_a_short_load_and_reports_each_models_runtime(real_model_root):
    model_root = real_model_root  # `python -m server`: real networks
    from bench.common import real_jpegs

    server = Server(model_root, "--runtime", "onnxruntime", timeout=300)
    try:
        assert server.cold_start_s > 0 and server.rss_mib() > 100
        errors = asyncio.run(
            _short_load(server.address, [CLASSIFIER], real_jpegs(), requests=12, concurrency=3)
        )
        assert errors == 0
        runtimes = _runtimes(server.address)
    finally:
        server.stop()
    assert server.process.returncode is not None  # stopped, not left running
    assert set(runtimes) == {f"{CLASSIFIER} v1", f"{FEATURES} v1"}
    for status in runtimes.values():
        assert status["runtime"] == "onnxruntime"
        assert "runtime = onnxruntime (setting)" in status["runtime_detail"]


def test_the_report_names_each_runtime_and_a_model_that_stays_on_tensorflow(capsys):
    def entry(setting: str, vgg_runtime: str) -> dict:
        return {
            "runtime_setting": setting, "rss_serving_mib": 900.0, "rss_after_load_mib": 1000.0, "errors": 0,
            "startup_s": 20.0, "runtimes": {
                "vgg16 v1": {
                    "runtime": vgg_runtime, "runtime_detail": "no usable ONNX twin: 138 M parameters",
                },
                "efficientnet_lite0 v1": {
                    "runtime": setting.replace("auto", "onnxruntime"), "runtime_detail": "",
                },
            },
        }  # fmt: skip

    rss = {"models": ["vgg16@224"], "requests": 200, "concurrency": 8,
           "before": entry("tensorflow", "tensorflow"), "after": entry("auto", "tensorflow")}  # fmt: skip
    report_default_rss(rss)
    rates = {"1x1": [10.0, 12.0]}
    timed = {"single_p50_ms": 30.0, "images_per_s_by_callers_x_batch": rates, "best_images_per_s": 12.0,
             "best_callers_x_batch": "1x1"}  # fmt: skip
    report_runtime_models({"vgg16:224": {
        "weights": "random", "with_head": {"runtime": "tensorflow", "runtime_detail": "no usable ONNX twin"},
        "measured": "headless (--no-top)", "kind": "features",
        "runtimes": {"tensorflow": timed, "onnxruntime": timed}, "speedup_best": 1.0, "speedup_single": 1.0,
        "feature_extraction": {"images_per_s": {"tensorflow": 5.0, "onnxruntime": 15.0}, "speedup": 3.0},
    }})  # fmt: skip
    out = capsys.readouterr().out
    assert "before, runtime tensorflow: 900 / 1000 MiB" in out
    assert "efficientnet_lite0 v1 on onnxruntime" in out
    assert "vgg16 v1 stays on tensorflow with runtime auto: no usable ONNX twin: 138 M parameters" in out
    assert "with its head: stays on tensorflow" in out and "measured: headless (--no-top)" in out
    assert "3.00x" in out
