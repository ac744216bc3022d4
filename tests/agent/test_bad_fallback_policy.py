"""A signed bundle whose fallback policy the agent refuses fails to install with a code; nothing is ignored.

The server refuses such a policy at build time; this bundle is signed by hand, as an older server or
another signer could have made it. Real Mosquitto, a real agent.
"""

from __future__ import annotations

import numpy as np


def test_a_bundle_with_a_misspelt_fallback_policy_fails_to_install_with_bad_fallback_policy(server, make_agent):
    agent = make_agent()
    good = server.bundle(version=1)
    server.publish_desired(agent.device_id, 1, [good])
    server.wait_running(agent.device_id, "linear", 1)
    typo = server.bundle(version=2, seed=2, config={"fallback": {"max_bach": 64}})
    server.publish_desired(agent.device_id, 2, [typo])
    report = server.wait_module(agent.device_id, "linear", lambda m: m.error is not None)
    assert (report.error["code"], report.error["category"]) == ("bad_fallback_policy", "load")
    assert "'max_bach'" in report.error["message"] and "'max_batch'" in report.error["message"]
    assert report.version == 1 and agent.models == {"linear": 1}, "the version before keeps serving"
    assert agent.infer("linear", {"x": np.ones((1, 4), np.float32)}).model_version == 1
