"""The chunk sender's rules: each chunk published once for every device listening, again only for one that missed it.

Pure scheduling logic: the fleet is a recorder of publishes (no broker), the chunks are in memory.
"""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from fleet_protocol import bundle_crypto, topics
from fleet_server.chunk_sender import ChunkSender
from tests.support.net import wait_for

BUNDLE = "b" * 64
CHUNKS = {hashlib.sha256(data).hexdigest(): data for data in (c.encode() * 100 for c in "0123")}
KEY = bytes(range(32))


class RecordingFleet:
    """Stands in for the fleet: keeps each published chunk's digest."""

    def __init__(self, *, link_up: bool = True):
        self.chunks = self
        self.link_up = link_up
        self.published: list[str] = []
        self.attempts = 0
        self._lock = threading.Lock()

    def get(self, digest: str) -> bytes:
        return CHUNKS[digest]

    def publish(self, topic: str, payload: bytes, qos: int) -> bool:
        assert topic == topics.bundle_chunks_topic(BUNDLE) and qos == 1
        self.attempts += 1
        if not self.link_up:
            return False
        cid, sealed = bundle_crypto.split_chunk(payload)
        sha = next(s for s in CHUNKS if bundle_crypto.chunk_id(KEY, s) == cid)
        assert bundle_crypto.decrypt_chunk(KEY, BUNDLE, cid, sealed) == CHUNKS[sha]
        with self._lock:
            self.published.append(sha)
        return True


@pytest.fixture
def sent():
    fleet = RecordingFleet()
    sender = ChunkSender(fleet, content_key=lambda digest: KEY, gather_s=0.05, resend_s=0.2, recent_s=1.0)
    yield fleet, sender
    sender.stop()


def settle(fleet: RecordingFleet, count: int) -> list[str]:
    wait_for(lambda: len(fleet.published) >= count, timeout=5, what=f"{count} publishes")
    time.sleep(0.3)  # longer than gather_s and resend_s: anything else due would have gone out
    return list(fleet.published)


def test_every_chunk_goes_out_once_however_many_devices_ask_while_listening(sent):
    fleet, sender = sent
    window = list(CHUNKS)[:2]
    sender.request(BUNDLE, "b", window)  # b subscribed and asks for its first window
    for device in ("a", "c"):
        sender.request(BUNDLE, device, list(CHUNKS))
    published = settle(fleet, len(CHUNKS))
    assert sorted(published) == sorted(CHUNKS)
    # b's window slides on to chunks published after it started listening: the broker already delivered them
    assert sender.request(BUNDLE, "b", list(CHUNKS)[2:]) == 0
    assert settle(fleet, len(CHUNKS)) == published and sender.publishes == len(CHUNKS)


def test_a_device_asking_again_for_a_chunk_gets_it_once_more(sent):
    fleet, sender = sent
    first = list(CHUNKS)[0]
    sender.request(BUNDLE, "a", [first])
    settle(fleet, 1)
    assert sender.request(BUNDLE, "a", [first]) == 1  # it asked before, so it missed it (e.g. reconnected)
    assert settle(fleet, 2) == [first, first]


def test_a_device_joining_long_after_a_broadcast_gets_the_chunks_again(sent):
    fleet, sender = sent
    sender.request(BUNDLE, "a", list(CHUNKS))
    settle(fleet, len(CHUNKS))
    time.sleep(1.1)  # past recent_s: no broadcast under way
    assert sender.request(BUNDLE, "late", list(CHUNKS)) == len(CHUNKS)
    assert sorted(settle(fleet, 2 * len(CHUNKS))[len(CHUNKS):]) == sorted(CHUNKS)


def test_a_publish_that_failed_is_retried_at_the_next_request():
    fleet = RecordingFleet(link_up=False)
    sender = ChunkSender(fleet, content_key=lambda digest: KEY, gather_s=0.05, resend_s=0.2, recent_s=1.0)
    try:
        first = list(CHUNKS)[0]
        sender.request(BUNDLE, "a", [first])
        wait_for(lambda: fleet.attempts == 1, timeout=5, what="the publish attempt")
        time.sleep(0.1)  # the sender notes the failure right after the attempt
        assert fleet.published == [] and sender.publishes == 0
        fleet.link_up = True
        assert sender.request(BUNDLE, "a", [first]) == 1
        assert settle(fleet, 1) == [first] and sender.publishes == 1
    finally:
        sender.stop()


def test_chunks_go_out_encrypted_with_their_bundles_key(sent):
    fleet, sender = sent
    captured = []
    publish = fleet.publish
    fleet.publish = lambda topic, payload, qos: captured.append(payload) or publish(topic, payload, qos)
    sender.request(BUNDLE, "a", list(CHUNKS))
    settle(fleet, len(CHUNKS))
    assert len(captured) == len(CHUNKS)
    assert not any(data in payload for payload in captured for data in CHUNKS.values())
