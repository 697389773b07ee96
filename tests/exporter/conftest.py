"""Fixtures shared by the OTLP sink tests."""

from __future__ import annotations

import pytest

from tests.otlp_receiver import OtlpReceiver


@pytest.fixture
def receiver(otlp_receiver: OtlpReceiver) -> OtlpReceiver:
    """The OTLP gRPC receiver."""
    return otlp_receiver


@pytest.fixture(params=[pytest.param("grpc", id="grpc"), pytest.param("http", id="http")])
def receiver_and_protocol(request: pytest.FixtureRequest) -> tuple[OtlpReceiver, str]:
    """The OTLP receiver for each protocol, and the protocol."""
    fixture = "otlp_receiver" if request.param == "grpc" else "otlp_http_receiver"
    chosen: OtlpReceiver = request.getfixturevalue(fixture)
    return chosen, request.param
