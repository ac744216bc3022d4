"""Schemathesis against the fleet server's OpenAPI: no operation answers a 5xx to generated input.

A real server (with a real broker) and the ``st`` command line of schemathesis run against
``/openapi.json`` with a valid admin token, a fixed seed and a few examples per operation, so the run stays
well under a minute. Only ``not_a_server_error`` is checked: schema conformance of 4xx bodies is the API
suite's business. The JUnit report lands in the test's folder for reading a failure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fleet import ADMIN_TOKEN, start_server

from .conftest import SEED


def schemathesis_run(tmp_path: Path, url: str, examples: int) -> subprocess.CompletedProcess:
    st = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    if not Path(st).exists():
        pytest.fail("schemathesis is not installed: pip install -e '.[dev]'")
    return subprocess.run(
        [st, "run", f"{url}/openapi.json", "--url", url, "-H", f"Authorization: Bearer {ADMIN_TOKEN}",
         "--checks", "not_a_server_error", "--max-examples", str(examples), "--seed", str(SEED),
         "--generation-deterministic", "--request-timeout", "20", "--report", "junit",
         "--report-junit-path", str(tmp_path / "schemathesis.xml")],
        capture_output=True, text=True, timeout=850)


@pytest.fixture
def server_url(tmp_path, mosquitto):
    server = start_server(tmp_path, mosquitto.url)
    yield server.url
    server.stop()


def test_no_operation_of_the_server_api_answers_generated_input_with_a_5xx(tmp_path, server_url):
    result = schemathesis_run(tmp_path, server_url, examples=5)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_no_operation_of_the_server_api_answers_many_generated_inputs_with_a_5xx(tmp_path, server_url):
    result = schemathesis_run(tmp_path, server_url, examples=200)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
