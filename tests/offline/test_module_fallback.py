"""A module's cloud fallback answers as the device does, comes back when the device does, and batches keep BYTES.

Real Mosquitto, the real fleet server (HTTP and MQTT) and a real agent in this process, serving the
shipped iris-classifier module (its entry script adds a BYTES output, ``class_name``).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
from typer.testing import CliRunner

from edgefleet_cli.commands import score
from edgefleet_cli.main import app
from fleet_protocol import oip
from tests.offline.fleet import running_fleet, until
from tests.support.entry_scripts import entry_script

IRIS = Path(__file__).resolve().parents[2] / "modules" / "iris-classifier"
SAMPLE = json.loads((IRIS / "sample.json").read_text())

SLOW_WHEN_NEGATIVE = entry_script('''
    if float(inputs["x"][0, 0]) < 0:
        time.sleep(0.2)
    return _model.run(inputs)
''', imports="import time")


def infer(agent, model: str, request: dict) -> httpx.Response:
    return httpx.post(f"{agent.scoring_url}/v2/models/{model}/infer", json=request, timeout=30)


def test_cloud_fallback_of_a_module_runs_its_entry_script_and_answers_with_the_module_name(tmp_path, monkeypatch):
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        fleet.api.post("/api/models/iris-forest", files={"file": ("m.onnx", (IRIS / "model.onnx").read_bytes())})
        fleet.deploy_module(IRIS)  # built from the model registered above: model_ref iris-forest:1
        local = infer(agent, "iris-classifier", SAMPLE)
        cloud = infer(agent, "iris-classifier", {**SAMPLE, "parameters": {"prefer": "cloud"}})
        assert local.status_code == cloud.status_code == 200, cloud.text
        local, cloud = local.json(), cloud.json()
        assert (local["parameters"]["scored_on"], cloud["parameters"]["scored_on"]) == ("local", "cloud")
        assert local["model_name"] == cloud["model_name"] == "iris-classifier"
        assert local["model_version"] == cloud["model_version"] == "1"
        names = [o["name"] for o in local["outputs"]]
        assert "class_name" in names and [o["name"] for o in cloud["outputs"]] == names
        local_out, cloud_out = oip.decode_response(local), oip.decode_response(cloud)
        assert list(cloud_out["class_name"]) == list(local_out["class_name"])
        np.testing.assert_allclose(cloud_out["probabilities"], local_out["probabilities"], rtol=1e-6)

        inputs = oip.decode_request(SAMPLE).inputs
        in_process = agent.infer_with_fallback("iris-classifier", inputs, prefer="cloud")
        assert (in_process.scored_on, in_process.model_name) == ("cloud", "iris-classifier")
        assert sorted(in_process.outputs) == sorted(names)


def test_latency_slo_fallback_comes_back_once_the_device_is_fast_again(tmp_path, monkeypatch):
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        fleet.deploy("slowpoke", {"fallback": {"latency_slo_ms": 50}}, entry_script=SLOW_WHEN_NEGATIVE)
        slow = oip.encode_request({"x": np.full((1, 4), -1, np.float32)})
        fast = oip.encode_request({"x": np.ones((1, 4), np.float32)})
        assert infer(agent, "slowpoke", slow).json()["parameters"]["scored_on"] == "local"
        offloaded = infer(agent, "slowpoke", fast).json()["parameters"]
        assert (offloaded["scored_on"], offloaded["fallback_reason"]) == ("cloud", "latency_over_slo")

        recent: list[str] = []

        def back_home() -> bool:
            recent.append(infer(agent, "slowpoke", fast).json()["parameters"]["scored_on"])
            return recent[-3:] == ["local"] * 3

        until(back_home, "local probes to bring the latency average under the SLO", timeout=60)
        assert "cloud" in recent, "it did go to the cloud while the average was over the SLO"


def test_score_batch_on_an_agent_keeps_a_bytes_output_loadable_without_pickle_across_a_resume(tmp_path,
                                                                                                monkeypatch):
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        fleet.deploy_module(IRIS)
        rows = np.random.default_rng(3).uniform(0.5, 7, size=(9, 4)).astype(np.float32)
        source, out = tmp_path / "flowers.npy", tmp_path / "species.npz"
        np.save(source, rows)
        args = ["score", "batch", "iris-classifier", "--agent", agent.scoring_url, "--input", str(source),
                "--output", str(out), "--chunk-rows", "4"]
        posts = []
        real_call = score._call

        def interrupted(http, method, path, **kwargs):
            if method == "POST":
                posts.append(path)
                if len(posts) == 2:
                    raise KeyboardInterrupt  # Ctrl-C during the second chunk
            return real_call(http, method, path, **kwargs)

        monkeypatch.setattr(score, "_call", interrupted)
        assert CliRunner().invoke(app, args).exit_code != 0 and not out.exists()
        monkeypatch.setattr(score, "_call", real_call)
        result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output

        with np.load(out) as scored:  # allow_pickle=False, numpy's default
            class_name = scored["class_name"]
            assert class_name.dtype.kind == "U" and class_name.shape[0] == 9
        expected = agent.infer("iris-classifier", {"float_input": rows}).outputs["class_name"]
        assert list(class_name) == list(expected)
