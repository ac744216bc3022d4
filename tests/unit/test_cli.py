"""CLI behaviour that needs no server: argument parsing, module packing, bundle inspect/verify, errors."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from typer.testing import CliRunner

from edgefleet_cli.commands.model import split_ref
from edgefleet_cli.commands.module import pack_module_folder
from edgefleet_cli.errors import CliError
from edgefleet_cli.main import app
from edgefleet_cli.output import parse_tags
from fleet_protocol import bundle_file
from fleet_protocol.signing import SigningKey
from fleet_protocol.timestamps import to_iso, utc_now

runner = CliRunner()


def test_tags_parse_from_repeated_and_comma_separated_options():
    assert parse_tags(["site=berlin,tier=a", "profile=pi"]) == {"site": "berlin", "tier": "a", "profile": "pi"}


def test_tag_without_equals_sign_is_a_usage_error():
    with pytest.raises(CliError, match="key=value") as caught:
        parse_tags(["site"])
    assert caught.value.exit_code == 2


def test_model_reference_with_non_numeric_version_is_refused():
    assert split_ref("iris:3") == ("iris", 3)
    assert split_ref("iris") == ("iris", None)
    with pytest.raises(CliError, match="NAME:VERSION"):
        split_ref("iris:latest")


SPEC = {"name": "m", "runtime": "onnx", "model": "model.onnx", "files": ["model.onnx"]}


def test_module_folder_packs_module_json_and_only_the_listed_files(tmp_path):
    (tmp_path / "module.json").write_text(json.dumps(SPEC))
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "secret.key").write_text("do not ship")
    with tarfile.open(fileobj=io.BytesIO(pack_module_folder(tmp_path)), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["model.onnx", "module.json"]


def test_module_folder_listing_a_missing_file_is_refused(tmp_path):
    (tmp_path / "module.json").write_text(json.dumps(SPEC))
    with pytest.raises(CliError, match="lists 'model.onnx'"):
        pack_module_folder(tmp_path)


def test_module_json_typo_is_refused_before_the_upload_naming_the_nearest_key(tmp_path):
    (tmp_path / "module.json").write_text(json.dumps({**SPEC, "files": ["model.onnx", "main.py"], "entyr": "main.py"}))
    result = runner.invoke(app, ["module", "build", str(tmp_path), "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and isinstance(result.exception, CliError)
    assert "'entyr'" in str(result.exception) and "did you mean 'entry'" in str(result.exception)


def _bundle(tmp_path, key: SigningKey, files: dict[str, bytes]):
    manifest = bundle_file.build_manifest(module="m", version=1, runtime="onnx", model="model.onnx",
                                          files={"model.onnx": b"model bytes"}, created=to_iso(utc_now()))
    _, data = bundle_file.pack_bundle(manifest, files, key)
    path = tmp_path / "m.efb"
    path.write_bytes(data)
    return path


def test_bundle_verify_accepts_a_bundle_signed_by_the_given_key(tmp_path):
    key = SigningKey.generate()
    path = _bundle(tmp_path, key, {"model.onnx": b"model bytes"})
    result = runner.invoke(app, ["bundle", "verify", str(path), "--key", key.public_key.to_hex(), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["valid"] is True


def test_bundle_verify_refuses_a_tampered_bundle_with_the_reason(tmp_path):
    key = SigningKey.generate()
    path = _bundle(tmp_path, key, {"model.onnx": b"evil bytes!"})
    result = runner.invoke(app, ["bundle", "verify", str(path), "--key", key.public_key.to_hex()])
    assert result.exit_code == 1
    assert isinstance(result.exception, CliError) and "model.onnx" in str(result.exception)


def test_bundle_inspect_prints_the_manifest_as_json(tmp_path):
    path = _bundle(tmp_path, SigningKey.generate(), {"model.onnx": b"model bytes"})
    result = runner.invoke(app, ["bundle", "inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["manifest"]["module"] == "m"


def test_server_commands_say_when_the_server_is_unreachable():
    result = runner.invoke(app, ["device", "list", "--server", "http://127.0.0.1:9"])
    assert isinstance(result.exception, CliError)
    assert "cannot reach the fleet server" in str(result.exception)


def test_errors_are_one_line_on_stderr_with_a_non_zero_exit():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "device", "list", "--server",
                             "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the fleet server")
    assert "Traceback" not in result.stderr


def test_profile_validate_names_the_missing_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n')
    result = runner.invoke(app, ["profile", "validate", str(bad)])
    assert result.exit_code != 0
    assert "missing field 'arch'" in str(result.exception)


def test_profile_list_shows_every_shipped_profile_as_json():
    result = runner.invoke(app, ["profile", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert {"generic-cpu", "jetson-orin-nano", "coral-dev-board"} <= {p["name"] for p in json.loads(result.stdout)}
