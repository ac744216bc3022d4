"""A bundle the disk cannot hold is refused before its first chunk: ``resources/disk_full``, nothing downloaded.

The agent's state directory is the 2 MiB tmpfs of ``test_disk_full`` (its ``small_disk`` fixture). The
second version is a real signed bundle whose manifest lists a 1.9 GB weights file: the check runs on the
manifest (its chunks plus the assembled copy against the free space), so the data never has to exist.
"""

from __future__ import annotations

import dataclasses
import hashlib

from fleet_protocol.manifest import BundleManifest, ChunkRef, FileEntry
from fleet_protocol.signing import sign_envelope
from tests.agent.helpers import Bundle, FakeServer
from tests.support.fleet import start_agent

from .conftest import infer_version
from .test_disk_full import small_disk  # noqa: F401 - the fixture

MODULE = "linear"
CLAIMED_BYTES = 1_900_000_000
CHUNK_BYTES = 4 * 1024 * 1024


def nearly_2_gb(server: FakeServer, version: int) -> Bundle:
    """A signed bundle: the real model, plus a 1.9 GB ``weights.bin`` that exists only in the manifest."""
    real = server.bundle(module=MODULE, version=version, seed=version)
    count, last = divmod(CLAIMED_BYTES, CHUNK_BYTES)
    sizes = [CHUNK_BYTES] * count + ([last] if last else [])
    chunks = tuple(ChunkRef(hashlib.sha256(b"weights %d" % i).hexdigest(), size) for i, size in enumerate(sizes))
    weights = FileEntry("weights.bin", hashlib.sha256(b"never sent").hexdigest(), CLAIMED_BYTES, chunks)
    manifest = BundleManifest.from_dict(dataclasses.replace(
        real.manifest, files=real.manifest.files + (weights,), chunk_size=CHUNK_BYTES).to_dict())
    return Bundle(manifest, sign_envelope(manifest.to_dict(), server.key), real.files)  # nothing here to serve


def test_bundle_larger_than_the_free_disk_is_refused_as_disk_full_before_its_first_chunk(
        tmp_path, mosquitto, fake_server: FakeServer, small_disk):  # noqa: F811 - the imported fixture
    agent = start_agent(tmp_path, "full-1", broker_url=mosquitto.url, key_hex=fake_server.key_hex)
    assert agent.state_dir == small_disk
    try:
        v1 = fake_server.bundle(module=MODULE, version=1, seed=1)
        fake_server.publish_desired(agent.device_id, 1, [v1])
        fake_server.wait_running(agent.device_id, MODULE, 1, timeout=60)
        huge = nearly_2_gb(fake_server, 2)
        fake_server.publish_desired(agent.device_id, 2, [huge])
        report = fake_server.wait_module(agent.device_id, MODULE, lambda m: m.error is not None, timeout=60,
                                         what="the agent to refuse the bundle for lack of space")
        assert (report.error["category"], report.error["code"]) == ("resources", "disk_full"), report.error
        assert "3800.0 MB" in report.error["message"] and "nothing was downloaded" in report.error["message"]
        assert report.version == 1 and report.target_version == 2
        assert [r for r in fake_server.fetch_requests if r.bundle_digest == huge.digest] == []
        assert not [p for p in (small_disk / "staging" / huge.digest).rglob("*") if p.is_file()]
        assert infer_version(agent.scoring_url) == 1
    finally:
        agent.stop()
