"""The agent updates itself through a staged rollout, and a broken version rolls itself back.

A real server process, real Mosquitto, and per device a real ``edgefleet agent supervise`` running
``<prefix>/current/bin/edgefleet agent run`` from an environment made of a wheel of this tree. The new agent
versions are wheels of this tree with the version bumped (see conftest): one good, one that crashes at start,
one that cannot connect to its broker. Each is built into an ``edgefleet-agent`` bundle with
``edgefleet module build --kind agent`` and rolled out with the same rollouts as models.
"""

from __future__ import annotations

import json
import time

import httpx
import psutil
import pytest

from edge_agent import __version__
from edge_agent.agent_envs import current_version, read_state
from tests.faults.conftest import infer_version
from tests.server.builders import module_files, tar_gz, tiny_onnx
from tests.support.fleet import AgentProcess, run_cli, start_server
from tests.support.net import wait_for

from .conftest import CANNOT_CONNECT, CRASHES, GOOD, start_supervised

TAGS = {"site": "selfupdate"}
AGENT = "edgefleet-agent"


def agent_module(device: dict) -> dict | None:
    return next((m for m in device.get("modules") or [] if m["name"] == AGENT), None)


def agent_rss_mb(supervisor: AgentProcess) -> float:
    """Resident memory of the agent process (the supervisor's child), in MB."""
    children = psutil.Process(supervisor.popen.pid).children()
    assert len(children) == 1, f"the supervisor runs one agent, not {children}"
    return children[0].memory_info().rss / 1e6


def served_agent_version(agent: AgentProcess) -> str:
    return httpx.get(f"{agent.scoring_url}/v2", timeout=5).json()["version"]


def prepare_fleet(tmp_path, mosquitto, agent_wheels, device_ids, **settings):
    server = start_server(tmp_path, mosquitto.url)
    agents = start_supervised(tmp_path, device_ids, broker_url=mosquitto.url, key_hex=server.signing_key_hex(),
                              wheels=agent_wheels[__version__], tags=TAGS, **settings)
    with server.api() as api:
        archive = tar_gz(module_files("scaler", model=tiny_onnx(2.0)))
        assert api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", archive)}).status_code == 201
        assert api.post("/api/deployments", json={"module": "scaler", "selector": TAGS}).status_code == 201
        wait_for(lambda: all(any(m["name"] == "scaler" and m["state"] == "running" for m in
                                 api.get(f"/api/devices/{d}").json()["modules"]) for d in device_ids),
                 timeout=60, what="every device to serve scaler v1")
    return server, agents


def build_agent_bundle(server, wheels) -> dict:
    result = run_cli("module", "build", "--kind", "agent", str(wheels), "--json", server=server.url)
    return json.loads(result.stdout)


def test_staged_rollout_updates_every_agent_and_keeps_the_previous_environment(tmp_path, mosquitto, agent_wheels):
    device_ids = ["upd-00", "upd-01"]
    server, agents = prepare_fleet(tmp_path, mosquitto, agent_wheels, device_ids)
    try:
        rss_before = {a.device_id: agent_rss_mb(a) for a in agents}
        bundle = build_agent_bundle(server, agent_wheels[GOOD])
        assert bundle["module"] == AGENT and [f["path"] for f in bundle["files"]] == [
            f"wheels/edgefleet-{GOOD}-py3-none-any.whl"]
        with server.api() as api:
            started = time.monotonic()
            response = api.post("/api/rollouts", json={"module": AGENT, "version": bundle["version"],
                                                       "selector": TAGS, "plan": {"canary": 1}})
            assert response.status_code == 201, response.text
            rollout_id = response.json()["id"]
            updated_s = {}

            def every_device_updated() -> bool:
                for device_id in device_ids:
                    device = api.get(f"/api/devices/{device_id}").json()
                    module = agent_module(device)
                    if device["agent_version"] == GOOD and module and module["state"] == "running" and \
                            module["version"] == bundle["version"]:
                        updated_s.setdefault(device_id, time.monotonic() - started)
                return len(updated_s) == len(device_ids)

            wait_for(every_device_updated, timeout=120, interval=0.2, what=f"every device to run agent {GOOD}")
            done = wait_for(lambda: (r := api.get(f"/api/rollouts/{rollout_id}").json())["state"] == "completed"
                            and r, timeout=60, what="the rollout to complete")
            assert [len(w) for w in done["waves"]] == [1, 1], "a canary, then the rest"
        for agent in agents:
            prefix = agent.config.parent / "opt"
            assert served_agent_version(agent) == GOOD
            assert infer_version(agent.scoring_url, "scaler") == 1, "the modules serve again after the update"
            assert current_version(prefix) == GOOD and current_version(prefix, "confirmed") == GOOD
            assert sorted(p.name for p in (prefix / "envs").iterdir()) == sorted([__version__, GOOD]), \
                "the previous environment is kept"
            assert read_state(prefix).rollbacks == []
        time.sleep(2)  # let the new agents settle (first requests, telemetry flushed) before measuring
        rss_after = {a.device_id: agent_rss_mb(a) for a in agents}
        print(f"agent {__version__} -> {GOOD}: new agent serving {sorted(round(s, 1) for s in updated_s.values())} s "
              f"after the rollout started (canary, then the rest); RSS before {rss_before} MB, after {rss_after} MB")
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


def roll_out_until_rolled_back(server, agents, wheels, broken: str, device_ids: list[str]) -> dict[str, float]:
    """Roll out the broken agent to every device (one wave); wait until each rolled back and the rollout paused.
    Returns each device's seconds from the rollout's start to its reported rollback."""
    bundle = build_agent_bundle(server, wheels)
    with server.api() as api:
        started = time.monotonic()
        response = api.post("/api/rollouts", json={"module": AGENT, "version": bundle["version"], "selector": TAGS,
                                                   "plan": {"canary": len(device_ids), "max_failures": 1}})
        assert response.status_code == 201, response.text
        rollout_id = response.json()["id"]
        rolled_back_s = {}

        def every_device_rolled_back() -> bool:
            for device_id in device_ids:
                device = api.get(f"/api/devices/{device_id}").json()
                module = agent_module(device)
                if module and module["state"] == "failed" and module["error"]["code"] == "agent_rolled_back" and \
                        module["target_version"] == bundle["version"] and device["agent_version"] == __version__:
                    rolled_back_s.setdefault(device_id, time.monotonic() - started)
            return len(rolled_back_s) == len(device_ids)

        wait_for(every_device_rolled_back, timeout=150, interval=0.2, what=f"every device to roll {broken} back")
        rollout = wait_for(lambda: (r := api.get(f"/api/rollouts/{rollout_id}").json())["state"] != "running" and r,
                           timeout=30, what="the rollout to stop")
        assert rollout["state"] == "paused" and rollout["counts"]["failed"] == len(device_ids), rollout
        shown = run_cli("device", "show", device_ids[0], server=server.url).stdout
        assert f"agent {broken} was rolled back to {__version__}" in shown, shown
        print("\n".join(line for line in shown.splitlines() if AGENT in line or "agent_version" in line))
        assert api.post(f"/api/rollouts/{rollout_id}/rollback").status_code == 200  # the operator withdraws it
    return rolled_back_s


@pytest.mark.parametrize("devices", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_broken_agents_are_rolled_back_on_every_device_and_pause_their_rollouts(tmp_path, mosquitto, agent_wheels,
                                                                                devices):
    """First a version that crashes at start (rolled back after 2 starts), then one that cannot connect (rolled
    back at its 15 s health deadline); each rollout pauses; the previous agent serves again every time. One
    device in CI (each device makes its own environments on a 2-core machine), three under ``slow``."""
    device_ids = [f"brk-{n:02d}" for n in range(devices)]
    server, agents = prepare_fleet(tmp_path, mosquitto, agent_wheels, device_ids, update_health_deadline_s=15,
                                   update_max_starts=2)
    expected = {CRASHES: "exited 2 time(s) before it was healthy (last exit code 1: RuntimeError: this agent build "
                         "crashes at start",
                CANNOT_CONNECT: "not healthy within 15s (not connected to the broker at mqtt://"}
    try:
        for n, broken in enumerate((CRASHES, CANNOT_CONNECT), start=1):
            rolled_back_s = roll_out_until_rolled_back(server, agents, agent_wheels[broken], broken, device_ids)
            for agent in agents:
                prefix = agent.config.parent / "opt"
                assert current_version(prefix) == current_version(prefix, "confirmed") == __version__
                assert served_agent_version(agent) == __version__
                assert infer_version(agent.scoring_url, "scaler") == 1, "the previous agent serves again"
                rollbacks = read_state(prefix).rollbacks
                assert len(rollbacks) == n and rollbacks[-1]["version"] == broken, rollbacks
                assert expected[broken] in rollbacks[-1]["reason"], rollbacks[-1]
            print(f"agent {broken} rolled back on every device {sorted(round(s, 1) for s in rolled_back_s.values())} "
                  f"s after the rollout started; reason: {rollbacks[-1]['reason']}")
    finally:
        for agent in agents:
            agent.stop()
        server.stop()
