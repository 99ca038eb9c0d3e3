"""A model root given as a URL stays a URL through flags, environment and config file (``Path`` would
fold ``s3://`` into ``s3:/``); a directory stays a Path; a scheme nobody can read is refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import build_parser
from server.settings import SettingsError, load_settings


def test_a_bucket_url_survives_every_settings_source(tmp_path):
    config = tmp_path / "imageserve.toml"
    config.write_text('model_root = "s3://from-file/prefix"\n')
    assert load_settings(["--model-root", "s3://flag/prefix/"]).model_root == "s3://flag/prefix"
    assert (
        load_settings([], environ={"IMAGESERVE_MODEL_ROOT": "memory://env/p"}).model_root == "memory://env/p"
    )
    assert load_settings(["--config", str(config)]).model_root == "s3://from-file/prefix"
    assert load_settings(["--model-root", "models"]).model_root == Path("models")


def test_an_unreadable_scheme_is_refused_with_what_to_do():
    with pytest.raises(SettingsError, match="fsspec knows no nosuch:// storage"):
        load_settings(["--model-root", "nosuch://bucket/prefix"])


def test_the_exporter_takes_a_bucket_as_its_output():
    assert (
        build_parser().parse_args(["vgg16", "--output", "s3://bucket/prefix"]).output == "s3://bucket/prefix"
    )
    assert build_parser().parse_args(["vgg16", "--output", "out"]).output == Path("out")


def test_the_exporter_refuses_an_unreadable_bucket_before_building_anything(capsys):
    from exporter.cli import main

    assert main(["vgg16", "--weights", "random", "--output", "nosuch://bucket/prefix"]) == 2
    assert (
        "error: --output nosuch://bucket/prefix: fsspec knows no nosuch:// storage" in capsys.readouterr().err
    )


def test_the_exporter_refuses_a_missing_bucket_before_building_anything(s3_endpoint, capsys):
    """The bucket does not exist: a user error in about a second, with what to do (it took ~25 s of
    building and verifying before)."""
    import time

    from exporter.cli import main

    started = time.monotonic()
    assert main(["vgg16", "--weights", "random", "--output", "s3://no-such-bucket-here/models"]) == 2
    assert time.monotonic() - started < 10
    error = capsys.readouterr().err
    assert "the bucket s3://no-such-bucket-here does not exist: create it first" in error
    assert "aws s3 mb s3://no-such-bucket-here" in error
