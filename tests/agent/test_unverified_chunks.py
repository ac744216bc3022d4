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


def test_unverified_chunks_are_only_counted_never_reported_as_a_failed_module(server, make_agent):
    """Junk and forged chunks on the shared chunk topic during a download: the module stays ``installing`` (never
    ``failed``, which the server would count against a rollout), no ``download_problem`` is written, each refusal
    is counted, and the download completes once the real chunk comes."""
    agent = make_agent()
    bundle = server.bundle(version=1, chunk_size=64)
    forged_sha = next(iter(bundle.chunks()))
    server.tamper[forged_sha] = os.urandom(len(bundle.chunks()[forged_sha]))  # what the device asks for, forged
    topic = topics.bundle_chunks_topic(bundle.digest)
    stop = threading.Event()

    def flood() -> None:
        while not stop.wait(0.02):
            server.publish_raw(topic, messages.encode_chunk(os.urandom(64)))
            server.publish_raw(topic, b"junk that is not a chunk at all")
            server.publish_raw(topic, messages.encode_chunk(b"")[:4] + bytes.fromhex(forged_sha) + os.urandom(64))

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        server.publish_desired(agent.device_id, 1, [bundle])
        wait_for(lambda: agent.refusals.total >= 30,
                 what="the junk and the forged chunk to be refused")
        server.wait_module(agent.device_id, "linear", lambda m: m.state == "installing", what="the download to start")
    finally:
        stop.set()
        flooder.join()
    del server.tamper[forged_sha]  # the real chunk: the fetch, still asking, completes
    server.wait_running(agent.device_id, "linear", 1)

    with server._lock:
        history = [m for state in server.reported_history for m in state.modules if m.name == "linear"]
    assert history and [m for m in history if m.state == "failed"] == []
    assert [m.error for m in history if m.error is not None and m.error["code"] != "download_stalled"] == []
    assert all(key.startswith("chunk/") for key in agent.refusals.by_code), agent.refusals.by_code
    assert agent.fetcher.chunks_refused == agent.refusals.total
    wait_for(lambda: sum(r.data.get("count", 0) for r in server.records("event")
                         if r.data.get("event") == "refused_messages") == agent.refusals.total,
             what="the refusals counted in the telemetry")
    assert [r.data for r in server.records("event") if r.data.get("event") == "download_problem"
            and r.data.get("code") != "download_stalled"] == []
