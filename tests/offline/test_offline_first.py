"""Offline first: local scoring never waits for the network; what the device writes arrives later, in order,
delivered at least once and stored exactly once.

Real Mosquitto, the real fleet server (HTTP and MQTT) and a real agent in this process.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from edgefleet_runtime.fallback import CircuitBreaker
from fleet_protocol import oip
from fleet_protocol.captures import decode_capture
from fleet_protocol.errors import TransportError
from fleet_server.store import captures as capture_store
from fleet_server.store import telemetry as telemetry_store
from tests.offline.fleet import DEVICE, TOKEN, running_fleet, until
from tests.server.builders import tiny_onnx
from tests.support.redelivery import assert_redelivery_is_counted_and_not_stored

class ManualClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> bool:
        self.now += seconds
        return False


CAPTURE_ALL = {"capture": {"fraction_percent": 100, "max_per_minute": 1000}}


def infer(agent, model: str, x: np.ndarray, **parameters) -> httpx.Response:
    return httpx.post(f"{agent.scoring_url}/v2/models/{model}/infer", timeout=30,
                      json=oip.encode_request({"x": x}, parameters=parameters or None))


def offline_markers(db) -> list[dict]:
    events = telemetry_store.query(db=db, device_id=DEVICE, kind="event", limit=1000)
    return [r for r in events if r["data"]["event"] == "offline_marker"]


def test_outage_of_broker_and_server_loses_nothing_and_duplicates_nothing(tmp_path, monkeypatch):
    """Nothing written offline is lost, and nothing is stored twice: the outbox and MQTT QoS 1 may deliver a record
    more than once, the server stores it once. Counting rows cannot show a duplicate (the tables' keys drop one),
    so a redelivery is made and the server's delivery counters must show it as received and duplicate."""
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        fleet.deploy("scaler", CAPTURE_ALL)
        fleet.stop_server()
        fleet.broker.stop()

        for i in range(5):  # scoring goes on with the network gone
            response = infer(agent, "scaler", np.full((1, 4), i, np.float32))
            assert response.status_code == 200 and response.json()["parameters"]["scored_on"] == "local"
        for i in range(3):
            agent.telemetry.event("offline_marker", n=i)
        until(lambda: sum(r.kind == "heartbeat" for r in agent.outbox.pending(1000)) >= 2, "heartbeats buffered")
        assert sum(r.kind == "capture" for r in agent.outbox.pending(1000)) == 5

        fleet.broker.start()
        fleet.start_server()
        db = fleet.server.fleet.db
        captures = until(lambda: (c := capture_store.list_captures(db=db, model="scaler")) and len(c) >= 5 and c,
                         "the captures to reach the server")
        markers = until(lambda: (m := offline_markers(db)) and len(m) >= 3 and m, "the events to reach the server")
        until(lambda: agent.outbox.count() <= 2, "the outbox to drain")  # a new heartbeat may be on its way

        assert len(captures) == 5 and len(markers) == 3, "each record exactly once"
        by_seq = sorted(captures, key=lambda c: c["seq"])
        first_values = [decode_capture(capture_store.get_capture(db=db, capture_id=c["id"])["data"]).inputs["x"][0, 0]
                        for c in by_seq]
        assert first_values == [0, 1, 2, 3, 4], "captures in the order they were taken"
        assert [m["data"]["n"] for m in sorted(markers, key=lambda m: m["seq"])] == [0, 1, 2]
        heartbeats = telemetry_store.query(db=db, device_id=DEVICE, kind="heartbeat", limit=1000)
        assert len({h["seq"] for h in heartbeats}) == len(heartbeats) >= 2
        assert_redelivery_is_counted_and_not_stored(  # the last 5 records and the 5 captures, delivered again
            server_url=fleet.url, db_path=fleet.config.data_dir / "fleet.db", broker_url=fleet.broker.url,
            device_id=DEVICE)


def test_large_input_is_scored_in_the_cloud_and_refused_with_a_reason_while_the_cloud_is_down(tmp_path, monkeypatch):
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path, cloud_retries=0)
        clock = ManualClock()  # the breaker's cooldown passes when the test says, however slow the machine
        agent.offload.client.breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10, clock=clock)
        fleet.deploy("scaler", {"fallback": {"max_batch": 8}})
        small, large = np.ones((2, 4), np.float32), np.arange(80, dtype=np.float32).reshape(20, 4)

        assert infer(agent, "scaler", small).json()["parameters"]["scored_on"] == "local"
        cloud = infer(agent, "scaler", large).json()
        assert cloud["parameters"] == {"scored_on": "cloud", "accelerator": "CPUExecutionProvider",
                                       "model_version": "1", "fallback_reason": "batch_too_large"}
        assert np.allclose(oip.decode_response(cloud)["y"], large * 2)
        asked = infer(agent, "scaler", small, prefer="cloud").json()["parameters"]
        assert (asked["scored_on"], asked["fallback_reason"]) == ("cloud", "caller_prefers_cloud")

        fleet.stop_server()
        for _ in range(2):
            refused = infer(agent, "scaler", large)
            assert refused.status_code == 503 and "batch_too_large" in refused.json()["error"]
            assert "unreachable" in refused.json()["error"] and refused.headers["Retry-After"]
        assert infer(agent, "scaler", small).json()["parameters"]["scored_on"] == "local"
        assert infer(agent, "scaler", small, prefer="cloud").json()["parameters"]["scored_on"] == "local", \
            "a request that fits here is scored here while the cloud is down"
        assert "circuit open" in infer(agent, "scaler", large).json()["error"]
        assert agent.offload.client.breaker.state == "open"
        with pytest.raises(TransportError, match="batch_too_large"):
            agent.infer_with_fallback("scaler", {"x": large})
        assert agent.infer_with_fallback("scaler", {"x": small}).scored_on == "local"

        assert "circuit open" in infer(agent, "scaler", large).json()["error"], "still open before the cooldown"
        fleet.start_server()
        clock.now += 10
        until(lambda: infer(agent, "scaler", large).status_code == 200 or clock.tick(10),
              "the breaker to let a trial through")  # a trial that fails reopens it: the next one waits a cooldown
        assert agent.offload.client.breaker.state == "closed"
        in_process = agent.infer_with_fallback("scaler", {"x": large})
        assert (in_process.scored_on, in_process.model_version) == ("cloud", 1)
        assert np.allclose(in_process.outputs["y"], large * 2)
        db = fleet.server.fleet.db
        counted = until(lambda: [r["data"] for r in telemetry_store.query(db=db, device_id=DEVICE, kind="fallback")],
                        "fallback counts in telemetry")
        assert any("batch_too_large" in record["reasons"] for record in counted)


def test_a_model_not_installed_on_the_device_is_scored_in_the_cloud(tmp_path, monkeypatch):
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        fleet.api.post("/api/models/cloud-only", files={"file": ("m.onnx", tiny_onnx(5.0))}).raise_for_status()
        response = infer(agent, "cloud-only", np.ones((1, 4), np.float32))
        assert response.status_code == 200
        assert response.json()["parameters"]["fallback_reason"] == "not_installed"
        assert infer(agent, "nowhere", np.ones((1, 4), np.float32)).status_code == 404


def test_without_a_cloud_an_unknown_model_is_404_and_nothing_leaves_the_device(tmp_path, monkeypatch):
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path, cloud_url=None)
        fleet.deploy("scaler", {"fallback": {"max_batch": 1}})
        assert infer(agent, "nowhere", np.ones((1, 4), np.float32)).status_code == 404
        big = infer(agent, "scaler", np.ones((5, 4), np.float32))
        assert big.status_code == 200 and big.json()["parameters"]["scored_on"] == "local"


def test_a_triton_client_talks_to_the_agent_and_to_the_server(tmp_path, monkeypatch):
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        fleet.deploy("scaler", {})
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        for url, headers, scored_on in ((agent.scoring_url, None, "local"),
                                        (fleet.url, {"Authorization": f"Bearer {TOKEN}"}, "cloud")):
            client = triton.InferenceServerClient(url=url.removeprefix("http://"))
            assert client.is_server_ready() and client.is_model_ready("scaler", headers=headers)
            assert client.get_model_metadata("scaler", headers=headers)["inputs"][0]["name"] == "x"
            tensor = triton.InferInput("x", [2, 4], "FP32")
            tensor.set_data_from_numpy(x, binary_data=False)
            result = client.infer("scaler", [tensor], outputs=[triton.InferRequestedOutput("y", binary_data=False)],
                                  headers=headers)
            assert np.allclose(result.as_numpy("y"), x * 2)
            assert result.get_response()["parameters"]["scored_on"] == scored_on
            client.close()
