"""Scraping a service's real telemetry endpoint: its port from its log line,
the exposition parsed by prometheus_client's own parser."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServiceProcess

TELEMETRY_ENV = {"OCELLUS_METRICS_PORT": "0", "OCELLUS_METRICS_ADDRESS": "127.0.0.1"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_port(service: ServiceProcess, timeout: float = 30.0) -> int:
    """The port the service logged ("metrics serving") when it bound port 0."""
    service.wait_for_log('"metrics serving"', timeout)
    for line in service.log().splitlines():
        if '"metrics serving"' in line:
            return int(json.loads(line)["port"])
    pytest.fail(f"{service.name}: no metrics port in its log")


def fetch(port: int, path: str, accept: str = "") -> tuple[int, str, str]:
    """(status, content type, body) of GET http://127.0.0.1:<port><path>."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310 (http, built here)
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:<port><path>."""
    status, _, body = fetch(port, path)
    return status, body


def scrape(port: int) -> Samples:
    status, text = get(port, "/metrics")
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    assert found, f"no {name}{labels} in {sorted({n for n, _ in samples})}"
    return sum(found)


def readiness(port: int) -> tuple[int, dict[str, Any]]:
    status, body = get(port, "/readyz")
    return status, json.loads(body)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last: AssertionError | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except AssertionError as e:  # a series not there yet: nothing counted yet
            last = e
        time.sleep(0.1)
    pytest.fail(f"not within {timeout}s: {what}" + (f" ({last})" if last else ""))
