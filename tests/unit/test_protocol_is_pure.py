"""fleet_protocol does no I/O: no files, no clock, no randomness, no network. Trust decisions are functions of
bytes and an explicit ``now``; the agent and the server do the reading, the clock and key generation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import firmware_profiles
import fleet_protocol
from edge_agent.identity import new_device_key_and_csr
from firmware_profiles import load_profile
from fleet_protocol.profiles import ProfileError, parse_profile_toml
from fleet_protocol.root import make_csr
from fleet_protocol.signing import SigningKey

PACKAGE = Path(fleet_protocol.__file__).parent
IO_MODULES = {"os", "pathlib", "time", "random", "secrets", "socket", "subprocess", "shutil",
              "tempfile", "sqlite3", "urllib", "http", "httpx", "requests", "paho", "importlib", "uuid", "glob"}
IO_BUILTINS = {"open", "input", "print", "exec", "eval", "__import__"}
IO_METHODS = {
    "now", "utcnow", "today", "monotonic", "perf_counter",  # the clock
    "urandom", "generate", "generate_private_key", "token_bytes", "token_hex",  # randomness and key generation
    "read_text", "read_bytes", "write_text", "write_bytes", "iterdir", "mkdir", "unlink", "rename",
}
ALLOWED = {("bundle_file.py", "tarfile.open(fileobj=...)")}  # a tar read from and written to bytes in memory


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def io_uses(source: str, filename: str) -> list[str]:
    """Every import of an I/O module and every call that reads files, the clock or randomness, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{filename}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in IO_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in IO_MODULES:
            found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = dotted(node.func)
            if name == "tarfile.open" and any(k.arg == "fileobj" for k in node.keywords):
                name = "tarfile.open(fileobj=...)"
            elif isinstance(node.func, ast.Name) and node.func.id not in IO_BUILTINS:
                continue
            elif isinstance(node.func, ast.Attribute) and node.func.attr not in IO_METHODS | {"open", "load"}:
                continue
            if (filename, name) not in ALLOWED:
                found.append(f"{filename}:{node.lineno}: {name}(...)")
    return found


def test_fleet_protocol_reads_no_file_clock_or_randomness():
    uses = [use for path in sorted(PACKAGE.glob("*.py")) for use in io_uses(path.read_text(), path.name)]
    assert uses == []


@pytest.mark.parametrize("source, found", [
    ("from datetime import datetime\nnow = datetime.now()\n", "m.py:2: datetime.now(...)"),
    ("import time\n", "m.py:1: import time"),
    ("data = open('f').read()\n", "m.py:1: open(...)"),
    ("from importlib import resources\n", "m.py:1: from importlib import ..."),
    ("key = Ed25519PrivateKey.generate()\n", "m.py:1: Ed25519PrivateKey.generate(...)"),
    ("text = path.read_bytes()\n", "m.py:1: path.read_bytes(...)"),
    ("doc = tomllib.load(f)\n", "m.py:1: tomllib.load(...)"),
])
def test_the_purity_scan_finds_each_kind_of_io(source, found):
    assert io_uses(source, "m.py") == [found]


def test_the_purity_scan_allows_only_an_in_memory_tar_in_bundle_file():
    source = "import io, tarfile\ntarfile.open(fileobj=io.BytesIO(b''))\n"
    assert io_uses(source, "bundle_file.py") == []
    assert io_uses("tarfile.open('x.tar')\n", "bundle_file.py") == ["bundle_file.py:1: tarfile.open(...)"]


def test_a_profile_is_a_function_of_its_bytes_and_the_loader_reads_the_file():
    data = (Path(firmware_profiles.__file__).parent / "generic-cpu.toml").read_bytes()
    profile = parse_profile_toml(data, source="generic-cpu.toml", expected_name="generic-cpu")
    assert profile == load_profile("generic-cpu")
    with pytest.raises(ProfileError, match="field 'name' is 'generic-cpu', expected 'other'"):
        parse_profile_toml(data, source="other.toml", expected_name="other")


def test_signing_keys_and_csrs_are_functions_of_the_bytes_the_caller_supplies():
    seed = bytes(range(32))
    assert SigningKey.from_seed(seed).public_key.keyid == SigningKey.from_seed(seed).public_key.keyid
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey.from_seed(b"short")
    key_pem, csr_pem = new_device_key_and_csr("cam-1")
    assert b"CERTIFICATE REQUEST" in make_csr("cam-1", key_pem) and b"CERTIFICATE REQUEST" in csr_pem

