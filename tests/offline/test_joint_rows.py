"""Joint inference on the agent's scoring API when the rows of an answer are not the rows of its request.

A real entry-script module served by the real scoring API with the real Offload and outbox, without a cloud
(``cloud_url`` unset): the hard rows keep their local answer, marked, and are captured as they would have
been sent. The entry script scores windows of three values, so one request row may give several answer rows.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from edge_agent.offload import Offload
from edge_agent.outbox import Outbox
from edge_agent.scoring_api import ScoringServer
from fleet_protocol import captures, oip
from fleet_server.keys import new_signing_key
from tests.agent.helpers import make_bundle, serving_runtime
from tests.support.entry_scripts import entry_script

WINDOWS = entry_script('return {"probabilities": inputs["x"].reshape(-1, 3)}')  # one answer row per window
CONFIG = {"answers": {"probability_output": "probabilities"},
          "fallback": {"confidence_below": "0.8", "cloud_model": "big"}}
SURE, UNSURE = [0.9, 0.05, 0.05], [0.4, 0.3, 0.3]


@pytest.fixture
def served(tmp_path):
    bundle = make_bundle(new_signing_key(), module="windows", entry=WINDOWS, config=CONFIG)
    runtime = serving_runtime(tmp_path, bundle)
    outbox = Outbox(tmp_path / "outbox.db")
    server = ScoringServer(host="127.0.0.1", port=0, table=runtime.table, ready=lambda: True,
                           offload=Offload(client=None, outbox=outbox))
    server.start()
    host, port = server.address
    yield f"http://{host}:{port}/v2/models/windows/infer", outbox
    server.stop()
    outbox.close()


def score(url: str, x: np.ndarray) -> httpx.Response:
    return httpx.post(url, json=oip.encode_request({"x": x.astype(np.float32)}), timeout=30)


def hard_example(outbox: Outbox) -> captures.Capture:
    (record,) = [r for r in outbox.pending(100) if r.kind == captures.KIND]
    return captures.decode_capture(record.data)


def test_a_request_whose_rows_are_all_hard_goes_whole_however_its_inputs_are_shaped(served):
    url, outbox = served
    signal = np.array(UNSURE * 4)  # one unbatched signal of four windows, all unsure
    response = score(url, signal)
    assert response.status_code == 200, response.text
    assert response.json()["parameters"]["low_confidence_rows"] == "0,1,2,3"
    sent = hard_example(outbox)
    assert sent.reason == "low_confidence"
    np.testing.assert_array_equal(sent.inputs["x"], signal.astype(np.float32))  # not four values of it


def test_hard_rows_that_cannot_be_cut_from_the_inputs_keep_the_local_answer_marked_low_confidence(served):
    url, outbox = served
    signal = np.array([SURE + UNSURE + SURE + UNSURE])  # one request row, four answer rows, two of them unsure
    response = score(url, signal)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["parameters"]["scored_on"], body["parameters"]["low_confidence_rows"]) == ("local", "1,3")
    assert oip.decode_response(body)["probabilities"].tolist() == signal.reshape(4, 3).astype(np.float32).tolist()
    kept = hard_example(outbox)
    assert kept.inputs["x"].shape == (1, 12) and kept.outputs["probabilities"].shape == (4, 3), "the whole request"


def test_a_joint_mistake_repeated_on_every_request_is_logged_once_not_per_request(served, caplog):
    url, _ = served
    signal = np.array([SURE + UNSURE + SURE + UNSURE])
    with caplog.at_level("WARNING", logger="edgefleet.agent.offload"):
        for _ in range(3):
            assert score(url, signal).json()["parameters"]["low_confidence"] is True
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["windows"]
