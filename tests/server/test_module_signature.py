"""A module's signature is checked against its model at build and signed in the manifest; nothing wrong is stored."""

from __future__ import annotations

from .builders import module_files, tar_gz, tiny_onnx
from .conftest import register

X = {"name": "x", "datatype": "FP32", "shape": [-1, 4]}
Y = {"name": "y", "datatype": "FP32", "shape": [-1, 4]}
LABEL = {"name": "label", "datatype": "BYTES", "shape": [-1]}


def build(api, **spec):
    return api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(module_files(**spec)))})


def signed(api, bundle: dict) -> dict:
    return api.get(f"/api/bundles/{bundle['digest']}").json()["manifest"]["signed"]


def test_a_signature_that_disagrees_with_the_model_is_refused_at_build(api):
    wrong_type = build(api, signature={"inputs": [{**X, "datatype": "INT64"}], "outputs": [Y]})
    assert wrong_type.status_code == 400, wrong_type.text
    assert wrong_type.json()["detail"] == ("module.json: signature: input 'x' INT64 [-1, 4] disagrees with the "
                                           "model's 'x' FP32 [-1, 4]: datatype INT64 is not FP32")
    guessed = build(api, entry=None, config={}, signature={"inputs": [X], "outputs": [Y, LABEL]})
    assert guessed.status_code == 400, guessed.text
    assert "the model has no output 'label'" in guessed.json()["detail"]
    assert api.get("/api/bundles").json() == []


def test_a_declared_signature_is_signed_with_the_entry_scripts_extra_output(api):
    declared = {"inputs": [X], "outputs": [Y, LABEL]}
    bundle = build(api, signature=declared)
    assert bundle.status_code == 201, bundle.text
    assert signed(api, bundle.json())["signature"] == declared


def test_a_plain_model_is_signed_with_its_own_signature_and_an_undeclared_script_with_none(api):
    register(api, "scaler", tiny_onnx())
    plain = api.post("/api/bundles/from-model", json={"model": "scaler"})
    assert plain.status_code == 201, plain.text
    assert signed(api, plain.json())["signature"] == {"inputs": [X], "outputs": [Y]}
    scripted = build(api, name="scripted")  # an entry script that declares nothing: described by its model
    assert scripted.status_code == 201, scripted.text
    assert "signature" not in signed(api, scripted.json())


def test_a_bundle_from_a_registered_model_takes_a_declared_signature_checked_the_same_way(api):
    register(api, "scaler", tiny_onnx())
    script = "def run(inputs):\n    return inputs\n"
    declared = {"inputs": [X], "outputs": [Y, LABEL]}
    bundle = api.post("/api/bundles/from-model", json={"model": "scaler", "entry_script": script,
                                                       "signature": declared})
    assert bundle.status_code == 201, bundle.text
    assert signed(api, bundle.json())["signature"] == declared
    wrong = api.post("/api/bundles/from-model", json={"model": "scaler", "signature": declared})
    assert wrong.status_code == 400 and "the model has no output 'label'" in wrong.json()["detail"]
    typo = api.post("/api/bundles/from-model", json={"model": "scaler", "signature": {"inputs": [X], "ouputs": []}})
    assert typo.status_code == 400 and "did you mean 'outputs'" in typo.json()["detail"]
