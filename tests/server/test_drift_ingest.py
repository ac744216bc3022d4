"""Drift windows on the server: a baseline at registration (npy, csv, profile sample), refused when it cannot be
one, windows stored once however often they are delivered, a bad window refused without losing its batch."""

from __future__ import annotations

import hashlib
import io

import numpy as np

from fleet_protocol import drift, messages, topics
from fleet_protocol.messages import TelemetryBatch, TelemetryRecord

from .builders import tiny_onnx


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def register(api, baseline: tuple[str, bytes], name: str = "scaler"):
    return api.post(f"/api/models/{name}", files={"file": ("m.onnx", tiny_onnx()), "baseline": baseline})


def window(reference_id: str, rows: int = 4) -> dict:
    counts = [[rows] + [0] * 9 + [0, 0] for _ in range(8)]  # every row in the first bin
    return {"model_ref": "scaler:1", "reference": reference_id, "rows": rows, "counts": counts}


def batch(*records: tuple[int, dict]) -> bytes:
    return messages.encode(TelemetryBatch("dev-1", "box-1", tuple(
        TelemetryRecord(seq, "2026-12-03T10:00:00Z", kind, data) for seq, kind, data in records)).to_dict())


def test_a_redelivered_window_is_stored_once_and_a_bad_one_is_refused_without_losing_the_rest(api, fleet):
    rows = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    reference_id = register(api, ("b.npy", npy(rows))).json()["drift_reference"]["id"]
    good, bad = window(reference_id), dict(window(reference_id), reference="0" * 16)
    payload = batch((1, drift.KIND, good), (2, drift.KIND, bad), (3, "event", {"event": "x"}))
    topic = topics.device_topic("dev-1", "telemetry")
    fleet.handlers.handle(topic, payload)
    fleet.handlers.handle(topic, payload)  # at-least-once: the broker delivers it again
    report = api.get("/api/models/scaler/versions/1/drift").json()
    assert [(g["windows"], g["rows"]) for g in report["groups"]] == [(1, 4)]
    assert fleet.handlers.malformed.by_kind() == {"drift": 2}  # the bad window, once per delivery
    assert len(api.get("/api/telemetry", params={"device_id": "dev-1", "kind": "event"}).json()) == 1


def test_a_csv_baseline_with_a_header_gives_the_same_reference_as_the_npy_of_its_numbers(api):
    rows = np.round(np.random.default_rng(1).normal(size=(200, 4)), 3).astype(np.float32)
    text = "a,b,c,d\n" + "\n".join(",".join(f"{v:.3f}" for v in row) for row in rows)
    from_npy = register(api, ("b.npy", npy(rows))).json()
    from_csv = register(api, ("b.csv", text.encode()), name="other").json()
    assert from_csv["drift_reference"]["id"] == from_npy["drift_reference"]["id"]


def test_a_baseline_that_cannot_be_one_registers_nothing_and_says_why(api):
    few = register(api, ("b.npy", npy(np.zeros((10, 4), np.float32))))
    assert few.status_code == 400 and "at least 100 rows" in few.json()["detail"]
    images = register(api, ("b.npy", npy(np.zeros((200, 3, 8, 8), np.float32))))
    assert images.status_code == 400 and "2-D tabular inputs" in images.json()["detail"]
    ragged = register(api, ("b.csv", b"1,2,3,4\n1,2,3\n"))
    assert ragged.status_code == 400 and "row 2: expected 4 numbers" in ragged.json()["detail"]
    assert api.get("/api/models/scaler").status_code == 404


def test_a_bundle_of_a_version_with_a_reference_ships_the_stored_reference_as_a_signed_file(api):
    rows = np.random.default_rng(2).normal(size=(300, 4)).astype(np.float32)
    register(api, ("b.npy", npy(rows)))
    bundle = api.post("/api/bundles/from-model", json={"model": "scaler"}).json()
    manifest = api.get(f"/api/bundles/{bundle['digest']}").json()["manifest"]["signed"]
    stored = api.get("/api/models/scaler/versions/1/drift/reference").json()
    shipped = {f["path"]: f["sha256"] for f in manifest["files"]}[manifest["drift_reference"]]
    assert shipped == hashlib.sha256(drift.Reference.from_dict(stored["reference"]).to_json()).hexdigest()
    assert drift.Reference.from_dict(stored["reference"]).id == stored["reference_id"]


def test_a_profile_sample_of_enough_rows_becomes_the_reference_of_a_version_without_one(api):
    assert api.post("/api/models/scaler", files={"file": ("m.onnx", tiny_onnx())}).status_code == 201
    assert api.get("/api/models/scaler/versions/1/drift/reference").status_code == 404
    sample = np.random.default_rng(3).normal(size=(drift.MIN_BASELINE_ROWS, 4)).astype(np.float32)
    response = api.post("/api/models/scaler/versions/1/profile", files={"sample": ("s.npy", npy(sample))},
                        data={"runs": "1"})
    assert response.status_code == 200, response.text
    stored = api.get("/api/models/scaler/versions/1/drift/reference").json()
    assert stored["source"] == "profile sample" and stored["reference"]["rows"] == drift.MIN_BASELINE_ROWS


def test_a_since_that_is_not_a_time_or_reaches_before_year_one_is_a_400_naming_it(api):
    register(api, ("b.npy", npy(np.random.default_rng(4).normal(size=(200, 4)).astype(np.float32))))
    for since, message in (("999999d", "before year 1"), ("yesterday", "neither a time")):
        response = api.get("/api/models/scaler/versions/1/drift", params={"since": since})
        assert response.status_code == 400 and message in response.json()["detail"], response.text
