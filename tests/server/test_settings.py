"""Settings come from defaults, a TOML file, environment variables and flags, in that order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.settings import ServerSettings, SettingsError, load_settings


def test_defaults_are_what_a_newcomer_expects():
    settings = load_settings([], environ={})
    assert settings == ServerSettings()
    assert (settings.port, settings.poll_interval_s, settings.max_message_bytes) == (
        8500,
        2.0,
        64 * 1024 * 1024,
    )
    assert settings.model_config("anything").version_policy == "latest"
    assert settings.model_config("anything").latest == 1


def test_flags_beat_environment_beat_file(tmp_path):
    config = tmp_path / "imageserve.toml"
    config.write_text(
        'port = 9000\nmax_batch_size = 4\nbatching = false\nmodel_root = "/from/file"\n'
        "[models.vgg16]\nversion_policy = 'all'\nversion_labels = { stable = 2 }\n"
    )
    environ = {"IMAGESERVE_CONFIG": str(config), "IMAGESERVE_PORT": "9100", "IMAGESERVE_MAX_BATCH_SIZE": "6"}
    settings = load_settings(["--port", "9200", "--batching"], environ=environ)
    assert settings.port == 9200  # flag
    assert settings.max_batch_size == 6  # environment
    assert settings.batching is True  # flag over file
    assert settings.model_root == Path("/from/file")  # file
    assert settings.model_config("vgg16").version_labels == {"stable": 2}
    assert settings.model_config("vgg16").version_policy == "all"


@pytest.mark.parametrize(
    "argv, environ, message",
    [
        (["--port", "eighty"], {}, "port (from command line)"),
        ([], {"IMAGESERVE_BATCHING": "maybe"}, "batching (from environment): not a boolean"),
        (["--max-batch-size", "0"], {}, "max_batch_size must be >= 1"),
        (["--tls-cert", "cert.pem"], {}, "tls_cert and tls_key go together"),
        ([], {"IMAGESERVE_FINETUNE_STORE": "mysql://db/jobs"}, "finetune_store must be empty (SQLite in"),
        (["--finetune-lease-s", "0.5"], {}, "finetune_lease_s must be >= 1"),
    ],
)
def test_bad_values_name_the_setting(argv, environ, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(argv, environ=environ)


def test_bad_config_file(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[models.vgg16]\nversion_policy = 'newest'\n")
    with pytest.raises(SettingsError, match=r"\[models.vgg16\].*version_policy 'newest'"):
        load_settings(["--config", str(config)], environ={})
    config.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="unknown settings \\['prot'\\]"):
        load_settings(["--config", str(config)], environ={})


def test_help_documents_every_setting_and_bad_settings_exit_2():
    help_text = subprocess.run(
        [sys.executable, "-m", "server", "--help"], capture_output=True, text=True, timeout=120
    )
    assert help_text.returncode == 0
    for flag in ("--model-root", "--poll-interval-s", "--max-batch-size", "--batch-timeout-ms", "--tls-cert"):
        assert flag in help_text.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "server", "--port", "x"], capture_output=True, text=True, timeout=120
    )
    assert (
        bad.returncode == 2
        and "error: port (from command line)" in bad.stderr
        and "Traceback" not in bad.stderr
    )


def test_setting_mistakes_are_reported_before_tensorflow_loads():
    probe = (
        "import sys; from server.cli import main; print(main(['--port', 'x']), 'tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stderr
