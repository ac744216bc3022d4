"""Installer: assemble, check, rename, switch; a crash at any step leaves the old version fully in place."""

from __future__ import annotations

import json
import os

import pytest

from edge_agent import installer as installer_module
from edge_agent.installer import Installer
from fleet_protocol.errors import DigestMismatchError
from fleet_server.keys import new_signing_key
from tests.agent.helpers import make_bundle, stage

KEY = new_signing_key()


class Crash(Exception):
    """Stands for the power going out between two steps."""


@pytest.fixture
def installed(tmp_path):
    inst = Installer(tmp_path)
    first = make_bundle(KEY, version=1, seed=1)
    stage(tmp_path, first)
    inst.install(first.manifest, first.envelope)
    return inst, first


def assert_intact(inst: Installer, bundle) -> None:
    record = inst.active("linear")
    assert (record.version, record.digest) == (bundle.version, bundle.digest)
    for path, data in bundle.files.items():
        assert (record.dir / path).read_bytes() == data


def test_install_switches_active_json_and_keeps_the_previous_version(installed, tmp_path):
    inst, first = installed
    second = make_bundle(KEY, version=2, seed=2)
    stage(tmp_path, second)
    record = inst.install(second.manifest, second.envelope)
    assert_intact(inst, second)
    assert record.previous.version == 1 and record.previous.dir.is_dir()
    assert not (tmp_path / "staging" / second.digest).exists()
    assert json.loads((tmp_path / "modules/linear/active.json").read_text())["manifest"] == second.envelope


@pytest.mark.parametrize("step", ["assemble", "fsync", "rename", "switch", "replace"])
def test_a_crash_at_any_install_step_leaves_the_old_version_fully_in_place(installed, tmp_path, monkeypatch, step):
    inst, first = installed
    second = make_bundle(KEY, version=2, seed=2)
    stage(tmp_path, second)

    def crash(*args, **kwargs):
        raise Crash(step)

    target = {"assemble": (installer_module, "check_file"), "fsync": (installer_module, "fsync_dir"),
              "rename": (installer_module.os, "rename"), "switch": (installer_module, "write_atomic"),
              "replace": (installer_module.os, "replace")}[step]
    monkeypatch.setattr(*target, crash)
    with pytest.raises(Crash):
        inst.install(second.manifest, second.envelope)
    monkeypatch.undo()

    assert_intact(inst, first)
    restarted = Installer(tmp_path)  # what the agent does at its next start
    restarted.collect_garbage()
    assert_intact(restarted, first)
    assert sorted(p.name for p in (tmp_path / "modules/linear").iterdir()) == [f"1-{first.digest[:12]}", "active.json"]
    restarted.install(second.manifest, second.envelope)  # the staged chunks are still there: install resumes
    assert_intact(restarted, second)


def test_a_file_that_does_not_match_its_digest_is_refused_and_nothing_is_switched(installed, tmp_path):
    inst, first = installed
    second = make_bundle(KEY, version=2, seed=2)
    chunks = stage(tmp_path, second)
    victim = second.manifest.file("model.onnx").chunks[0].sha256
    (chunks / victim).write_bytes(b"\0" * second.manifest.file("model.onnx").chunks[0].size)
    with pytest.raises(DigestMismatchError):
        inst.install(second.manifest, second.envelope)
    assert_intact(inst, first)
    assert not (tmp_path / "staging" / second.digest / "tree").exists()


def test_a_missing_chunk_is_refused(installed, tmp_path):
    inst, first = installed
    second = make_bundle(KEY, version=2, seed=2)
    chunks = stage(tmp_path, second)
    (chunks / second.manifest.file("model.onnx").chunks[0].sha256).unlink()
    with pytest.raises(DigestMismatchError, match="missing"):
        inst.install(second.manifest, second.envelope)
    assert_intact(inst, first)


def test_rollback_makes_the_previous_version_active_and_deletes_the_failed_one(installed, tmp_path):
    inst, first = installed
    second = make_bundle(KEY, version=2, seed=2)
    stage(tmp_path, second)
    failed_dir = inst.install(second.manifest, second.envelope).dir
    record = inst.rollback("linear")
    assert (record.version, record.previous) == (1, None)
    assert_intact(inst, first)
    assert not failed_dir.exists()


def test_remove_deletes_active_json_and_every_version(installed, tmp_path):
    inst, _ = installed
    inst.remove("linear")
    assert inst.active("linear") is None
    assert not (tmp_path / "modules/linear").exists()


def test_files_in_nested_folders_are_installed_inside_the_version_directory(tmp_path):
    inst = Installer(tmp_path)
    bundle = make_bundle(KEY, version=1, extra_files={"assets/labels/en.txt": b"cat\ndog\n"})
    stage(tmp_path, bundle)
    record = inst.install(bundle.manifest, bundle.envelope)
    assert (record.dir / "assets/labels/en.txt").read_bytes() == b"cat\ndog\n"
    assert os.path.commonpath([record.dir, (record.dir / "assets/labels/en.txt").resolve()]) == str(record.dir)
