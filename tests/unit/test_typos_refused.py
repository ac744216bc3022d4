"""One rule for every document a person writes: an unknown key is refused, naming it and the nearest valid one.

module.json and its config (every section the agent reads) when a bundle is
built, agent.toml when the agent starts, firmware profiles when loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edge_agent.config import ConfigError, load_config
from edgefleet_runtime.module_config import SECTIONS, check_answer_output, check_module_config
from fleet_protocol.errors import BadDataError
from firmware_profiles import load_profile
from fleet_protocol.profiles import ProfileError, parse_profile
from fleet_server.keys import new_signing_key
from fleet_server.module_archive import parse_module_spec

REPO = Path(__file__).resolve().parents[2]
READERS = (REPO / "edge_agent", REPO / "edgefleet_runtime")  # the agent and its scoring runtime
SPEC = {"name": "m", "runtime": "onnx", "model": "model.onnx", "entry": "main.py", "files": ["model.onnx", "main.py"]}


def refusal(check) -> str:
    with pytest.raises((BadDataError, ConfigError, ProfileError)) as caught:
        check()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_module_json_typo_is_refused_naming_the_nearest_key():
    message = refusal(lambda: parse_module_spec(json.dumps({**SPEC, "entyr": "main.py"}).encode()))
    assert "'entyr'" in message and "did you mean 'entry'" in message


@pytest.mark.parametrize(("config", "typo", "nearest"), [
    ({"fallback": {"max_bach": 8}}, "max_bach", "max_batch"),
    ({"health": {"latency_budget": 50}}, "latency_budget", "latency_budget_ms"),
    ({"capture": {"fraction": 10}}, "fraction", "fraction_percent"),
    ({"fallbak": {"max_batch": 8}}, "fallbak", "fallback"),
    ({"helth": {}}, "helth", "health"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_module_config_typo_is_refused_at_build_naming_the_nearest_key(config, typo, nearest):
    message = refusal(lambda: parse_module_spec(json.dumps({**SPEC, "config": config}).encode()))
    assert repr(typo) in message and f"did you mean {nearest!r}" in message


def test_module_config_section_of_the_wrong_shape_is_refused_at_build():
    assert "config.accelerators" in refusal(lambda: check_module_config({"accelerators": "CUDA"}, has_entry=True))
    assert "capture.max_bytes" in refusal(lambda: check_module_config({"capture": {"max_bytes": 0}}, has_entry=True))


def test_module_config_keys_belong_to_the_entry_script_only_when_there_is_one():
    check_module_config({"threshold_percent": 50, "fallback": {"max_batch": 8}}, has_entry=True)
    message = refusal(lambda: check_module_config({"threshold_percent": 50}, has_entry=False))
    assert "'threshold_percent'" in message and "no entry script" in message


def test_every_section_the_agent_reads_from_a_module_config_is_checked_at_build():
    """A section the agent starts reading without a build-time check would let its typos through again."""
    read = set()
    for source in (path for package in READERS for path in package.glob("*.py")):
        if source.name != "module_config.py":
            read |= set(re.findall(r'config(?:\.get\(|\[)"(\w+)"', source.read_text()))
    assert read and read <= set(SECTIONS)
    for section in SECTIONS:
        refusal(lambda: check_module_config({section: {"no_such_key": 1}}, has_entry=True))


def test_agent_toml_typo_is_refused_naming_the_nearest_field(tmp_path):
    path = tmp_path / "agent.toml"
    key = new_signing_key().public_key.to_hex()
    path.write_text(f'device_id = "gw-1"\nstate_dir = "s"\ntrusted_keys = ["{key}"]\nscoring_prot = 8182\n')
    message = refusal(lambda: load_config(path))
    assert "'scoring_prot'" in message and "did you mean 'scoring_port'" in message


def test_firmware_profile_typo_is_refused_naming_the_nearest_field():
    doc = {"name": "board", "arch": "arm64", "memory_mb": 512, "max_model_bytes": 1000, "acelerators": ["cpu"]}
    message = refusal(lambda: parse_profile(doc, source="board.toml"))
    assert "'acelerators'" in message and "did you mean 'accelerators'" in message


def test_firmware_profile_name_typo_is_refused_naming_the_nearest_profile():
    message = refusal(lambda: load_profile("raspbery-pi-5"))
    assert "'raspbery-pi-5'" in message and "did you mean 'raspberry-pi-5'" in message


def test_a_null_section_means_its_default_at_build_as_on_the_agent():
    check_module_config({section: None for section in SECTIONS}, has_entry=False)


def test_a_typo_in_the_answers_section_is_refused_naming_the_nearest_key():
    message = refusal(lambda: check_module_config({"answers": {"label_ouput": "label"}}, has_entry=False))
    assert "'label_ouput'" in message and "did you mean 'label_output'" in message
    assert "one output" in refusal(lambda: check_module_config(
        {"answers": {"label_output": "label", "probability_output": "p"}}, has_entry=False))


def test_a_declared_answer_output_the_model_lacks_is_refused_naming_its_outputs():
    config = {"answers": {"probability_output": "probs"}}
    message = refusal(lambda: check_answer_output(config, ["label", "probabilities"], has_entry=False))
    assert "'probs'" in message and "label, probabilities" in message
    assert check_answer_output(config, ["probs"], has_entry=False) == ("probs", "scores")
