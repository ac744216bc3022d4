"""A bundle the disk cannot hold is refused before its first chunk: ``resources/disk_full``, nothing downloaded.
An A/B variant that does not fit is reported the same way (``variant_failed``), and while a download waits for
space the reconciler's work lock is free (crash-loop restarts of other modules are not held up).

The agent's state directory is the 2 MiB tmpfs of ``test_disk_full`` (its ``small_disk`` fixture). The
second version is a real signed bundle whose manifest lists a 1.9 GB weights file: the check runs on the
manifest (its chunks plus the assembled copy against the free space), so the data never has to exist.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading

from edge_agent.agent import Agent
from fleet_protocol.messages import DesiredModule, DesiredVariant

from fleet_protocol.manifest import BundleManifest, ChunkRef, FileEntry
from fleet_protocol.signing import sign_envelope
from tests.agent.conftest import agent_config
from tests.agent.helpers import Bundle, FakeServer
from tests.support.fleet import start_agent

from tests.support.net import wait_for

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


def work_lock_is_free(agent: Agent) -> bool:
    """Another thread (a crash-loop restart's timer) can take the reconciler's work lock within 2 s."""
    taken: list[bool] = []

    def take() -> None:
        if agent.reconciler._work.acquire(timeout=2):
            agent.reconciler._work.release()
            taken.append(True)

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return taken == [True]


def test_variant_that_does_not_fit_the_disk_is_reported_and_waits_without_the_work_lock(
        tmp_path, mosquitto, fake_server: FakeServer, small_disk):  # noqa: F811 - the imported fixture
    agent = Agent(agent_config(tmp_path, mosquitto.url, fake_server.key_hex, "full-1"))  # in-process: its lock
    assert agent.config.state_dir == small_disk
    agent.start()
    try:
        v1 = fake_server.bundle(module=MODULE, version=1, seed=1)
        fake_server.publish_desired(agent.device_id, 1, [v1])
        fake_server.wait_running(agent.device_id, MODULE, 1, timeout=60)
        huge = nearly_2_gb(fake_server, 2)
        variant = DesiredVariant(2, huge.digest, huge.envelope, 50)
        split = DesiredModule(MODULE, 1, v1.digest, v1.envelope, 50, (variant,))
        fake_server.publish_desired(agent.device_id, 2, [], modules=[split])
        report = fake_server.wait_module(agent.device_id, MODULE, lambda m: m.error is not None, timeout=60,
                                         what="the agent to report the variant it has no room for")
        assert (report.error["category"], report.error["code"]) == ("resources", "disk_full"), report.error
        assert report.version == 1 and report.target_version == 1
        wait_for(lambda: [r for r in fake_server.records("event") if r.data.get("event") == "variant_failed"
                          and r.data.get("code") == "disk_full"], what="the variant_failed event")
        assert not agent.reconciler.idle.is_set(), "the variant's download should still be waiting for space"
        assert work_lock_is_free(agent), "the wait for disk space holds the reconciler's work lock"
        assert [r for r in fake_server.fetch_requests if r.bundle_digest == huge.digest] == []
        assert infer_version(agent.scoring_url) == 1
    finally:
        agent.stop()
