"""A typo in module.json or in a module's config is refused when the bundle is built: nothing is signed or stored."""

from __future__ import annotations

import pytest

from .builders import module_files, tar_gz, tiny_onnx
from .conftest import register


def build_module(api, **spec):
    return api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(module_files(**spec)))})


@pytest.mark.parametrize(("spec", "typo", "nearest"), [
    ({"entyr": "main.py"}, "entyr", "entry"),
    ({"config": {"fallback": {"max_bach": 64}}}, "max_bach", "max_batch"),
    ({"config": {"health": {"latency_budget": 50}}}, "latency_budget", "latency_budget_ms"),
    ({"config": {"fallbak": {"max_batch": 64}}}, "fallbak", "fallback"),
], ids=["module.json", "fallback", "health", "section"])
def test_module_build_with_a_typo_is_refused_naming_the_nearest_key(api, spec, typo, nearest):
    response = build_module(api, **spec)
    assert response.status_code == 400, response.text
    assert repr(typo) in response.json()["detail"] and f"did you mean {nearest!r}" in response.json()["detail"]
    assert api.get("/api/bundles").json() == []


def test_bundle_from_model_with_a_config_typo_is_refused(api):
    register(api, "scaler", tiny_onnx())
    response = api.post("/api/bundles/from-model", json={"model": "scaler", "config": {"fallback": {"max_bach": 8}}})
    assert response.status_code == 400, response.text
    assert "did you mean 'max_batch'" in response.json()["detail"]
    assert api.post("/api/bundles/from-model", json={"model": "scaler", "config": {"fallback": {"max_batch": 8}}}
                    ).status_code == 201
