"""Labels for a request the agent sent to the cloud: the agent remembers it too, and the label reaches the server
through the outbox as a cloud-scored record. Real Mosquitto, server and agent."""

from __future__ import annotations

import httpx
import numpy as np
from sqlalchemy import select

from fleet_server.store import feedback as feedback_store, schema
from tests.offline.fleet import DEVICE, running_fleet, until
from tests.offline.test_offline_first import infer
from tests.server.builders import tiny_onnx


def test_a_label_for_a_request_the_cloud_answered_for_the_agent_reaches_the_server(tmp_path, monkeypatch):
    with running_fleet(tmp_path, monkeypatch) as fleet:
        agent = fleet.start_agent(tmp_path)
        fleet.api.post("/api/models/cloud-only", files={"file": ("m.onnx", tiny_onnx(5.0))}).raise_for_status()
        answer = infer(agent, "cloud-only", np.array([[1, 2, 3, 4], [4, 3, 2, 1]], np.float32)).json()
        assert answer["parameters"]["scored_on"] == "cloud" and answer["id"]
        sent = httpx.post(f"{agent.scoring_url}/v2/models/cloud-only/feedback",
                          json={"id": answer["id"], "labels": [3, 3]}, timeout=10)
        assert sent.status_code == 200 and sent.json()["correct"] == 1, sent.text

        (version,) = until(lambda: fleet.api.get("/api/feedback/cloud-only").json(), "the label at the server")
        assert (version["version"], version["labelled"], version["correct"]) == (1, 2, 1)
        (row,) = fleet.server.fleet.db.rows(select(schema.feedback.c.source, schema.feedback.c.scored_on))
        assert row == {"source": DEVICE, "scored_on": "cloud"} and row["source"] != feedback_store.SERVER
