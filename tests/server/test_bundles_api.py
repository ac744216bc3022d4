"""Bundles built from a module archive or a registered model: signed, content-addressed, verifiable."""

from __future__ import annotations

import hashlib
import json

import pytest

from fleet_protocol import bundle_file
from fleet_protocol.chunking import content_defined_chunks
from fleet_protocol.signing import PublicKey

from .builders import SAMPLE, module_files, tar_gz, tiny_onnx, tiny_tflite
from .conftest import register
from tests.support.postgres import BOTH_ENGINES

pytestmark = BOTH_ENGINES  # the store-touching tests run on SQLite and PostgreSQL


def trusted_keys(api) -> list[PublicKey]:
    return [PublicKey.from_hex(k["public_key"]) for k in api.get("/api/keys").json()["signing_keys"]]


def build_module(api, files: dict[str, bytes], **kwargs):
    return api.post("/api/bundles/from-module", files={"file": ("module.tar.gz", tar_gz(files, **kwargs))})


def test_bundle_from_module_verifies_against_the_served_public_key(api):
    files = module_files()
    response = build_module(api, files)
    assert response.status_code == 201, response.text
    bundle = response.json()
    assert (bundle["module"], bundle["version"], bundle["model_ref"]) == ("scaler", 1, "scaler:1")
    assert {f["path"] for f in bundle["files"]} == {"model.onnx", "main.py", "sample.json"}
    efb = api.get(f"/api/bundles/{bundle['digest']}/file").content
    envelope, manifest, unpacked = bundle_file.read_bundle(efb, trusted_keys(api))
    assert manifest.digest == bundle["digest"]
    assert (manifest.entry, manifest.sample, manifest.config) == ("main.py", "sample.json", {"threshold": "high"})
    assert unpacked == {k: v for k, v in files.items() if k != "module.json"}
    assert api.get(f"/api/bundles/{bundle['digest']}").json()["manifest"] == envelope


def test_module_build_registers_its_model_once_and_versions_go_up(api):
    first = build_module(api, module_files()).json()
    second = build_module(api, module_files()).json()
    assert (first["version"], second["version"]) == (1, 2)
    assert first["model_ref"] == second["model_ref"] == "scaler:1"
    assert len(api.get("/api/models/scaler").json()) == 1
    third = build_module(api, module_files(model=tiny_onnx(7.0))).json()
    assert third["model_ref"] == "scaler:2"
    assert [b["version"] for b in api.get("/api/bundles", params={"module": "scaler"}).json()] == [1, 2, 3]


def test_module_build_links_a_model_registered_under_another_name(api):
    register(api, "base-model", tiny_onnx())
    assert build_module(api, module_files()).json()["model_ref"] == "base-model:1"


def test_only_the_listed_files_go_into_the_bundle(api):
    files = {**module_files(), "secrets.txt": b"do not ship"}
    bundle = build_module(api, files).json()
    assert "secrets.txt" not in {f["path"] for f in bundle["files"]}


def test_an_archive_with_one_top_level_folder_is_accepted(api):
    assert build_module(api, module_files(), prefix="scaler/").status_code == 201


@pytest.mark.parametrize("member", ["../escape.py", "/etc/passwd", "a/../../b"])
def test_unsafe_archive_member_names_are_refused(api, member):
    response = build_module(api, {**module_files(), member: b"x"})
    assert response.status_code == 400
    assert "refused" in response.json()["detail"]
    assert api.get("/api/bundles").json() == []


def test_archive_with_a_symlink_is_refused(api):
    response = build_module(api, module_files(), links={"main.py.bak": "/etc/passwd"})
    assert response.status_code == 400 and "link" in response.json()["detail"]


@pytest.mark.parametrize("files, reason", [
    ({k: v for k, v in module_files().items() if k != "main.py"}, "not in the archive"),
    ({k: v for k, v in module_files().items() if k != "module.json"}, "no module.json"),
    ({**module_files(), "module.json": b"{nope"}, "not valid JSON"),
    (module_files(runtime="tflite"), "is a onnx model"),
    (module_files(name="Bad Name"), "name"),
    (module_files(entry="missing.py"), "not one of the listed"),
    (module_files(files=["model.onnx", "../x"]), "unsafe"),
    ({**module_files(), "model.onnx": b"garbage"}, "neither an ONNX model"),
])
def test_invalid_modules_are_refused_with_a_reason(api, files, reason):
    response = build_module(api, files)
    assert response.status_code == 400
    assert reason in response.json()["detail"]


def test_an_upload_that_is_not_a_tarball_is_refused(api):
    response = api.post("/api/bundles/from-module", files={"file": ("x.tar.gz", b"\x1f\x8b not really")})
    assert response.status_code == 400 and "archive" in response.json()["detail"]


def test_bundle_from_model_wraps_the_newest_version_with_script_and_sample(api):
    register(api, "scaler", tiny_onnx(1.0))
    register(api, "scaler", tiny_onnx(2.0))
    response = api.post("/api/bundles/from-model", json={"model": "scaler", "module": "scaler-app",
                                                         "entry_script": "print('hi')\n", "sample": SAMPLE})
    assert response.status_code == 201, response.text
    bundle = response.json()
    assert (bundle["module"], bundle["version"], bundle["model_ref"]) == ("scaler-app", 1, "scaler:2")
    _, manifest, files = bundle_file.read_bundle(api.get(f"/api/bundles/{bundle['digest']}/file").content,
                                                 trusted_keys(api))
    assert files["main.py"] == b"print('hi')\n" and json.loads(files["sample.json"]) == SAMPLE
    assert manifest.entry == "main.py" and manifest.model == "model.onnx"


def test_bundle_from_a_tflite_model_names_the_file_by_runtime(api):
    register(api, "adder", tiny_tflite())
    bundle = api.post("/api/bundles/from-model", json={"model": "adder", "version": 1}).json()
    assert [f["path"] for f in bundle["files"]] == ["model.tflite"]


@pytest.mark.parametrize("body, status", [
    ({"model": "nope"}, 404),
    ({"model": "scaler", "version": 9}, 404),
    ({"model": "scaler", "module": "Bad"}, 400),
    ({"model": "scaler", "sample": {"inputs": "nope"}}, 400),
    ({"model": "scaler", "version": 0}, 422),
    ({"model": "scaler", "unknown": 1}, 422),
])
def test_bundle_from_model_refuses_bad_requests(api, body, status):
    register(api, "scaler", tiny_onnx())
    response = api.post("/api/bundles/from-model", json=body)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)


def test_chunks_are_stored_by_digest_and_shared_between_bundles(api, fleet, config):
    config.chunk_size_bytes = 64
    register(api, "scaler", tiny_onnx())
    first = api.post("/api/bundles/from-model", json={"model": "scaler"}).json()
    second = api.post("/api/bundles/from-model", json={"model": "scaler", "module": "copy"}).json()
    assert first["digest"] != second["digest"]
    model_file = api.get("/api/models/scaler/versions/1/file").content
    refs, offset, chunks = content_defined_chunks(model_file, 64), 0, []
    for ref in refs:  # the server cuts by content, never over chunk_size_bytes
        chunks.append(model_file[offset:offset + ref.size])
        offset += ref.size
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= 64
    for bundle in (first, second):
        manifest = api.get(f"/api/bundles/{bundle['digest']}").json()["manifest"]["signed"]
        listed = [c["sha256"] for c in manifest["files"][0]["chunks"]]
        assert listed == [hashlib.sha256(c).hexdigest() for c in chunks]
    for chunk in chunks:
        assert fleet.chunks.get(hashlib.sha256(chunk).hexdigest()) == chunk


def test_unknown_bundle_is_404(api):
    assert api.get("/api/bundles/" + "0" * 64).status_code == 404
    assert api.get("/api/bundles/not-a-digest/file").status_code == 404
