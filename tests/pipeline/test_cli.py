"""The pipeline from the CLI against a running server: convert, optimize, profile, show, gated deploy, image."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgefleet_cli.main import app
from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from fleet_server.store import devices as device_store

NOW = "2026-01-01T00:00:00Z"


@pytest.fixture
def server(tmp_path):
    running = ServerThread(ServerConfig(data_dir=tmp_path / "server", port=0, embedded_broker_port=0)).start()
    yield running
    running.stop()


def edgefleet(server, *args: str, exit_code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), env={"EDGEFLEET_SERVER": server.url,
                                                      "EDGEFLEET_TOKEN": server.admin_token, "COLUMNS": "200"})
    output = result.stdout + result.stderr + (str(result.exception) if result.exception else "")  # CliError: main()
    assert result.exit_code == exit_code, f"edgefleet {' '.join(args)}:\n{output}"
    return output


def test_convert_optimize_profile_and_gated_deploy_from_the_cli(server, tmp_path, mlp_pickle, iris):
    (tmp_path / "m.pkl").write_bytes(mlp_pickle)
    np.save(tmp_path / "x.npy", iris[0])
    np.save(tmp_path / "one.npy", iris[0][:1])
    assert "registered iris-mlp:1 (onnx" in edgefleet(server, "model", "register", str(tmp_path / "m.pkl"),
                                                      "--name", "iris-mlp", "--convert")
    out = edgefleet(server, "model", "optimize", "iris-mlp:1", "--quantize", "int8",
                    "--sample", str(tmp_path / "x.npy"))
    assert "registered iris-mlp:2 (optimized_from iris-mlp:1, basic+int8-dynamic)" in out
    assert "output label: agreement" in out
    assert "CPUExecutionProvider" in edgefleet(server, "model", "profile", "iris-mlp:2", "--sample",
                                               str(tmp_path / "one.npy"), "--runs", "20")
    shown = edgefleet(server, "model", "show", "iris-mlp:2")
    assert "Profile (20 runs, batch 1" in shown and "p95 ms" in shown

    import httpx

    headers = {"Authorization": f"Bearer {server.admin_token}"}
    assert httpx.post(f"{server.url}/api/bundles/from-model", json={"model": "iris-mlp", "version": 2},
                      headers=headers).status_code == 201
    device_store.record_status(db=server.fleet.db, device_id="coral-01", status="online", seen=NOW,
                               profile="coral-dev-board", agent_version="t", scoring_url=None, device_tags={},
                               created=NOW)
    refused = edgefleet(server, "deploy", "create", "iris-mlp", "--device", "coral-01", "--max-p95-ms", "0.0001",
                        exit_code=1)
    assert "device coral-01 (coral-dev-board): expected p95" in refused
    rollout = edgefleet(server, "deploy", "rollout", "create", "iris-mlp", "--device", "coral-01",
                        "--max-p95-ms", "1000", "--max-memory-mb", "1000", "--json")
    assert json.loads(rollout)["deployment"]["version"] == 1


def test_module_build_image_writes_the_context_even_without_an_engine(server, tmp_path):
    from benchmarks.models import random_forest_onnx
    from fleet_server.container import EngineUnavailable, build_image

    folder = tmp_path / "forest"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(random_forest_onnx(trees=3)[0])
    (folder / "module.json").write_text(json.dumps({"name": "forest", "runtime": "onnx", "model": "model.onnx",
                                                    "files": ["model.onnx"]}))
    try:
        build_image(tmp_path, tag="probe")
        engine = True
    except EngineUnavailable:
        engine = False
    context = tmp_path / "ctx"
    out = edgefleet(server, "module", "build", str(folder), "--image", "--context-out", str(context),
                    exit_code=0 if engine else 1)
    assert "built forest v1" in out and "build context written to" in out
    assert (context / "bundle.efb").is_file() and (context / "Dockerfile").is_file()
    if not engine:
        assert "no Docker engine is reachable" in out


def test_calibration_without_int8_names_the_cli_flag_to_add(server, tmp_path, mlp_pickle, iris):
    (tmp_path / "m.pkl").write_bytes(mlp_pickle)
    np.save(tmp_path / "c.npy", iris[0][::3])
    edgefleet(server, "model", "register", str(tmp_path / "m.pkl"), "--name", "iris-mlp", "--convert")
    out = edgefleet(server, "model", "optimize", "iris-mlp:1", "--calibration", str(tmp_path / "c.npy"), exit_code=1)
    assert "calibration data is only used for int8 quantisation: add --quantize int8 (API: quantize=int8)" in out
    assert len(out.strip().splitlines()) == 1, out


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--level", "fast", "optimisation level --level (API: level) must be one of basic, extended, got 'fast'"),
    ("--quantize", "int4", "--quantize (API: quantize) must be one of int8, got 'int4'"),
])
def test_bad_level_or_quantize_names_the_cli_flag(server, tmp_path, mlp_pickle, flag, value, expected):
    (tmp_path / "m.pkl").write_bytes(mlp_pickle)
    edgefleet(server, "model", "register", str(tmp_path / "m.pkl"), "--name", "iris-mlp", "--convert")
    out = edgefleet(server, "model", "optimize", "iris-mlp:1", flag, value, exit_code=1)
    assert expected in out
    assert len(out.strip().splitlines()) == 1, out
