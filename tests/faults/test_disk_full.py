"""A device whose disk fills during a download reports why, keeps serving the old version, and resumes.

The agent's state directory is a 2 MiB tmpfs (needs root and permission to mount; skipped with the reason
otherwise). Version 2 carries 3 MiB, so its download hits ENOSPC part way. The agent must report the module
with an error of category ``resources`` or ``download``, keep serving version 1, and, once the tmpfs grows
(``mount -o remount,size=...``: space freed), finish version 2 without fetching again what it already held.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from tests.agent.helpers import FakeServer
from tests.support.fleet import start_agent

from .conftest import infer_version

MODULE = "linear"


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root and mount permission): {result.stderr.strip()}")


def resize_tmpfs(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path):
    state = tmp_path / "full-1" / "state"
    mount_tmpfs(state, "2m")
    yield state
    subprocess.run(["umount", "-l", str(state)], capture_output=True)


def test_download_that_fills_the_disk_is_reported_keeps_the_old_version_and_resumes_when_space_is_freed(
        tmp_path, mosquitto, fake_server: FakeServer, small_disk):
    agent = start_agent(tmp_path, "full-1", broker_url=mosquitto.url, key_hex=fake_server.key_hex,
                        fetch_window_chunks=4, fetch_timeout_s=1)
    assert agent.state_dir == small_disk
    try:
        v1 = fake_server.bundle(module=MODULE, version=1, seed=1, chunk_size=64 * 1024)
        fake_server.publish_desired(agent.device_id, 1, [v1])
        fake_server.wait_running(agent.device_id, MODULE, 1, timeout=60)
        v2 = fake_server.bundle(module=MODULE, version=2, seed=2, chunk_size=64 * 1024,
                                extra_files={"weights.bin": random.Random(2).randbytes(3 * 1024 * 1024)})
        fake_server.publish_desired(agent.device_id, 2, [v2])
        report = fake_server.wait_module(agent.device_id, MODULE, lambda m: m.error is not None, timeout=60,
                                         what="the agent to report the full disk")
        print("reported:", report)
        assert report.error["category"] in ("resources", "download"), report.error
        assert report.version == 1
        assert agent.popen.poll() is None, f"the agent died on a full disk:\n{agent.tail()}"
        assert infer_version(agent.scoring_url) == 1

        requested_before = len({sha for r in fake_server.fetch_requests for sha in r.chunks})
        fake_server.fetch_requests.clear()
        resize_tmpfs(small_disk, "64m")
        fake_server.wait_running(agent.device_id, MODULE, 2, timeout=90)
        assert infer_version(agent.scoring_url) == 2
        refetched = {sha for r in fake_server.fetch_requests for sha in r.chunks}
        total = len(v2.chunks())
        print(f"chunks: {total} in v2, {requested_before} requested before the disk filled, "
              f"{len(refetched)} after space was freed")
        assert len(refetched) < total, "the download started over instead of resuming"
    finally:
        agent.stop()


def test_full_disk_is_named_as_such_and_does_not_flood_the_log(tmp_path, mosquitto, fake_server: FakeServer,
                                                                small_disk):
    agent = start_agent(tmp_path, "full-1", broker_url=mosquitto.url, key_hex=fake_server.key_hex,
                        fetch_window_chunks=4, fetch_timeout_s=1)
    try:
        v1 = fake_server.bundle(module=MODULE, version=1, seed=1, chunk_size=64 * 1024)
        fake_server.publish_desired(agent.device_id, 1, [v1])
        fake_server.wait_running(agent.device_id, MODULE, 1, timeout=60)
        v2 = fake_server.bundle(module=MODULE, version=2, seed=2, chunk_size=64 * 1024,
                                extra_files={"weights.bin": random.Random(2).randbytes(3 * 1024 * 1024)})
        fake_server.publish_desired(agent.device_id, 2, [v2])
        report = fake_server.wait_module(agent.device_id, MODULE, lambda m: m.error is not None, timeout=60,
                                         what="the agent to report the full disk")
        lines = agent.log.read_text(errors="replace").count("\n")
        assert report.error["category"] == "resources" and "space" in report.error["message"], report.error
        assert lines < 200, f"the agent log grew to {lines} lines within seconds of the disk filling"
    finally:
        agent.stop()
