"""CLI behaviour that needs no server: argument parsing, module packing, bundle inspect/verify, errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import httpx
import pytest
from typer.testing import CliRunner

from edgefleet_cli.client import ApiClient
from edgefleet_cli.commands.model import confusion_table, split_ref
from edgefleet_cli.commands.module import pack_module_folder
from edgefleet_cli.errors import CliError
from edgefleet_cli.main import app
from edgefleet_cli.output import parse_tags
from fleet_protocol import bundle_file
from fleet_protocol.signing import SigningKey
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from fleet_server.keys import new_signing_key

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


@pytest.mark.parametrize("command", [["model", "drift"], ["model", "delete", "--yes"]])
def test_bad_version_error_names_the_form_the_command_takes(command):
    result = runner.invoke(app, [*command, "iris-classifier:x", "--server", "http://127.0.0.1:9"])
    assert isinstance(result.exception, CliError) and result.exception.exit_code == 2
    assert str(result.exception) == "'iris-classifier:x' is not NAME:VERSION (VERSION is a number)"


SPEC = {"name": "m", "runtime": "onnx", "model": "model.onnx", "files": ["model.onnx"]}


def test_confusion_matrix_is_square_over_every_class_labelled_or_predicted():
    classes, rows = confusion_table({"0": {"0": 1}, "2": {"1": 1}})  # class 2 never predicted, 1 never labelled
    assert classes == ["0", "1", "2"]
    assert rows == [("0", 1, 0, 0), ("1", 0, 0, 0), ("2", 0, 1, 0)]


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
    key = new_signing_key()
    path = _bundle(tmp_path, key, {"model.onnx": b"model bytes"})
    result = runner.invoke(app, ["bundle", "verify", str(path), "--key", key.public_key.to_hex(), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["valid"] is True


def test_bundle_verify_refuses_a_tampered_bundle_with_the_reason(tmp_path):
    key = new_signing_key()
    path = _bundle(tmp_path, key, {"model.onnx": b"evil bytes!"})
    result = runner.invoke(app, ["bundle", "verify", str(path), "--key", key.public_key.to_hex()])
    assert result.exit_code == 1
    assert isinstance(result.exception, CliError) and "model.onnx" in str(result.exception)


def test_bundle_inspect_prints_the_manifest_as_json(tmp_path):
    path = _bundle(tmp_path, new_signing_key(), {"model.onnx": b"model bytes"})
    result = runner.invoke(app, ["bundle", "inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["manifest"]["module"] == "m"


def test_server_commands_say_when_the_server_is_unreachable():
    result = runner.invoke(app, ["device", "list", "--server", "http://127.0.0.1:9"])
    assert isinstance(result.exception, CliError)
    assert "cannot reach the fleet server" in str(result.exception)


def edgefleet(*args: str, block: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process; ``block``: a module made unimportable, as on an install without its extra."""
    code = (f"import sys; sys.modules[{block!r}] = None; " if block else "import sys; ") + \
        f"sys.argv = ['edgefleet', *{list(args)!r}]; from edgefleet_cli.main import main; main()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_errors_are_one_line_on_stderr_with_a_non_zero_exit():
    result = edgefleet("device", "list", "--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the fleet server")
    assert "Traceback" not in result.stderr


def test_an_error_is_exactly_one_line_whatever_the_terminal_width(tmp_path):
    """Long messages are not wrapped (at 80 columns when not a terminal) and brackets in them are not markup."""
    (tmp_path / "module.json").write_text(json.dumps({**SPEC, "[bold]entyr[/bold]": "main.py"}))
    for width in ("20", "80", "300"):
        result = edgefleet("module", "build", str(tmp_path), COLUMNS=width)
        assert result.returncode == 1
        assert len(result.stderr.splitlines()) == 1 and len(result.stderr) > 100, result.stderr
        assert result.stderr.startswith("error: ") and "'[bold]entyr[/bold]'" in result.stderr


def test_tables_take_the_width_of_the_terminal_when_printed_not_when_the_console_was_made():
    """A process whose COLUMNS changes after the console exists (an xdist worker has COLUMNS=80) prints at the new width."""
    script = (
        "import os\n"
        "from edgefleet_cli import output\n"
        "output.console.print('made')\n"  # the shared console exists now, made at 30 columns
        "os.environ['COLUMNS'] = '200'\n"
        "output.print_table('variants', ['variant', 'accuracy (95 % CI) on the labelled samples'], [['b', '0.91']])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={**os.environ, "COLUMNS": "30"})
    assert "accuracy (95 % CI) on the labelled samples" in result.stdout, result.stdout


@pytest.mark.parametrize(("args", "help_of"), [
    (["model", "shw"], "model"),
    (["agent", "enroll", "--server", "x", "--token", "a.b", "--scoring-port", "70000"], "agent enroll"),
], ids=["command", "option"])
def test_a_usage_error_is_one_line_naming_the_help_to_read(args, help_of):
    result = edgefleet(*args, COLUMNS="40")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and f"(see `edgefleet {help_of} --help`)" in result.stderr


def test_no_arguments_shows_the_help():
    result = edgefleet()
    assert result.returncode == 2 and "Usage: edgefleet" in result.stdout and result.stderr == ""


@pytest.mark.parametrize(("block", "args", "extra"), [
    ("uvicorn", ["server", "run", "--data-dir", "{tmp}/data"], "server"),
    ("fastapi", ["server", "run", "--data-dir", "{tmp}/data"], "server"),
    ("sqlalchemy", ["server", "run", "--data-dir", "{tmp}/data"], "server"),
    ("amqtt", ["server", "run", "--data-dir", "{tmp}/data", "--port", "0", "--broker-port", "0"], "server"),
    ("fastapi", ["demo", "--workdir", "{tmp}/demo"], "server"),
    ("paho", ["agent", "run", "--config", "{tmp}/agent.toml"], "agent"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_command_whose_extra_is_missing_says_which_to_install_in_one_line(tmp_path, block, args, extra):
    (tmp_path / "agent.toml").write_text("")
    result = edgefleet(*(arg.replace("{tmp}", str(tmp_path)) for arg in args), block=block)
    assert result.returncode == 1
    command = " ".join(arg for arg in args[:2] if not arg.startswith("-"))
    assert result.stderr == f"error: `edgefleet {command}` needs the {extra} extra: pip install " \
                            f"'edgefleet[{extra}]' (the module {block!r} is not installed)\n"


def test_simulate_setting_typo_is_refused_naming_the_nearest_agent_setting(tmp_path):
    result = runner.invoke(app, ["simulate", "--devices", "1", "--broker", "mqtt://127.0.0.1:1", "--trusted-key",
                                 new_signing_key().public_key.to_hex(), "--set", "heartbeat=3", "--dir",
                                 str(tmp_path)])
    assert isinstance(result.exception, CliError) and result.exception.exit_code == 2
    assert "did you mean 'heartbeat_interval_s'" in str(result.exception)
    assert not any(tmp_path.iterdir())


def test_a_server_that_cannot_start_says_why_in_one_line(tmp_path):
    result = edgefleet("server", "run", "--data-dir", str(tmp_path / "data"), "--port", "0", "--broker", "http://x")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: the server stopped: broker URL 'http://x' must look like")


def test_server_errors_name_no_rest_route():
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "model 'iris' has no version 9"})

    client = ApiClient("http://fleet.test")
    client._http = httpx.Client(base_url=client.server, transport=httpx.MockTransport(answer))
    with pytest.raises(CliError) as caught:
        client.get("/api/models/iris/versions/9")
    assert str(caught.value) == "model 'iris' has no version 9 (the server answered 404)"


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
