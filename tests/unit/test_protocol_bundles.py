"""Bundle manifests, bundle files and the trust checks applied to them."""

from __future__ import annotations

import io
import tarfile
from datetime import timedelta

import pytest

from fleet_protocol import bundle_file
from fleet_protocol.errors import (BadDataError, DigestMismatchError, ExpiredError, ManifestError, RollbackError,
                                   SignatureError, UnsafePathError)
from fleet_protocol.manifest import BundleManifest, check_relative_path, split_into_chunks
from fleet_protocol.messages import DesiredModule, DesiredState
from fleet_protocol.signing import SigningKey, sign_envelope
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from fleet_protocol.trust import TrustedState, check_chunk, check_file
from fleet_server.keys import new_signing_key

FILES = {"model.onnx": bytes(range(256)) * 3000, "main.py": b"def run(inputs):\n    return inputs\n"}


def make_manifest(version: int = 1, files: dict[str, bytes] = FILES, **extra) -> BundleManifest:
    return bundle_file.build_manifest(module="iris", version=version, runtime="onnx", model="model.onnx",
                                      files=files, created=to_iso(utc_now()), entry="main.py", **extra)


@pytest.fixture
def key() -> SigningKey:
    return new_signing_key()


def desired_module(manifest: BundleManifest, key: SigningKey) -> DesiredModule:
    return DesiredModule(manifest.module, manifest.version, manifest.digest, sign_envelope(manifest.to_dict(), key))


def test_bundle_file_round_trips_and_verifies(key):
    manifest = make_manifest()
    _, data = bundle_file.pack_bundle(manifest, FILES, key)
    _, read, files = bundle_file.read_bundle(data, [key.public_key])
    assert read.digest == manifest.digest
    assert files == FILES
    assert [c.size for c in read.file("model.onnx").chunks] == [262_144, 262_144, 243_712]


def test_bundle_signed_by_another_key_is_refused(key):
    _, data = bundle_file.pack_bundle(make_manifest(), FILES, new_signing_key())
    with pytest.raises(SignatureError, match="untrusted key"):
        bundle_file.read_bundle(data, [key.public_key])


def test_bundle_with_tampered_file_is_refused(key):
    manifest = make_manifest()
    _, data = bundle_file.pack_bundle(manifest, {**FILES, "main.py": b"import os; os.system('evil')\n"}, key)
    with pytest.raises(DigestMismatchError, match="main.py"):
        bundle_file.read_bundle(data, [key.public_key])


def test_bundle_with_tampered_manifest_is_refused(key):
    envelope = sign_envelope(make_manifest().to_dict(), key)
    envelope["signed"]["entry"] = "model.onnx"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        import json
        raw = json.dumps(envelope).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    with pytest.raises(SignatureError, match="does not verify"):
        bundle_file.read_bundle(buffer.getvalue(), [key.public_key])


@pytest.mark.parametrize("member_type", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
def test_bundle_with_link_or_special_file_is_refused(key, member_type):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("files/model.onnx")
        info.type = member_type
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        bundle_file.read_bundle(buffer.getvalue(), [key.public_key])


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "a//b", "a\\b", "", ".", "a/./b", "x\x00"])
def test_path_escaping_the_bundle_is_refused(path):
    with pytest.raises(UnsafePathError):
        check_relative_path(path)


def test_nested_relative_paths_are_allowed():
    assert check_relative_path("labels/en.json") == "labels/en.json"


def test_manifest_whose_chunks_do_not_add_up_is_refused():
    doc = make_manifest().to_dict()
    doc["files"][0]["size"] += 1
    with pytest.raises(ManifestError, match="do not add up"):
        BundleManifest.from_dict(doc)


def test_manifest_naming_a_model_it_does_not_list_is_refused():
    doc = make_manifest().to_dict()
    doc["model"] = "other.onnx"
    with pytest.raises(ManifestError, match="no file 'other.onnx'"):
        BundleManifest.from_dict(doc)


def test_chunk_not_in_manifest_is_refused():
    manifest = make_manifest()
    with pytest.raises(DigestMismatchError, match="not part of"):
        check_chunk(manifest, "0" * 64, b"x")
    first = FILES["model.onnx"][:262_144]
    check_chunk(manifest, split_into_chunks(first)[0].sha256, first)


def test_truncated_file_is_refused():
    entry = make_manifest().file("model.onnx")
    with pytest.raises(DigestMismatchError, match="bytes, manifest says"):
        check_file(entry, FILES["model.onnx"][:-1])


def test_module_with_lower_version_is_refused(key):
    trust = TrustedState("dev-1", [key.public_key])
    with pytest.raises(RollbackError, match="versions only go up"):
        trust.verify_module(desired_module(make_manifest(version=2), key), installed=(3, "a" * 64), now=utc_now())


def test_same_version_with_other_content_is_refused(key):
    trust = TrustedState("dev-1", [key.public_key])
    with pytest.raises(RollbackError):
        trust.verify_module(desired_module(make_manifest(version=3), key), installed=(3, "a" * 64), now=utc_now())


def test_module_whose_manifest_does_not_match_the_pinned_digest_is_refused(key):
    trust = TrustedState("dev-1", [key.public_key])
    module = desired_module(make_manifest(), key)
    module = DesiredModule(module.name, module.version, "b" * 64, module.manifest)
    with pytest.raises(DigestMismatchError, match="pins"):
        trust.verify_module(module, installed=None, now=utc_now())


def test_expired_bundle_is_refused(key):
    trust = TrustedState("dev-1", [key.public_key])
    manifest = make_manifest(expires=to_iso(utc_now() - timedelta(minutes=1)))
    with pytest.raises(ExpiredError):
        trust.verify_module(desired_module(manifest, key), installed=None, now=utc_now())


def desired_envelope(key: SigningKey, *, device_id: str = "dev-1", generation: int = 5, expires=None) -> dict:
    state = DesiredState(device_id, generation, to_iso(utc_now()), (), expires=expires)
    return sign_envelope(state.to_dict(), key)


def test_desired_state_for_another_device_is_refused(key):
    with pytest.raises(SignatureError, match="for device 'dev-2'"):
        TrustedState("dev-1", [key.public_key]).verify_desired_state(desired_envelope(key, device_id="dev-2"),
                                                                     now=utc_now())


def test_older_desired_state_generation_is_refused(key):
    trust = TrustedState("dev-1", [key.public_key], last_generation=6)
    with pytest.raises(RollbackError, match="older"):
        trust.verify_desired_state(desired_envelope(key, generation=5), now=utc_now())


def test_same_desired_state_generation_is_accepted_again(key):
    trust = TrustedState("dev-1", [key.public_key], last_generation=5)
    assert trust.verify_desired_state(desired_envelope(key, generation=5), now=utc_now()).generation == 5


def test_unsigned_desired_state_is_refused(key):
    envelope = desired_envelope(key)
    envelope["signatures"] = []
    with pytest.raises(SignatureError, match="unsigned"):
        TrustedState("dev-1", [key.public_key]).verify_desired_state(envelope, now=utc_now())


def test_not_a_bundle_file_gets_a_clear_error(key):
    with pytest.raises(BadDataError, match="not a bundle file"):
        bundle_file.read_bundle(b"garbage" * 100, [key.public_key])
