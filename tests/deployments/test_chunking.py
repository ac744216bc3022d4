"""Content-defined chunking: a new version that shares most bytes with the installed one sends only what changed."""

from __future__ import annotations

import os

from fleet_protocol.chunking import content_defined_chunks
from tests.server.builders import module_files, tar_gz, tiny_onnx
from tests.support.net import wait_for


def test_an_insertion_changes_only_the_chunks_around_it():
    data = os.urandom(1_000_000)
    edited = data[:500_000] + b"inserted bytes" + data[500_000:]
    before, after = content_defined_chunks(data, 65_536), content_defined_chunks(edited, 65_536)
    assert content_defined_chunks(data, 65_536) == before, "deterministic"
    assert sum(c.size for c in before) == len(data) and max(c.size for c in before) <= 65_536
    changed = [c for c in after if c not in set(before)]
    assert len(changed) <= 2 and sum(c.size for c in changed) < 0.1 * len(edited)


def test_a_second_version_sharing_most_chunks_transfers_only_the_changed_ones(fleet):
    (agent,) = fleet.start_agents(1)
    weights = os.urandom(1_500_000)

    def deploy(scale: float, data: bytes) -> dict:
        files = {**module_files(files=["model.onnx", "main.py", "sample.json", "weights.bin"],
                                model=tiny_onnx(scale)), "weights.bin": data}
        bundle = fleet.api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(files))}).json()
        deployment = fleet.post("/api/deployments", {"module": "scaler", "version": bundle["version"],
                                                     "devices": [agent.device_id]}, expect=201)
        fleet.wait_models({"scaler": bundle["version"]})
        return wait_for(lambda: (d := fleet.api.get(f"/api/deployments/{deployment['id']}").json())
                        ["counts"]["running"] == 1 and d, what="the deployment to report running"), bundle

    first, first_bundle = deploy(2.0, weights)
    assert first["bytes_sent"] == first_bundle["size"] and first["bytes_saved"] == 0
    second, second_bundle = deploy(3.0, weights[:700_000] + b"a small patch" + weights[700_000:])
    assert second["bytes_sent"] < 0.15 * second_bundle["size"], "only the changed chunks crossed the network"
    assert second["bytes_saved"] == second_bundle["size"] - second["bytes_sent"]
    assert (agent.config.state_dir / "modules" / "scaler").is_dir()
