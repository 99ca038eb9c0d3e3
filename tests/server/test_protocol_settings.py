"""The REST port setting and the tracing switch, without a server."""

from __future__ import annotations

import pytest

from server import tracing
from server.settings import ServerSettings, SettingsError, load_settings


def test_rest_is_off_by_default_and_set_like_any_setting():
    assert ServerSettings().rest_port == 0
    assert load_settings(["--rest-port", "8502"]).rest_port == 8502
    assert load_settings([], {"IMAGESERVE_REST_PORT": "8503"}).rest_port == 8503


def test_rest_port_clashing_with_metrics_says_how_to_move_metrics():
    with pytest.raises(SettingsError, match="--rest-port 8501 --metrics-port 9091"):
        load_settings(["--rest-port", "8501"])  # metrics_port defaults to 8501
    assert load_settings(["--rest-port", "8501", "--metrics-port", "9091"]).rest_port == 8501
    with pytest.raises(SettingsError):
        ServerSettings(port=8500, rest_port=8500)


def test_tracing_off_hands_out_a_shared_no_op():
    assert not tracing.enabled()
    assert tracing.span("decode") is tracing.server_span("x", dict, {}) is tracing._NOOP
    assert tracing.current_context() is None and tracing.current_ids() is None
    assert tracing.configure_from_environment({}) is False and not tracing.enabled()
