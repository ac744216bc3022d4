"""Two A/B splits for the verdict: one whose labels came back (v2 is better), one without labels.

Built through the real API and the embedded broker: ``ring=labelled``
devices run ``scaler`` v1 and v2 under a 30/70 split, report their model
statistics, and send ``feedback`` telemetry records as agents do after
``POST /v2/models/scaler/feedback`` (one record per scored request, 10 rows
each): v1 is right on :data:`LABELLED` ``[1]`` of its rows, v2 on ``[2]``.
``ring=unlabelled`` devices get the same split and statistics, no labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet_protocol import feedback, messages, topics
from fleet_protocol.messages import ModuleReport, TelemetryBatch, TelemetryRecord
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from tests.support.net import wait_for

from .fleet_data import Seeder
from .rollout_data import PROFILE, model_stats

ANSWERS = {1: {"0": 4_100, "1": 1_900}, 2: {"0": 9_300, "1": 4_700}}
LABELLED = {1: (600, 528), 2: (1_400, 1_302)}  # version -> (labelled rows, correct rows): 88.0 % and 93.0 %
ROWS_PER_REQUEST = 10


@dataclass
class VerdictData:
    labelled_deployment_id: int
    unlabelled_deployment_id: int


def feedback_batch(device_id: str, version: int, labelled: int, correct: int) -> bytes:
    """Feedback records for ``labelled`` rows of ``version``, ``correct`` of them right (wrong ones: 1 for 0)."""
    records = []
    for request in range(labelled // ROWS_PER_REQUEST):
        pairs = []
        for row in range(ROWS_PER_REQUEST):
            index = request * ROWS_PER_REQUEST + row
            label = str(index % 2)
            pairs.append([label if index < correct else str(1 - index % 2), label])
        data = feedback.encode_record(model="scaler", version=version, request_id=f"req-{version}-{request}",
                                      scored_on="local", split=True, predicted=[p for p, _ in pairs],
                                      labels=[label for _, label in pairs])
        records.append(TelemetryRecord(request + 2, to_iso(utc_now()), feedback.KIND, data))
    return messages.encode(TelemetryBatch(device_id, f"outbox-{device_id}", tuple(records)).to_dict())


def populate_verdict(url: str, token: str, broker_url: str) -> VerdictData:
    with Seeder(url, token, broker_url, "browser-test-verdict-seeder") as seed:
        v1, v2 = seed.scaler_v1_and_v2()
        devices = {"lab-01": ("labelled", 1), "lab-02": ("labelled", 2), "quiet-01": ("unlabelled", 1),
                   "quiet-02": ("unlabelled", 2)}
        for device_id, (ring, _) in devices.items():
            seed.online(device_id, PROFILE, {"ring": ring})
            seed.report(device_id, PROFILE, ModuleReport("scaler", "running", 1, v1, accelerator="cpu"))
        seed.wait_for_modules(len(devices), "the devices to report scaler v1")
        created = {}
        for ring in ("labelled", "unlabelled"):
            created[ring] = seed.post("/api/deployments", json={"module": "scaler", "version": 1,
                                                                "selector": {"ring": ring},
                                                                "split": {"1": 30, "2": 70}})["id"]
        for device_id, (ring, version) in devices.items():
            seed.device.publish(topics.device_topic(device_id, "telemetry"),
                                model_stats(device_id, version, ANSWERS[version], p50_us=150 + 30 * version,
                                            errors=version * 3, answer_output="label"))
            if ring == "labelled":
                seed.device.publish(topics.device_topic(device_id, "telemetry"),
                                    feedback_batch(device_id, version, *LABELLED[version]))
        for deployment_id in created.values():
            seed.wait_for_variants(deployment_id)
        labelled = created["labelled"]
        wait_for(lambda: sum(v["labelled"] for v in seed.api.get(f"/api/deployments/{labelled}/variants").json())
                 == sum(n for n, _ in LABELLED.values()), timeout=30, what="the labels to reach the server")
    return VerdictData(labelled_deployment_id=created["labelled"], unlabelled_deployment_id=created["unlabelled"])
