"""The model and device commands of the CLI, run as ``edgefleet`` processes against a real server.

Each command runs as its own process with stdin not a terminal, as in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .builders import tiny_onnx
from .conftest import ADMIN_TOKEN


def edgefleet(server, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgefleet_cli.main", *args], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=120)


def test_registering_the_same_file_twice_from_the_cli_is_refused_then_warned_with_allow_duplicate(server, tmp_path):
    model = tmp_path / "scaler.onnx"
    model.write_bytes(tiny_onnx())
    assert edgefleet(server, "model", "register", str(model), "--name", "scaler").returncode == 0
    again = edgefleet(server, "model", "register", str(model), "--name", "scaler")
    assert again.returncode == 1
    assert "model scaler:1 already has these exact bytes" in again.stderr and "--allow-duplicate" in again.stderr
    forced = edgefleet(server, "model", "register", str(model), "--name", "scaler", "--allow-duplicate")
    assert forced.returncode == 0, forced.stderr
    assert "registered scaler:2" in forced.stdout
    assert "warning: the same file (sha256 " in forced.stderr and "is already registered as scaler:1" in forced.stderr


def test_model_delete_without_a_terminal_refuses_and_names_yes(server, tmp_path):
    model = tmp_path / "scaler.onnx"
    model.write_bytes(tiny_onnx())
    edgefleet(server, "model", "register", str(model), "--name", "scaler")
    refused = edgefleet(server, "model", "delete", "scaler:1")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: refusing to delete without confirmation: pass --yes"
    assert edgefleet(server, "model", "show", "scaler:1").returncode == 0
    assert edgefleet(server, "model", "delete", "scaler:1", "--yes").returncode == 0


def test_register_with_json_prints_only_the_json_document_on_stdout(server, tmp_path):
    model = tmp_path / "scaler.onnx"
    model.write_bytes(tiny_onnx())
    registered = edgefleet(server, "model", "register", str(model), "--name", "scaler", "--json")
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.startswith("{"), repr(registered.stdout[:40])  # the upload bar went to stdout
    assert json.loads(registered.stdout)["name"] == "scaler"
