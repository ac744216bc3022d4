"""Names, digests and bundle paths are matched as whole strings, and bundle paths never collide by case."""

from __future__ import annotations

import ast
import json
import re._constants as sre_constants
import re._parser as sre_parse
from pathlib import Path

import pytest

from fleet_protocol import bundle_file, messages, topics
from fleet_protocol.canonical import canonical_json, sha256_hex
from fleet_protocol.errors import BadDataError, ManifestError, MessageError, UnsafePathError
from fleet_protocol.fields import digest_field, is_valid_name, name_field
from fleet_protocol.manifest import BundleManifest, check_relative_path, file_entry
from fleet_protocol.messages import DesiredModule
from fleet_protocol.signing import SigningKey, sign_envelope
from fleet_protocol.timestamps import from_iso
from fleet_protocol.trust import TrustedState
from fleet_server.keys import new_signing_key
from fleet_server.module_archive import parse_module_spec
from tests.unit.test_protocol_bundles import FILES, make_manifest

NOW = "2026-01-01T00:00:00Z"
REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("fleet_protocol", "edge_agent", "edgefleet_runtime", "fleet_server", "edgefleet_cli", "simulators",
           "firmware_profiles")


@pytest.mark.parametrize("value", ["cam-1\n", "cam-1\n\n", "cam-1\r", " cam-1", "cam-1 "])
def test_a_name_with_a_trailing_newline_or_space_is_refused(value):
    assert not is_valid_name(value)
    with pytest.raises(MessageError, match="field 'device_id' must match"):
        name_field({"device_id": value}, "device_id", where="status")
    with pytest.raises(MessageError, match="invalid device id"):
        topics.device_topic(value, "status")


def test_a_digest_with_a_trailing_newline_is_refused():
    with pytest.raises(MessageError, match="field 'bundle_digest' must be a lowercase hex SHA-256"):
        digest_field({"bundle_digest": "a" * 64 + "\n"}, "bundle_digest", where="fetch request")
    with pytest.raises(MessageError, match="invalid bundle digest"):
        topics.bundle_chunks_topic("a" * 64 + "\n")


def test_a_message_naming_a_device_with_a_trailing_newline_is_refused():
    payload = messages.encode(messages.DeviceStatus("cam-1\n", "online").to_dict())
    with pytest.raises(MessageError, match="field 'device_id' must match"):
        messages.parse_device_status(payload)


@pytest.mark.parametrize("path", ["extra.txt\n", "dir\n/file.txt", "dir/file.txt\n", "model.onnx\r"])
def test_a_bundle_path_with_a_newline_is_refused(path):
    with pytest.raises(UnsafePathError, match="is not allowed"):
        check_relative_path(path)


def signed_module_with_paths(key: SigningKey, rename: dict[str, str]) -> DesiredModule:
    """A desired module whose signed manifest lists files under other paths, as an attacker with a signing
    key or a buggy builder could produce (``build_manifest`` itself refuses them)."""
    doc = make_manifest().to_dict()
    files = dict(FILES, **{new: FILES[old] for old, new in rename.items() if old in FILES})
    doc["files"] = [file_entry("placeholder", files[path]).to_dict() | {"path": path} for path in sorted(files)]
    return DesiredModule("iris", 1, sha256_hex(canonical_json(doc)), sign_envelope(doc, key))


def test_a_signed_bundle_naming_a_file_with_a_trailing_newline_is_refused_by_the_device():
    key = new_signing_key()
    module = signed_module_with_paths(key, {"main.py": "extra.txt\n"})
    with pytest.raises(UnsafePathError, match=r"'extra.txt\\n'"):
        TrustedState("cam-1", [key.public_key]).verify_module(module, installed=None, now=from_iso(NOW))


def test_a_signed_bundle_with_a_newline_inside_a_directory_name_is_refused_by_the_device():
    key = new_signing_key()
    module = signed_module_with_paths(key, {"main.py": "dir\n/file.txt"})
    with pytest.raises(UnsafePathError, match="is not allowed"):
        TrustedState("cam-1", [key.public_key]).verify_module(module, installed=None, now=from_iso(NOW))


def test_a_signed_bundle_with_paths_that_differ_only_in_case_is_refused_by_the_device():
    key = new_signing_key()
    module = signed_module_with_paths(key, {"main.py": "A.txt", "model.onnx": "a.txt"})
    with pytest.raises(ManifestError, match="'A.txt' and 'a.txt' differ only in case"):
        TrustedState("cam-1", [key.public_key]).verify_module(module, installed=None, now=from_iso(NOW))


@pytest.mark.parametrize("paths, reason", [
    (["A.txt", "a.txt"], "file paths 'A.txt' and 'a.txt' differ only in case"),
    (["Lib/x.py", "lib/y.py"], "directories 'Lib' and 'lib' differ only in case"),
    (["sub/README.md", "sub/readme.MD"], "differ only in case"),
    (["data", "data/x.bin"], "'data' is both a file and a directory"),
    (["Data", "data/x.bin"], "'Data' is both a file and a directory"),
    (["a.txt", "a.txt"], "listed twice"),
])
def test_manifest_paths_that_collide_after_case_folding_are_refused(paths, reason):
    doc = make_manifest().to_dict()
    doc["files"] = [file_entry("placeholder", b"x").to_dict() | {"path": path} for path in paths]
    doc["model"], doc["entry"] = paths[0], None
    with pytest.raises(ManifestError, match=reason):
        BundleManifest.from_dict(doc)


@pytest.mark.parametrize("profile", ["generic-cpu\n", "Generic-CPU", "../generic-cpu", "", 7])
def test_manifest_target_profiles_are_names_matched_whole(profile):
    doc = make_manifest().to_dict() | {"target_profiles": ["raspberry-pi-5", profile]}
    with pytest.raises(ManifestError, match="manifest: each of 'target_profiles' must match"):
        BundleManifest.from_dict(doc)
    spec = {"name": "m", "runtime": "onnx", "model": "m.onnx", "files": ["m.onnx"], "target_profiles": [profile]}
    with pytest.raises(BadDataError, match="module.json: each of 'target_profiles' must match") as refused:
        parse_module_spec(json.dumps(spec).encode())
    assert refused.value.code == "bad_module"
    assert BundleManifest.from_dict(doc | {"target_profiles": ["raspberry-pi-5"]}).target_profiles == (
        "raspberry-pi-5",)


def test_a_bundle_file_with_paths_that_differ_only_in_case_is_refused_when_built():
    with pytest.raises(ManifestError, match="differ only in case"):
        bundle_file.build_manifest(module="m", version=1, runtime="onnx", model="Model.onnx",
                                   files={"Model.onnx": b"1", "model.onnx": b"2"}, created=NOW)


def test_paths_that_differ_in_more_than_case_are_accepted():
    manifest = bundle_file.build_manifest(module="m", version=1, runtime="onnx", model="Model.onnx",
                                          files={"Model.onnx": b"1", "lib/model.onnx": b"2", "Lib2/x": b"3"},
                                          created=NOW)
    assert [f.path for f in manifest.files] == ["Lib2/x", "Model.onnx", "lib/model.onnx"]


PATTERN_CALLS = {"compile", "match", "search", "fullmatch"}


def _has_end_anchor(pattern: str | bytes) -> bool:
    """Whether the parsed pattern holds ``$`` (AT_END): an escaped ``\\$`` or a ``[$]`` is a literal dollar."""
    def walk(node) -> bool:
        if isinstance(node, (list, tuple, sre_parse.SubPattern)):
            return any(walk(item) for item in node)
        return node is sre_constants.AT_END
    return walk(sre_parse.parse(pattern))


def whole_match_offenders(source: str, where: str) -> list[str]:
    """Every ``.match(`` call on anything (a prefix match; product code has no non-regex ``.match``) and every
    ``re`` pattern literal with a ``$`` anchor (which also accepts a trailing newline); validation uses fullmatch.
    A pattern named by a module-level string constant counts as a literal."""
    tree = ast.parse(source)
    constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, (str, bytes))
                 for target in node.targets if isinstance(target, ast.Name)}
    offenders = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        receiver = ast.unparse(node.func.value)
        if node.func.attr == "match":
            offenders.append(f"{where}:{node.lineno}: {receiver}.match(...) matches a prefix")
        if receiver == "re" and node.func.attr in PATTERN_CALLS and node.args:
            first = node.args[0]
            pattern = first.value if isinstance(first, ast.Constant) else (
                constants.get(first.id) if isinstance(first, ast.Name) else None)
            if isinstance(pattern, (str, bytes)) and _has_end_anchor(pattern):
                offenders.append(f"{where}:{node.lineno}: re.{node.func.attr}({pattern!r}) anchors with $")
    return offenders


def test_no_product_code_validates_with_match_or_a_dollar_anchor():
    """``re.match``/``pattern.match`` accept a prefix and ``$`` a trailing newline: validation uses fullmatch."""
    offenders = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            offenders += whole_match_offenders(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert offenders == []


@pytest.mark.parametrize("source", [
    "NAME.match(value)", "self._pattern.match(value)", "compiled().match(v)", "re.match('[a-z]+', v)",
    "re.compile(r'[a-z]+$')", "re.search('^x$', v)", "re.compile('(a|b$)')", "re.fullmatch(b'x$', v)",
    "P = '[a-z]+$'\nre.compile(P)",
])
def test_the_whole_match_scan_flags_prefix_matches_and_dollar_anchors_on_any_receiver(source):
    assert whole_match_offenders(source, "x.py")


@pytest.mark.parametrize("source", [
    "NAME.fullmatch(value)", "re.compile(r'price in \\$')", "re.compile('[$]')", "re.compile(r'a\\Z')",
    "re.sub('$', '', v)",
])
def test_the_whole_match_scan_passes_fullmatch_and_a_literal_dollar(source):
    assert whole_match_offenders(source, "x.py") == []
