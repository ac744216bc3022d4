"""``edgefleet score batch`` and ``edgefleet capture``, against a real fleet server over HTTP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgefleet_cli.commands import score
from edgefleet_cli.main import app
from fleet_protocol.captures import encode_capture
from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from fleet_server.store import captures as capture_store
from tests.server.builders import tiny_onnx

TOKEN = "offline-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import os

    os.environ["EDGEFLEET_ADMIN_TOKEN"] = TOKEN
    try:
        with ServerThread(ServerConfig(data_dir=tmp_path_factory.mktemp("srv"), port=0,
                                       embedded_broker_port=0)) as running:
            yield running
    finally:
        os.environ.pop("EDGEFLEET_ADMIN_TOKEN", None)


@pytest.fixture(scope="module")
def scaler(server):
    import httpx

    httpx.post(f"{server.url}/api/models/scaler", files={"file": ("m.onnx", tiny_onnx(2.0))},
               headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
    return "scaler"


def run(server, *args: str):
    result = CliRunner().invoke(app, [*args, "--server", server.url, "--token", TOKEN], catch_exceptions=False)
    return result


def test_csv_is_scored_in_chunks_and_the_summary_says_where(server, scaler, tmp_path):
    source = tmp_path / "in.csv"
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    source.write_text("a,b,c,d\n" + "\n".join(",".join(str(v) for v in row) for row in x))
    out = tmp_path / "out.csv"
    result = run(server, "score", "batch", scaler, "--input", str(source), "--output", str(out), "--chunk-rows", "3",
                 "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["rows"], summary["errors"], summary["scored_on"]) == (10, 0, {"cloud": 10})
    lines = out.read_text().splitlines()
    assert lines[0] == "y_0,y_1,y_2,y_3" and len(lines) == 11
    assert np.allclose(np.loadtxt(out, delimiter=",", skiprows=1), x * 2)
    assert not (tmp_path / "out.csv.progress.json").exists() and not (tmp_path / "out.csv.parts").exists()


def test_an_interrupted_run_continues_where_it_stopped(server, scaler, tmp_path, monkeypatch):
    source, out = tmp_path / "in.npy", tmp_path / "out.npy"
    x = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    np.save(source, x)
    calls = []
    real_call = score._call

    def counting(http, method, path, **kwargs):
        calls.append(path)
        if method == "POST" and len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C during the third chunk
        return real_call(http, method, path, **kwargs)

    monkeypatch.setattr(score, "_call", counting)
    interrupted = run(server, "score", "batch", scaler, "--input", str(source), "--output", str(out),
                      "--chunk-rows", "5")
    assert interrupted.exit_code != 0
    assert (tmp_path / "out.npy.progress.json").exists() and not out.exists()
    calls.clear()
    result = run(server, "score", "batch", scaler, "--input", str(source), "--output", str(out), "--chunk-rows", "5")
    assert result.exit_code == 0, result.output
    assert sum(path.endswith("/infer") for path in calls) == 2, "only the two chunks not done are scored again"
    assert np.allclose(np.load(out), x * 2)


def test_failed_chunks_are_reported_and_the_output_is_not_written(server, scaler, tmp_path):
    source, out = tmp_path / "in.csv", tmp_path / "out.npy"
    source.write_text("1,2,3\n4,5,6\n")  # the model wants 4 columns
    result = run(server, "score", "batch", scaler, "--input", str(source), "--output", str(out), "--json")
    assert result.exit_code == 1
    summary = json.loads(result.output)
    assert summary["errors"] == 2 and "shape" in summary["first_error"] and not out.exists()


def test_captures_are_listed_and_downloaded_per_model_version(server, tmp_path):
    data = encode_capture(model="scaler", version=1, accelerator="CPUExecutionProvider", scored_on="local",
                          inputs={"x": np.array([[1.5, 2, 3, 4]], np.float32)},
                          outputs={"y": np.array([[3.0, 4, 6, 8]], np.float32)})
    other = {**data, "version": 2}
    capture_store.insert_captures(db=server.fleet.db, device_id="dev-1", outbox_id="ob-1", received="now",
                                  records=[{"seq": 1, "ts": "t1", "data": data}, {"seq": 2, "ts": "t2", "data": other}])
    listed = run(server, "capture", "list", "--model", "scaler", "--version", "1", "--json")
    assert [c["seq"] for c in json.loads(listed.output)] == [1]
    out = tmp_path / "captures.jsonl"
    result = run(server, "capture", "download", "--model", "scaler", "--version", "1", "--output", str(out))
    assert result.exit_code == 0, result.output
    (line,) = out.read_text().splitlines()
    capture = json.loads(line)
    assert capture["inputs"] == [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.5, 2.0, 3.0, 4.0]}]
    assert capture["device_id"] == "dev-1" and capture["accelerator"] == "CPUExecutionProvider"


def test_the_hard_examples_are_listed_and_downloaded_by_their_reason(server, tmp_path):
    sampled = encode_capture(model="scaler", version=1, accelerator="CPUExecutionProvider", scored_on="local",
                             inputs={"x": np.ones((1, 4), np.float32)}, outputs={})
    hard = {**sampled, "scored_on": "cloud", "reason": "low_confidence"}
    capture_store.insert_captures(db=server.fleet.db, device_id="dev-2", outbox_id="ob-1", received="now",
                                  records=[{"seq": 1, "ts": "t1", "data": sampled}, {"seq": 2, "ts": "t2", "data": hard}])
    listed = run(server, "capture", "list", "--reason", "low_confidence", "--device", "dev-2")
    assert "low_confidence" in listed.output and "sampled" not in listed.output, listed.output
    out = tmp_path / "hard.jsonl"
    result = run(server, "capture", "download", "--reason", "low_confidence", "--output", str(out), "--json")
    assert result.exit_code == 0 and json.loads(result.output)["captures"] == 1, result.output
    assert [(c["device_id"], c["seq"]) for c in map(json.loads, out.read_text().splitlines())] == [("dev-2", 2)]
