"""Two server processes on one PostgreSQL database (and one broker), no shared disk: each has its own empty data dir.

What one replica stores (model files, bundle chunks, keys, the CA) the other
serves, because it lives in the database, not in a data dir.
"""

from __future__ import annotations

from fleet_protocol import bundle_file
from fleet_protocol.signing import PublicKey
from tests.support.fleet import ServerProcess, start_replicas

from .builders import tiny_onnx


def keys_of(replica: ServerProcess) -> dict:
    """The signing keys in force and the current root, as this replica serves them."""
    with replica.api() as api:
        return {"signing": api.get("/api/keys").json()["signing_keys"], **api.get("/api/keys/root").json()}


def test_a_replica_with_an_empty_data_dir_serves_the_models_bundles_and_keys_another_stored(
        tmp_path, mosquitto, database_url):
    a, b = start_replicas(tmp_path, count=2, broker_url=mosquitto.url, database_url=database_url)
    try:
        assert keys_of(a) == keys_of(b)  # one key ring, made once by whichever started first
        model = tiny_onnx(3.0)
        with a.api() as api_a, b.api() as api_b:
            assert api_a.post("/api/models/scaler", files={"file": ("m.onnx", model)}).status_code == 201
            bundle = api_a.post("/api/bundles/from-model", json={"model": "scaler"}).json()
            assert api_b.get("/api/models/scaler/versions/1/file").content == model
            signing = [PublicKey.from_hex(k["public_key"]) for k in keys_of(a)["signing"]]
            efb = api_b.get(f"/api/bundles/{bundle['digest']}/file").content  # rebuilt from B's reading of chunks
            _, manifest, files = bundle_file.read_bundle(efb, signing)  # signature, digests and sizes
            assert manifest.digest == bundle["digest"] and files[manifest.model] == model
            scored = api_b.post("/v2/models/scaler/infer", json={"inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
            assert scored.json()["outputs"][0]["data"] == [3, 6, 9, 12]  # B loaded the model A stored
            rotated = api_a.post("/api/keys/rotate").json()
            assert keys_of(b)["version"] == rotated["version"] == 2 and keys_of(b) == keys_of(a)
            second = api_b.post("/api/bundles/from-model", json={"model": "scaler", "module": "again"}).json()
            new_key = [PublicKey.from_hex(k["public_key"]) for k in keys_of(a)["signing"]]
            bundle_file.read_bundle(api_a.get(f"/api/bundles/{second['digest']}/file").content, new_key)
        for replica in (a, b):  # nothing of the fleet's went to a data dir
            assert not {"keys", "ca", "blobs", "chunks", "fleet.db"} & {p.name for p in replica.data_dir.iterdir()}
    finally:
        for replica in (a, b):
            replica.stop()
