"""Firmware profiles: every shipped profile parses, and every malformed field is named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from firmware_profiles import DEFAULT_PROFILE, list_profiles, load_profile
from fleet_protocol.canonical import canonical_json
from fleet_protocol.errors import BadDataError
from fleet_protocol.profiles import (
    Delegate,
    ExecutionProvider,
    FirmwareProfile,
    ProfileError,
    normalize_arch,
    parse_profile,
)

SHIPPED = ["coral-dev-board", "generic-cpu", "intel-openvino", "jetson-orin-nano", "kria-kv260", "raspberry-pi-5"]

GOOD = {
    "name": "test-board",
    "description": "a board for tests",
    "arch": "arm64",
    "memory_mb": 2048,
    "accelerators": ["cpu", "tpu"],
    "max_model_bytes": 1_000_000,
    "memory_budget_mb": 1024,
    "onnx_providers": [{"name": "CPUExecutionProvider"}],
    "tflite_delegates": [
        {"name": "edgetpu", "library": "libedgetpu.so.1", "options": {"device": "usb"}},
        {"name": "xnnpack", "options": {"num_threads": 2}},
    ],
}


def test_the_shipped_profiles_are_listed_and_every_one_parses():
    assert list_profiles() == SHIPPED
    for name in SHIPPED:
        profile = load_profile(name)
        assert isinstance(profile, FirmwareProfile)
        assert profile.name == name
        assert profile.description
        assert profile.memory_budget_mb <= profile.memory_mb
        assert "cpu" in profile.accelerators
        canonical_json(profile.to_dict())  # reportable in signed/canonical documents: no floats


def test_the_default_profile_is_cpu_only():
    profile = load_profile(DEFAULT_PROFILE)
    assert profile.arch == "x86-64"
    assert [p.name for p in profile.onnx_providers] == ["CPUExecutionProvider"]


def test_vendor_facts_of_the_shipped_profiles():
    jetson = load_profile("jetson-orin-nano")
    assert [p.name for p in jetson.onnx_providers] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = jetson.onnx_providers[0].options
    assert trt["trt_fp16_enable"] is True and trt["trt_engine_cache_enable"] is True and trt["trt_engine_cache_path"]
    assert (jetson.arch, jetson.memory_mb) == ("arm64", 8192)

    pi = load_profile("raspberry-pi-5")
    assert [p.name for p in pi.onnx_providers] == ["XnnpackExecutionProvider", "CPUExecutionProvider"]
    assert [d.name for d in pi.tflite_delegates] == ["xnnpack"]

    openvino = load_profile("intel-openvino")
    assert [p.options.get("device_type") for p in openvino.onnx_providers] == ["NPU", "GPU", "CPU", None]

    kria = load_profile("kria-kv260")
    assert kria.onnx_providers[0].name == "VitisAIExecutionProvider"
    assert kria.onnx_providers[0].options["config_file"].endswith("vaip_config.json")
    assert (kria.memory_mb, "fpga" in kria.accelerators) == (4096, True)

    coral = load_profile("coral-dev-board")
    assert coral.tflite_delegates[0] == Delegate("edgetpu", "libedgetpu.so.1", {})
    assert [d.name for d in coral.tflite_delegates] == ["edgetpu", "xnnpack"]
    assert coral.memory_mb == 1024


def test_parse_a_good_document():
    profile = parse_profile(copy.deepcopy(GOOD), source="test.toml")
    assert profile.onnx_providers == (ExecutionProvider("CPUExecutionProvider", {}),)
    assert profile.tflite_delegates[0].library == "libedgetpu.so.1"
    assert profile.tflite_delegates[1].builtin
    assert ExecutionProvider("X", {"a": True, "b": 3}).ort_options() == {"a": "True", "b": "3"}


def _with(path: str, value, *, delete: bool = False) -> dict:
    doc = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target = doc
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if delete:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize("path, value, delete, words", [
    ("name", None, True, ["missing field 'name'"]),
    ("name", "Bad Name", False, ["'name'"]),
    ("arch", "sparc", False, ["'arch'", "sparc"]),
    ("memory_mb", "8GB", False, ["'memory_mb'", "int"]),
    ("memory_mb", 0, False, ["'memory_mb'", ">= 1"]),
    ("memory_budget_mb", 4096, False, ["'memory_budget_mb'", "memory_mb"]),
    ("max_model_bytes", True, False, ["'max_model_bytes'", "bool"]),
    ("accelerators", ["cpu", "quantum"], False, ["'accelerators'", "quantum"]),
    ("accelerators", "cpu", False, ["'accelerators'", "list"]),
    ("memroy_mb", 1, False, ["unknown field 'memroy_mb'"]),
    ("onnx_providers", {"name": "CPUExecutionProvider"}, False, ["'onnx_providers'", "list"]),
    ("onnx_providers.0.name", "cuda", False, ["onnx_providers[0]", "'name'", "cuda"]),
    ("onnx_providers.0.options", {"threshold": 0.5}, False, ["onnx_providers[0]", "'threshold'", "float"]),
    ("onnx_providers.0.option", {}, False, ["onnx_providers[0]", "unknown field 'option'"]),
    ("tflite_delegates.0.library", None, True, ["tflite_delegates[0]", "'library'", "required"]),
    ("tflite_delegates.1.library", "libxnnpack.so", False, ["tflite_delegates[1]", "'library'", "built-in"]),
    ("tflite_delegates.1.options", {"num_threads": 0}, False, ["tflite_delegates[1]", "num_threads"]),
    ("tflite_delegates.1.options", {"use_gpu": True}, False, ["tflite_delegates[1]", "use_gpu"]),
    ("tflite_delegates.0", "edgetpu", False, ["tflite_delegates[0]", "table"]),
])
def test_each_bad_field_is_named_with_the_source(path, value, delete, words):
    with pytest.raises(ProfileError) as caught:
        parse_profile(_with(path, value, delete=delete), source="boards/test.toml")
    message = str(caught.value)
    assert "boards/test.toml" in message
    for word in words:
        assert word in message, message
    assert caught.value.code == "bad_profile"
    assert isinstance(caught.value, BadDataError)


def test_a_bad_profile_file_names_the_file_and_field(tmp_path: Path):
    path = tmp_path / "my-board.toml"
    path.write_text('name = "my-board"\narch = "arm64"\nmemory_mb = "lots"\naccelerators = ["cpu"]\n'
                    "max_model_bytes = 1000\nmemory_budget_mb = 100\n")
    with pytest.raises(ProfileError, match=r"my-board\.toml.*'memory_mb' must be int, got str"):
        load_profile(str(path))


def test_a_profile_file_from_a_path_loads(tmp_path: Path):
    path = tmp_path / "custom.toml"
    path.write_text('name = "custom"\narch = "x86-64"\nmemory_mb = 512\naccelerators = ["cpu"]\n'
                    "max_model_bytes = 1000\nmemory_budget_mb = 256\n"
                    '[[onnx_providers]]\nname = "CPUExecutionProvider"\n')
    profile = load_profile(str(path))
    assert (profile.name, profile.tflite_delegates, profile.description) == ("custom", (), "")


def test_broken_toml_missing_files_and_unknown_names(tmp_path: Path):
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(ProfileError, match="broken.toml: not valid TOML"):
        load_profile(str(broken))
    with pytest.raises(ProfileError, match="cannot be read"):
        load_profile(str(tmp_path / "absent.toml"))
    with pytest.raises(ProfileError, match=r"unknown firmware profile 'pdp-11' \(known: coral-dev-board"):
        load_profile("pdp-11")
    with pytest.raises(ProfileError, match="must match"):
        load_profile("..")


def test_machine_names_map_to_profile_arches():
    assert normalize_arch("x86_64") == "x86-64"
    assert normalize_arch("aarch64") == "arm64"
    assert normalize_arch("armv7l") == "armv7"
    assert normalize_arch("s390x") is None


def test_profiles_are_hashable_values():
    assert load_profile("jetson-orin-nano") == load_profile("jetson-orin-nano")
    assert len({load_profile(name) for name in SHIPPED} | {load_profile("generic-cpu")}) == len(SHIPPED)
