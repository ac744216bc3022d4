"""The model registry API: versions, runtime sniffing, search, edits, deletion and auth."""

from __future__ import annotations

import json

import pytest

from fleet_server.modelinfo import sniff_runtime

from .builders import tiny_onnx, tiny_tflite
from .conftest import register
from tests.support.postgres import BOTH_ENGINES

pytestmark = BOTH_ENGINES  # the store-touching tests run on SQLite and PostgreSQL


def test_each_registration_of_a_name_gets_the_next_version(api):
    versions = [register(api, "scaler", tiny_onnx(s))["version"] for s in (1.0, 2.0, 3.0)]
    assert versions == [1, 2, 3]
    assert register(api, "other", tiny_onnx())["version"] == 1
    assert [r["version"] for r in api.get("/api/models/scaler").json()] == [1, 2, 3]


def test_onnx_record_has_runtime_digest_and_oip_signature(api):
    data = tiny_onnx()
    record = register(api, "scaler", data, tags=json.dumps({"stage": "dev"}), properties=json.dumps({"acc": 0.9}))
    assert record["runtime"] == "onnx" and record["size"] == len(data)
    assert record["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert record["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
    assert record["tags"] == {"stage": "dev"} and record["properties"] == {"acc": 0.9}
    assert api.get("/api/models/scaler/versions/1/file").content == data


def test_tflite_is_recognised_by_content_not_by_file_name(api):
    response = api.post("/api/models/adder", files={"file": ("model.onnx", tiny_tflite())})
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["runtime"] == "tflite"
    assert record["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]


def test_runtime_sniffing_reads_the_tflite_identifier_at_bytes_4_to_8():
    assert sniff_runtime(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32) == "tflite"
    assert sniff_runtime(b"TFL3" + b"\x00" * 32) is None
    assert sniff_runtime(tiny_onnx()) == "onnx"


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"hello, I am not a model", "neither an ONNX model"),
    (b"\x1c\x00\x00\x00TFL3" + b"\xff" * 64, "does not load in the LiteRT interpreter"),
    (tiny_onnx()[:-7], None),
])
def test_a_file_that_is_not_a_loadable_model_is_refused_with_the_reason(api, content, reason):
    response = api.post("/api/models/broken", files={"file": ("model.onnx", content)})
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    if reason:
        assert reason in response.json()["detail"]
    assert api.get("/api/models/broken").status_code == 404


@pytest.mark.parametrize("field, value", [("tags", "not json"), ("tags", '{"a": 1}'), ("properties", "[1]")])
def test_malformed_tags_or_properties_are_refused(api, field, value):
    response = api.post("/api/models/m", files={"file": ("m.onnx", tiny_onnx())}, data={field: value})
    assert response.status_code == 400 and field in response.json()["detail"]


def test_an_invalid_model_name_is_refused(api):
    response = api.post("/api/models/Bad Name", files={"file": ("m.onnx", tiny_onnx())})
    assert response.status_code == 400 and "model name" in response.json()["detail"]


def test_search_by_tag_returns_the_newest_matching_version_of_each_name(api):
    register(api, "cat-detector", tiny_onnx(1.0), tags=json.dumps({"stage": "prod", "site": "lab"}))
    register(api, "cat-detector", tiny_onnx(2.0), tags=json.dumps({"stage": "dev"}))
    register(api, "dog-detector", tiny_onnx(3.0), tags=json.dumps({"stage": "prod"}))
    prod = api.get("/api/models", params={"tag": "stage=prod"}).json()
    assert {(r["name"], r["version"]) for r in prod} == {("cat-detector", 1), ("dog-detector", 1)}
    both = api.get("/api/models", params=[("tag", "stage=prod"), ("tag", "site=lab")]).json()
    assert [(r["name"], r["version"]) for r in both] == [("cat-detector", 1)]
    latest = api.get("/api/models").json()
    assert {(r["name"], r["version"]) for r in latest} == {("cat-detector", 2), ("dog-detector", 1)}
    assert [r["name"] for r in api.get("/api/models", params={"q": "DOG"}).json()] == ["dog-detector"]
    assert [r["name"] for r in api.get("/api/models", params={"name": "cat-detector"}).json()] == ["cat-detector"]
    assert api.get("/api/models", params={"tag": "novalue"}).status_code == 400


def test_patch_replaces_tags_and_properties(api):
    register(api, "scaler", tiny_onnx(), tags=json.dumps({"stage": "dev"}))
    response = api.patch("/api/models/scaler/versions/1", json={"tags": {"stage": "prod"}})
    assert response.status_code == 200 and response.json()["tags"] == {"stage": "prod"}
    assert api.get("/api/models/scaler/versions/1").json()["tags"] == {"stage": "prod"}
    assert api.patch("/api/models/scaler/versions/1", json={"tags": {"a": 1}}).status_code == 422
    assert api.patch("/api/models/scaler/versions/9", json={"tags": {}}).status_code == 404


def test_delete_removes_an_undeployed_version(api, fleet):
    record = register(api, "scaler", tiny_onnx())
    assert api.delete("/api/models/scaler/versions/1").status_code == 204
    assert api.get("/api/models/scaler/versions/1").status_code == 404
    assert not fleet.blobs.exists(record["sha256"])
    assert api.delete("/api/models/scaler/versions/1").status_code == 404


def test_delete_is_refused_with_409_while_a_deployment_uses_the_model(api):
    register(api, "scaler", tiny_onnx())
    api.post("/api/devices", json={"id": "dev-1"})
    bundle = api.post("/api/bundles/from-model", json={"model": "scaler"}).json()
    deployment = api.post("/api/deployments", json={"module": "scaler", "devices": ["dev-1"]}).json()
    response = api.delete("/api/models/scaler/versions/1")
    assert response.status_code == 409
    assert f"deployment {deployment['id']}" in response.json()["detail"]
    # once a newer bundle (from another model version) replaces it on every device, deletion is allowed
    register(api, "scaler", tiny_onnx(5.0))
    api.post("/api/bundles/from-model", json={"model": "scaler"})
    api.post("/api/deployments", json={"module": "scaler", "devices": ["dev-1"]})
    assert bundle["version"] == 1
    assert api.delete("/api/models/scaler/versions/1").status_code == 204


def test_requests_without_a_valid_token_get_401(api):
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        response = api.get("/api/models", headers=headers)
        assert response.status_code == 401 and isinstance(response.json()["detail"], str)
    assert api.get("/api/keys", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/api/health", headers={"Authorization": ""}).status_code == 200


def test_an_upload_over_the_limit_is_refused_with_413(config, fleet, api):
    config.max_upload_bytes = 1000
    response = api.post("/api/models/big", files={"file": ("m.onnx", b"\x00" * 5000)})
    assert response.status_code == 413


def test_concurrent_registrations_never_share_a_version(fleet):
    from concurrent.futures import ThreadPoolExecutor

    data = [tiny_onnx(float(i)) for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        records = list(pool.map(lambda d: fleet.registry.register_model(name="race", data=d, tags={},
                                                                        properties={}), data))
    assert sorted(r["version"] for r in records) == list(range(1, 13))


def test_registering_the_same_file_again_is_refused_naming_the_existing_version(api):
    data = tiny_onnx()
    register(api, "scaler", data)
    response = api.post("/api/models/scaler", files={"file": ("m.onnx", data)})
    assert response.status_code == 409, response.text
    assert "model scaler:1 already has these exact bytes" in response.json()["detail"]
    assert "--allow-duplicate" in response.json()["detail"]
    assert [r["version"] for r in api.get("/api/models/scaler").json()] == [1]
    again = register(api, "scaler", data, allow_duplicate="true")
    assert again["version"] == 2 and again["warnings"] == [
        f"the same file (sha256 {again['sha256'][:12]}) is already registered as scaler:1"]
    other = register(api, "copy", data)
    assert other["version"] == 1 and "already registered as scaler:" in other["warnings"][0]
    assert register(api, "scaler", tiny_onnx(9.0))["warnings"] == []
