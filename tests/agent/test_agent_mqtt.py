"""The agent against a real Mosquitto and a test double of the fleet server: install, refuse, report, resume."""

from __future__ import annotations

import hashlib
import json

import httpx
import numpy as np
import onnxruntime as ort

from edge_agent.agent import Agent
from fleet_protocol import messages, topics
from fleet_protocol.manifest import BundleManifest
from fleet_protocol.messages import DesiredModule
from fleet_protocol.signing import sign_envelope
from fleet_server.keys import new_signing_key
from tests.agent.helpers import Bundle, make_bundle
from tests.support.net import wait_for

X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)


def oip_infer(agent: Agent, name: str = "linear", x: np.ndarray = X) -> dict:
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    response = httpx.post(f"{agent.scoring_url}/v2/models/{name}/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def direct_run(bundle: Bundle, x: np.ndarray = X) -> np.ndarray:
    session = ort.InferenceSession(bundle.files["model.onnx"], providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def served_output(agent: Agent) -> np.ndarray:
    body = oip_infer(agent)
    out = body["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def install(server, agent: Agent, generation: int, bundle: Bundle) -> None:
    server.publish_desired(agent.device_id, generation, [bundle])
    server.wait_running(agent.device_id, bundle.manifest.module, bundle.version)


def test_installed_module_scores_over_oip_exactly_like_a_direct_onnxruntime_run(server, make_agent):
    agent = make_agent()
    bundle = server.bundle(version=1, chunk_size=64, sample=True)
    install(server, agent, 1, bundle)

    body = oip_infer(agent)
    assert body["model_name"] == "linear" and body["model_version"] == "1"
    assert body["parameters"]["scored_on"] == "local"
    assert body["parameters"]["accelerator"] == "CPUExecutionProvider"
    np.testing.assert_array_equal(served_output(agent), direct_run(bundle))
    result = agent.infer("linear", {"x": X})
    np.testing.assert_array_equal(result.outputs["y"], direct_run(bundle))
    assert (result.model_name, result.model_version) == ("linear", 1)
    status = server.status[agent.device_id]
    assert (status.state, status.scoring_url) == ("online", agent.scoring_url)


def test_second_version_replaces_the_first_and_the_first_is_kept_as_previous(server, make_agent):
    agent = make_agent()
    first, second = server.bundle(version=1, seed=1), server.bundle(version=2, seed=2)
    install(server, agent, 1, first)
    install(server, agent, 2, second)

    module_dir = agent.config.state_dir / "modules" / "linear"
    active = json.loads((module_dir / "active.json").read_text())
    assert (active["version"], active["digest"]) == (2, second.digest)
    assert (active["previous"]["version"], active["previous"]["digest"]) == (1, first.digest)
    assert sorted(p.name for p in module_dir.iterdir() if p.is_dir()) == sorted(
        [f"1-{first.digest[:12]}", f"2-{second.digest[:12]}"])
    np.testing.assert_array_equal(served_output(agent), direct_run(second))
    assert not (agent.config.state_dir / "staging" / second.digest).exists()

    third = server.bundle(version=3, seed=3)
    install(server, agent, 3, third)
    assert not (module_dir / f"1-{first.digest[:12]}").exists(), "versions older than previous are deleted"


def refused(server, agent: Agent, first: Bundle, code: str) -> messages.ModuleReport:
    report = server.wait_module(agent.device_id, "linear", lambda m: m.error is not None and m.error["code"] == code,
                                what=f"the device to report {code}")
    assert report.state == "failed" and report.version == first.version, report
    np.testing.assert_array_equal(served_output(agent), direct_run(first))
    return report


def test_file_whose_bytes_do_not_match_the_manifest_is_refused_and_the_installed_version_keeps_serving(
        server, make_agent):
    agent = make_agent()
    first = server.bundle(version=1)
    install(server, agent, 1, first)
    honest = make_bundle(server.key, version=2, seed=2)
    doc = honest.manifest.to_dict()
    doc["files"][0]["sha256"] = hashlib.sha256(b"something else").hexdigest()  # chunks stay the honest ones
    manifest = BundleManifest.from_dict(doc)
    tampered = server.add_bundle(Bundle(manifest, sign_envelope(manifest.to_dict(), server.key), honest.files))
    server.publish_desired(agent.device_id, 2, [tampered])

    report = refused(server, agent, first, "digest_mismatch")
    assert report.error["category"] == "verification"
    assert json.loads((agent.config.state_dir / "modules/linear/active.json").read_text())["version"] == 1


def test_manifest_signed_by_an_untrusted_key_is_refused(server, make_agent):
    agent = make_agent()
    first = server.bundle(version=1)
    install(server, agent, 1, first)
    foreign = server.add_bundle(make_bundle(new_signing_key(), version=2, seed=2))
    server.publish_desired(agent.device_id, 2, [foreign])
    refused(server, agent, first, "bad_signature")


def test_manifest_whose_digest_differs_from_the_pinned_digest_is_refused(server, make_agent):
    agent = make_agent()
    first = server.bundle(version=1)
    install(server, agent, 1, first)
    second = server.bundle(version=2, seed=2)
    pinned_elsewhere = DesiredModule("linear", 2, hashlib.sha256(b"another bundle").hexdigest(), second.envelope)
    server.publish_desired(agent.device_id, 2, [], modules=[pinned_elsewhere])
    refused(server, agent, first, "digest_mismatch")


def test_bundle_with_a_lower_version_is_refused_as_a_rollback(server, make_agent):
    agent = make_agent()
    older, newer = server.bundle(version=1, seed=1), server.bundle(version=2, seed=2)
    install(server, agent, 1, newer)
    server.publish_desired(agent.device_id, 2, [older])
    report = server.wait_module(agent.device_id, "linear", lambda m: m.error is not None)
    assert report.error["code"] == "rollback" and report.version == 2
    np.testing.assert_array_equal(served_output(agent), direct_run(newer))


def test_chunk_with_wrong_bytes_is_refused_never_written_and_the_installed_version_keeps_serving(
        server, make_agent):
    agent = make_agent()
    first = server.bundle(version=1)
    install(server, agent, 1, first)
    second = server.bundle(version=2, seed=2, chunk_size=64)
    bad_sha = second.manifest.file("model.onnx").chunks[0].sha256
    server.tamper[bad_sha] = b"\0" * second.manifest.file("model.onnx").chunks[0].size
    server.publish_desired(agent.device_id, 2, [second])

    wait_for(lambda: agent.refusals.by_code.get("chunk/digest_mismatch"), what="the wrong chunk to be refused")
    report = server.module_report(agent.device_id, "linear")
    assert report.state != "failed" and report.version == 1, report  # unverified bytes only count
    np.testing.assert_array_equal(served_output(agent), direct_run(first))
    chunks = agent.config.state_dir / "staging" / second.digest / "chunks"
    assert not (chunks / bad_sha).exists()
    assert not any(p.name.startswith(hashlib.sha256(b"\0" * 64).hexdigest()[:12]) for p in chunks.iterdir())
    assert agent.fetcher.chunks_refused > 0

    del server.tamper[bad_sha]  # the server repairs its chunk: the fetch, still trying, completes
    server.wait_running(agent.device_id, "linear", 2)


def test_desired_state_that_fails_verification_is_refused_and_nothing_changes(server, make_agent):
    agent = make_agent()
    first = server.bundle(version=1)
    install(server, agent, 3, first)
    second = server.bundle(version=2, seed=2)
    desired_topic = topics.device_topic("dev-1", "desired")
    other_device = sign_envelope(messages.DesiredState("someone-else", 9, "2026-01-01T00:00:00Z", ()).to_dict(),
                                 server.key)
    attempts = [
        ("bad_signature", lambda: server.publish_desired("dev-1", 5, [second], key=new_signing_key())),
        ("wrong_device", lambda: server.publish_raw(desired_topic, messages.encode(other_device))),
        ("rollback", lambda: server.publish_desired("dev-1", 2, [second])),
        ("expired", lambda: server.publish_desired("dev-1", 100, [second], expires="2001-01-01T00:00:00Z")),
    ]
    generation = 3
    for code, publish in attempts:
        publish()
        wait_for(lambda: (s := server.reported.get("dev-1")) and s.error and s.error["code"] == code,
                 what=f"the refusal {code} in the reported state")
        assert server.reported["dev-1"].generation == generation
        assert server.module_report("dev-1", "linear").version == 1
        assert agent.models == {"linear": 1}
        generation += 1  # a verified document (the same modules) clears the refusal; the next one is reported
        server.publish_desired("dev-1", generation, [first])
        wait_for(lambda: (s := server.reported.get("dev-1")) and s.generation == generation and s.error is None,
                 what=f"generation {generation} to clear the refusal")
    assert agent.trust.last_generation == generation
    np.testing.assert_array_equal(served_output(agent), direct_run(first))


def test_the_same_desired_state_twice_changes_nothing(server, make_agent):
    agent = make_agent()
    bundle = server.bundle(version=1)
    envelope = server.publish_desired(agent.device_id, 1, [bundle])
    server.wait_running(agent.device_id, "linear", 1)
    loaded = agent.runtime.table["linear"]
    wait_for(agent.reconciler.idle.is_set, what="the reconciler to go idle")
    requests = len(server.fetch_requests)
    published = len(server.reported_history)
    server.publish_raw(topics.device_topic(agent.device_id, "desired"), messages.encode(envelope))
    agent.reconciler.submit(envelope)
    wait_for(agent.reconciler.idle.is_set, what="the reconciler to go idle")
    assert agent.runtime.table["linear"] is loaded
    assert len(server.fetch_requests) == requests
    assert len(server.reported_history) == published


def test_malformed_payloads_on_the_desired_topic_are_counted_and_the_agent_keeps_serving(server, make_agent):
    agent = make_agent()
    bundle = server.bundle(version=1)
    install(server, agent, 1, bundle)
    garbage = [b"\xff\xfe", b"{}", b"[]", b"not json", b'{"signed": 1}', b"x" * 10_000]
    for payload in garbage:
        server.publish_raw(topics.device_topic(agent.device_id, "desired"), payload)
    server.publish_raw(topics.bundle_chunks_topic("a" * 64), b"junk")
    wait_for(lambda: agent.telemetry.malformed_total >= 5, what="malformed payloads to be counted")
    wait_for(lambda: any(r.data.get("malformed_messages", 0) >= 5 for r in server.records("heartbeat")),
             what="the malformed count in a heartbeat")
    assert any(r.data.get("event") == "malformed_messages" for r in server.records("event"))
    np.testing.assert_array_equal(served_output(agent), direct_run(bundle))
    second = server.bundle(version=2, seed=2)
    install(server, agent, 2, second)


def test_module_removed_from_the_desired_state_is_unloaded_and_its_files_deleted(server, make_agent):
    agent = make_agent()
    install(server, agent, 1, server.bundle(version=1))
    server.publish_desired(agent.device_id, 2, [])
    wait_for(lambda: (s := server.reported.get(agent.device_id)) and s.generation == 2 and not s.modules,
             what="the module to disappear from the reported state")
    assert agent.models == {}
    assert not (agent.config.state_dir / "modules" / "linear").exists()
    assert httpx.get(f"{agent.scoring_url}/v2/models/linear").status_code == 404


def test_entry_script_init_gets_the_context_and_run_handles_each_request(server, make_agent):
    script = (
        "import numpy as np\n"
        "STATE = {}\n"
        "def init(context):\n"
        "    STATE['model'] = context.model\n"
        "    STATE['scale'] = context.config['scale']\n"
        "    assert context.inputs[0][:2] == ('x', 'FP32') and (context.module_dir / 'model.onnx').is_file()\n"
        "    context.log.info('ready')\n"
        "def run(inputs):\n"
        "    out = STATE['model'].run({'x': inputs['x'] * STATE['scale']})\n"
        "    return {'y': out['y'], 'argmax': np.argmax(out['y'], axis=1)}\n"
    )
    agent = make_agent()
    bundle = server.bundle(version=1, entry=script, config={"scale": 2})
    install(server, agent, 1, bundle)
    result = agent.infer("linear", {"x": X})
    np.testing.assert_allclose(result.outputs["y"], direct_run(bundle, X * 2), rtol=1e-6)
    body = oip_infer(agent)
    assert [o["name"] for o in body["outputs"]] == ["y", "argmax"]


def test_version_that_fails_to_load_is_reported_and_the_previous_version_is_switched_back(server, make_agent):
    agent = make_agent()
    first = server.bundle(version=1)
    install(server, agent, 1, first)
    broken = server.bundle(version=2, seed=2, entry="def init(context):\n    raise RuntimeError('no camera')\n")
    server.publish_desired(agent.device_id, 2, [broken])

    report = server.wait_module(agent.device_id, "linear", lambda m: m.error is not None)
    assert (report.state, report.version, report.error["category"]) == ("failed", 1, "load"), report
    assert "no camera" in report.error["message"]
    active = json.loads((agent.config.state_dir / "modules/linear/active.json").read_text())
    assert (active["version"], active["previous"]) == (1, None)
    np.testing.assert_array_equal(served_output(agent), direct_run(first))


def test_agent_restarted_with_the_broker_down_serves_its_installed_version(server, make_agent, broker):
    agent = make_agent()
    bundle = server.bundle(version=1)
    install(server, agent, 1, bundle)
    agent.stop()
    broker.stop()

    again = make_agent(start=False)
    again.start()
    assert not again.link.connected
    assert httpx.get(f"{again.scoring_url}/v2/health/ready").status_code == 200
    np.testing.assert_array_equal(served_output(again), direct_run(bundle))


def test_telemetry_written_while_the_broker_is_down_arrives_after_it_returns_once(server, make_agent, broker):
    agent = make_agent()
    wait_for(lambda: server.records("heartbeat"), what="a first heartbeat")
    broker.stop()
    wait_for(lambda: not agent.link.connected, what="the agent to notice the broker is gone")
    first_offline = agent.outbox.add("event", {"event": "test_marker"})  # nothing from here on was ever sent
    wait_for(lambda: len([r for r in agent.outbox.pending(10_000) if r.kind == "heartbeat"
                          and r.seq > first_offline]) >= 3, what="heartbeats to pile up in the outbox")
    offline = [r.seq for r in agent.outbox.pending(10_000) if r.seq >= first_offline]
    broker.start()

    wait_for(lambda: set(offline) <= {r.seq for r in server.records()}, timeout=30,
             what="every record written offline to reach the server")
    received = [r.seq for r in server.records() if r.seq in set(offline)]
    assert sorted(received) == sorted(offline), "a record written offline arrived twice"
    wait_for(lambda: agent.outbox.count() < len(offline), what="acknowledged records to leave the outbox")
    assert not set(offline) & {r.seq for r in agent.outbox.pending(10_000)}


def test_fetch_resumes_after_a_restart_and_asks_only_for_missing_chunks(server, make_agent):
    server.answer_fetches = False
    agent = make_agent(fetch_window_chunks=2)
    bundle = server.bundle(version=1, chunk_size=64)
    chunks = bundle.chunks()
    server.publish_desired(agent.device_id, 1, [bundle])
    wait_for(lambda: server.fetch_requests, what="a first fetch request")
    first = server.fetch_requests[0]
    assert len(first.chunks) == 2 and first.bundle_digest == bundle.digest
    for sha in first.chunks:  # answer the first window only
        server.publish_raw(topics.bundle_chunks_topic(bundle.digest), messages.encode_chunk(chunks[sha]))
    staging = agent.config.state_dir / "staging" / bundle.digest / "chunks"
    wait_for(lambda: all((staging / sha).exists() for sha in first.chunks), what="the first chunks on disk")
    agent.stop()

    server.fetch_requests.clear()
    server.answer_fetches = True
    again = make_agent()
    server.wait_running(again.device_id, "linear", 1)
    asked = {sha for request in server.fetch_requests for sha in request.chunks}
    assert asked == set(chunks) - set(first.chunks)


def test_a_fetch_that_gets_no_chunks_reports_a_download_error_and_keeps_trying(server, make_agent):
    server.answer_fetches = False
    agent = make_agent(fetch_timeout_s=0.2)
    bundle = server.bundle(version=1)
    server.publish_desired(agent.device_id, 1, [bundle])
    report = server.wait_module(agent.device_id, "linear", lambda m: m.error is not None)
    assert (report.state, report.error["category"], report.target_version) == ("installing", "download", 1)
    server.answer_fetches = True
    server.wait_running(agent.device_id, "linear", 1)
    assert server.module_report(agent.device_id, "linear").error is None


def test_heartbeats_and_model_stats_reach_the_server_and_stop_says_offline(server, make_agent):
    agent = make_agent()
    install(server, agent, 1, server.bundle(version=1))
    for _ in range(20):
        agent.infer("linear", {"x": X})
    stats = wait_for(lambda: [r for r in server.records("model_stats") if r.data["requests"] >= 20],
                     what="model stats with the 20 requests")[0].data
    assert (stats["model"], stats["version"], stats["errors"]) == ("linear", 1, 0)
    assert 0 < stats["latency_us"]["p50"] <= stats["latency_us"]["p95"]
    assert sum(count for _, count in stats["latency_sketch"]["bins"]) == stats["requests"]
    beat = server.records("heartbeat")[-1].data
    assert {"uptime_s", "cpu_percent", "rss_bytes", "memory_percent", "disk_free_bytes"} <= set(beat)
    events = [r.data["event"] for r in server.records("event")]
    assert events[:2] == ["install_started", "install_succeeded"]
    seqs = [r.seq for r in server.records()]
    assert seqs == sorted(seqs)

    agent.stop()
    wait_for(lambda: server.status[agent.device_id].state == "offline", what="the offline status")
