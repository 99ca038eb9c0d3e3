"""The REST port setting and the tracing switch, without a server."""

from __future__ import annotations

import pytest

from server import tracing
from server.settings import ServerSettings, SettingsError, load_settings


def test_rest_is_off_by_default_and_set_like_any_setting():
    assert ServerSettings().rest_port is None
    assert load_settings(["--rest-port", "8502"]).rest_port == 8502
    assert load_settings([], {"IMAGESERVE_REST_PORT": "8503"}).rest_port == 8503


def test_rest_and_metrics_ports_are_off_or_a_port_and_0_picks_a_free_one():
    """Like the gRPC port, 0 binds a free port (logged); ``off`` turns the door off."""
    assert load_settings(["--rest-port", "0", "--metrics-port", "0"]).rest_port == 0
    settings = load_settings(["--metrics-port", "off"], {"IMAGESERVE_REST_PORT": "OFF"})
    assert settings.metrics_port is None and settings.rest_port is None
    assert ServerSettings().metrics_port == 8510
    with pytest.raises(SettingsError, match="metrics_port must be >= 0, or off"):
        ServerSettings(metrics_port=-1)
    with pytest.raises(SettingsError, match="rest_port .*invalid literal"):
        load_settings(["--rest-port", "none of it"])


def test_rest_port_clashing_with_metrics_is_refused_and_8501_is_free_by_default():
    # metrics_port moved to 8510 so that TF Serving's REST port needs no other change.
    assert load_settings(["--rest-port", "8501"]).rest_port == 8501
    with pytest.raises(
        SettingsError, match="give each its own port .*8501 is free with the default metrics_port 8510"
    ):
        load_settings(["--rest-port", "8510"])  # the metrics port
    with pytest.raises(SettingsError, match="give each its own port"):
        load_settings(["--rest-port", "9000", "--metrics-port", "9000"])
    with pytest.raises(SettingsError):
        ServerSettings(port=8500, rest_port=8500)


def test_tracing_off_hands_out_a_shared_no_op():
    assert not tracing.enabled()
    assert tracing.span("decode") is tracing.server_span("x", dict, {}) is tracing._NOOP
    assert tracing.current_context() is None and tracing.current_ids() is None
    assert tracing.configure_from_environment({}) is False and not tracing.enabled()
