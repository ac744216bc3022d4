"""The cloud answers for a module as the device does: the same signature, the same outputs, the same refusals.

Real Mosquitto, the real fleet server (HTTP and MQTT) and a real agent in this process, serving both shipped
modules built from their module.json (signatures included).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np

from fleet_protocol import oip
from tests.offline.fleet import running_fleet
from tests.server.builders import tar_gz

MODULES = Path(__file__).resolve().parents[2] / "modules"


def sample(name: str) -> dict:
    return json.loads((MODULES / name / "sample.json").read_text())


def test_local_and_cloud_answers_of_a_module_have_the_same_outputs(tmp_path, monkeypatch):
    rows = np.random.default_rng(5).uniform(0.5, 7, size=(6, 4)).astype(np.float32)
    requests = {"iris-classifier": oip.encode_request({"float_input": rows}),
                "sensor-anomaly": oip.encode_request({"sensor_readings": np.tile(
                    np.asarray(sample("sensor-anomaly")["inputs"][0]["data"], np.float32), (3, 1))})}
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        for name, request in requests.items():
            version = fleet.deploy_module(MODULES / name)
            local_meta = httpx.get(f"{agent.scoring_url}/v2/models/{name}").json()
            cloud_meta = fleet.api.get(f"/v2/modules/{name}/versions/{version}").json()
            assert (cloud_meta["inputs"], cloud_meta["outputs"]) == (local_meta["inputs"], local_meta["outputs"])

            url = f"{agent.scoring_url}/v2/models/{name}/infer"
            local = httpx.post(url, json=request, timeout=30)
            cloud = httpx.post(url, json={**request, "parameters": {"prefer": "cloud"}}, timeout=30)
            assert local.status_code == cloud.status_code == 200, cloud.text
            assert (local.json()["parameters"]["scored_on"], cloud.json()["parameters"]["scored_on"]) == \
                ("local", "cloud")
            assert [(o["name"], o["datatype"]) for o in cloud.json()["outputs"]] == \
                [(t["name"], t["datatype"]) for t in local_meta["outputs"]], "every declared output, in order"
            assert_same_outputs(local.json(), cloud.json())


def test_a_device_without_the_module_and_a_client_of_the_cloud_get_the_modules_outputs(tmp_path, monkeypatch):
    request = sample("iris-classifier")
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        archive = module_archive("iris-classifier")
        built = fleet.api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", archive)})
        assert built.status_code == 201, built.text  # built (its model registered as iris-classifier), not deployed
        url = f"{agent.scoring_url}/v2/models/iris-classifier/infer"
        elsewhere = httpx.post(url, json=request, timeout=30)
        assert elsewhere.status_code == 200, elsewhere.text
        assert elsewhere.json()["parameters"]["fallback_reason"] == "not_installed"
        direct = fleet.api.post("/v2/models/iris-classifier/infer", json=request)
        meta = fleet.api.get("/v2/models/iris-classifier").json()
        assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities", "class_name"]
        assert meta["versions"] == ["1"]

        fleet.serve("iris-classifier", built.json()["version"])
        local = httpx.post(url, json=request, timeout=30)
        assert local.json()["parameters"]["scored_on"] == "local"
        assert_same_outputs(local.json(), elsewhere.json())
        assert_same_outputs(local.json(), direct.json())


def module_archive(name: str) -> bytes:
    spec = json.loads((MODULES / name / "module.json").read_text())
    files = {path: (MODULES / name / path).read_bytes() for path in ["module.json", *spec["files"]]}
    return tar_gz(files)


def assert_same_outputs(local: dict, cloud: dict) -> None:
    """Output by output: name, datatype, shape and values (floats to 1e-6)."""
    assert [o["name"] for o in cloud["outputs"]] == [o["name"] for o in local["outputs"]]
    for mine, theirs in zip(local["outputs"], cloud["outputs"]):
        assert (theirs["name"], theirs["datatype"], theirs["shape"]) == (mine["name"], mine["datatype"], mine["shape"])
        if mine["datatype"] in ("FP32", "FP64"):
            np.testing.assert_allclose(theirs["data"], mine["data"], rtol=1e-6)
        else:
            assert theirs["data"] == mine["data"], mine["name"]


def test_the_cloud_refuses_a_request_that_does_not_fit_in_the_modules_own_words(tmp_path, monkeypatch):
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        version = fleet.deploy_module(MODULES / "iris-classifier")
        wrong = oip.encode_request({"float_input": np.ones((2, 3), np.float32)})
        local = httpx.post(f"{agent.scoring_url}/v2/models/iris-classifier/infer", json=wrong, timeout=30)
        cloud = fleet.api.post(f"/v2/modules/iris-classifier/versions/{version}/infer", json=wrong)
        assert local.status_code == cloud.status_code == 400
        words = "iris-classifier v1: input 'float_input': shape [2, 3]; the module expects FP32 [-1, 4]"
        assert local.json()["error"] == cloud.json()["error"] == words
