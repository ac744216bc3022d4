"""On the agent, a module's signed signature is what callers see and what their requests are checked against.

The shipped modules, signed with and without the signature their module.json declares (a bundle built before
signatures has none), served by the real runtime and the local Open Inference Protocol endpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from edge_agent.clock import utc_now
from edge_agent.installer import Installer
from edge_agent.scoring_api import ScoringServer
from edgefleet_runtime.runtime import HealthCheckError, Runtime
from firmware_profiles import load_profile
from fleet_protocol.bundle_file import build_manifest
from fleet_protocol.errors import ManifestError
from fleet_protocol.signature import Signature
from fleet_protocol.signing import sign_envelope
from fleet_protocol.timestamps import to_iso
from fleet_server.keys import new_signing_key
from tests.agent.helpers import Bundle, make_bundle, stage

MODULES = Path(__file__).resolve().parents[2] / "modules"
KEY = new_signing_key()


def shipped(name: str, *, signed: bool) -> Bundle:
    spec = json.loads((MODULES / name / "module.json").read_text())
    files = {path: (MODULES / name / path).read_bytes() for path in spec["files"]}
    signature = Signature.from_dict(spec["signature"], where="signature", error=ManifestError) if signed else None
    manifest = build_manifest(module=name, version=1, runtime=spec["runtime"], model=spec["model"], files=files,
                              created=to_iso(utc_now()), entry=spec["entry"], sample=spec["sample"],
                              config=spec["config"], signature=signature)
    return Bundle(manifest, sign_envelope(manifest.to_dict(), KEY), files)


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(*bundles: Bundle) -> tuple[str, Runtime]:
        runtime = Runtime(load_profile("generic-cpu"))
        for bundle in bundles:
            stage(tmp_path, bundle)
            runtime.activate(runtime.load(Installer(tmp_path).install(bundle.manifest, bundle.envelope)))
        server = ScoringServer(host="127.0.0.1", port=0, table=runtime.table, ready=lambda: True,
                               max_request_bytes=1 << 20)
        server.start()
        servers.append(server)
        host, port = server.address
        return f"http://{host}:{port}/v2/models", runtime

    yield start
    for server in servers:
        server.stop()


def tensor(name: str, array: np.ndarray, datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": name, "shape": list(array.shape), "datatype": datatype,
                        "data": array.ravel().tolist()}]}


def test_the_metadata_of_a_module_with_an_entry_script_lists_its_declared_outputs(serve):
    url, _ = serve(shipped("iris-classifier", signed=True), shipped("sensor-anomaly", signed=True))
    iris = httpx.get(f"{url}/iris-classifier").json()
    assert iris["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [-1]},
                               {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
                               {"name": "class_name", "datatype": "BYTES", "shape": [-1]}]
    sensor = httpx.get(f"{url}/sensor-anomaly").json()
    assert sensor["inputs"] == [{"name": "sensor_readings", "datatype": "FP32", "shape": [-1, 8]}]
    assert [o["name"] for o in sensor["outputs"]] == ["anomaly_score", "is_anomaly"]
    batch = httpx.post(f"{url}/sensor-anomaly/infer", json=tensor("sensor_readings", np.ones((3, 8), np.float32)))
    assert batch.status_code == 200 and batch.json()["outputs"][1]["shape"] == [3, 1], batch.text


@pytest.mark.parametrize(("request_body", "words"), [
    (tensor("float_input", np.ones((1, 3), np.float32)),
     "input 'float_input': shape [1, 3]; the module expects FP32 [-1, 4]"),
    (tensor("float_input", np.ones((1, 4), np.float64), "FP64"),
     "input 'float_input': FP64; the module expects FP32 [-1, 4]"),
    (tensor("petals", np.ones((1, 4), np.float32)),
     "input 'petals': unknown; the module's inputs are float_input FP32 [-1, 4]"),
], ids=["shape", "datatype", "name"])
def test_a_request_that_does_not_fit_the_signature_is_refused_in_the_modules_words(serve, request_body, words):
    url, runtime = serve(shipped("iris-classifier", signed=True))
    response = httpx.post(f"{url}/iris-classifier/infer", json=request_body)
    assert response.status_code == 400
    assert response.json()["error"] == f"iris-classifier v1: {words}"
    assert runtime.table["iris-classifier"].stats.take() == ([], 0), "refused before the entry script ran"


def test_a_bundle_without_a_signature_is_described_by_its_model_and_keeps_working(serve):
    url, _ = serve(shipped("sensor-anomaly", signed=False))
    meta = httpx.get(f"{url}/sensor-anomaly").json()
    assert meta["inputs"] == [{"name": "sensor_readings", "datatype": "FP32", "shape": [1, 8]}]
    assert [o["name"] for o in meta["outputs"]] == ["anomaly_score"]
    sample = json.loads((MODULES / "sensor-anomaly" / "sample.json").read_text())
    answer = httpx.post(f"{url}/sensor-anomaly/infer", json=sample)
    assert answer.status_code == 200 and [o["name"] for o in answer.json()["outputs"]] == ["anomaly_score",
                                                                                          "is_anomaly"]


def test_an_entry_script_whose_answer_is_not_its_signature_fails_its_health_check(tmp_path):
    declared = Signature.from_dict({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                                    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]},
                                                {"name": "label", "datatype": "BYTES", "shape": [-1]}]},
                                   where="signature", error=ManifestError)
    bundle = make_bundle(KEY, module="forgetful", sample=True, signature=declared,
                         entry="def run(inputs):\n    return {'y': inputs['x'][:, :3]}\n")
    stage(tmp_path, bundle)
    record = Installer(tmp_path).install(bundle.manifest, bundle.envelope)
    with pytest.raises(HealthCheckError) as failed:
        Runtime(load_profile("generic-cpu")).load(record)
    assert "the answer is not the module's signature: output 'label' BYTES [-1] is declared but missing" in \
        str(failed.value)
