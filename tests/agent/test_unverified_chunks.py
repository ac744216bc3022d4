"""Chunks that fail their check change nothing in how a fetch is scheduled: against a real Mosquitto, junk on a
bundle's shared chunk topic neither passes for a live broadcast (which would hold back asking again) nor stops
the download from completing once the server answers."""

from __future__ import annotations

import os
import threading

from fleet_protocol import messages, topics
from tests.support.net import wait_for


def test_unverified_chunks_do_not_hold_back_asking_again(server, make_agent):
    server.answer_fetches = False  # the server is silent: the device must keep asking
    agent = make_agent(fetch_timeout_s=0.5)
    bundle = server.bundle(version=1)
    listed = next(iter(bundle.chunks()))
    server.publish_desired(agent.device_id, 1, [bundle])
    wait_for(lambda: server.fetch_requests, what="the first fetch request")

    topic = topics.bundle_chunks_topic(bundle.digest)
    junk = [messages.encode_chunk(os.urandom(64)),  # framed correctly, not a chunk of this bundle
            messages.encode_chunk(b"")[:4] + bytes.fromhex(listed) + os.urandom(64)]  # a listed digest, other bytes
    stop = threading.Event()

    def flood() -> None:
        while not stop.wait(0.05):
            for payload in junk:
                server.publish_raw(topic, payload)

    flooder = threading.Thread(target=flood, daemon=True)
    asked = len(server.fetch_requests)
    flooder.start()
    try:
        wait_for(lambda: len(server.fetch_requests) > asked, timeout=5,
                 what="the device to ask again while only junk arrives")
        assert agent.fetcher.chunks_refused > 0
    finally:
        stop.set()
        flooder.join()
    server.answer_fetches = True
    server.wait_running(agent.device_id, "linear", 1)
