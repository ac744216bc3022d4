"""Staged rollouts over ten real in-process agents: waves, the error threshold, operator actions, restarts."""

from __future__ import annotations

from tests.support.net import wait_for
from tests.support.postgres import BOTH_ENGINES

FLEET_TAGS = {"site": "lab"}


def kinds(fleet, rollout_id: int) -> list[str]:
    return [e["kind"] for e in fleet.api.get(f"/api/rollouts/{rollout_id}/history").json()]


@BOTH_ENGINES  # one whole rollout on PostgreSQL too; the others (restarts, rollback, pause) on SQLite only
def test_canary_of_two_passes_then_the_remaining_waves_complete(fleet):
    fleet.start_agents(10, tags=FLEET_TAGS)
    fleet.build()
    rollout = fleet.post("/api/rollouts", {"module": "scaler", "selector": FLEET_TAGS,
                                           "plan": {"canary": 2, "wave_size": 4}}, expect=201)
    assert [len(w) for w in rollout["waves"]] == [2] and len(rollout["waiting"]) == 8

    done = fleet.wait_rollout(rollout["id"], lambda r: r["state"] == "completed", what="the rollout to complete")
    assert [len(w) for w in done["waves"]] == [2, 4, 4]
    assert done["counts"]["running"] == 10 and done["waiting"] == []
    fleet.wait_models({"scaler": 1})
    history = fleet.api.get(f"/api/rollouts/{rollout['id']}/history").json()
    wave_events = [(e["kind"], e["detail"].get("wave")) for e in history if e["kind"].startswith("wave_")]
    assert wave_events == [("wave_started", 0), ("wave_succeeded", 0), ("wave_started", 1), ("wave_succeeded", 1),
                           ("wave_started", 2), ("wave_succeeded", 2)]
    assert history[0]["kind"] == "created" and history[-1]["kind"] == "completed"
    # completed: the deployment now follows the selector, so a device tagged later gets the version too
    assert done["deployment"]["admitted"] is None


def test_bad_version_pauses_at_the_error_threshold_and_each_device_reverts_by_itself(fleet):
    agents = fleet.start_agents(10, tags=FLEET_TAGS)
    fleet.build()
    fleet.post("/api/deployments", {"module": "scaler", "selector": FLEET_TAGS}, expect=201)
    fleet.wait_models({"scaler": 1})
    fleet.build(scale=3.0, broken=True)  # v2 fails its health check on every device
    rollout = fleet.post("/api/rollouts", {"module": "scaler", "version": 2, "selector": FLEET_TAGS,
                                           "plan": {"canary": 3, "max_failures": 2}}, expect=201)

    paused = fleet.wait_rollout(rollout["id"], lambda r: r["state"] == "paused", what="the rollout to pause")
    assert "failed" in paused["reason"] and paused["counts"]["failed"] >= 2
    assert [len(w) for w in paused["waves"]] == [3] and len(paused["waiting"]) == 7, "no wave after the canary"
    canary = paused["waves"][0]
    wait_for(lambda: all(r["state"] == "failed" for r in fleet.rollout(rollout["id"])["devices"]), timeout=20,
             what="every canary device to report the failure")
    for row in fleet.rollout(rollout["id"])["devices"]:
        assert row["version"] == 1, "the device went back to v1 without the server"
        assert (row["error"]["category"], row["error"]["code"]) == ("health", "health_check_failed")
    fleet.wait_models({"scaler": 1})  # every device, canary included, serves v1
    event = next(e for e in fleet.api.get(f"/api/rollouts/{rollout['id']}/history").json() if e["kind"] == "paused")
    assert event["actor"] == "controller" and {f["device_id"] for f in event["detail"]["failures"]} <= set(canary)

    rolled = fleet.post(f"/api/rollouts/{rollout['id']}/rollback")
    assert rolled["state"] == "rolled_back" and rolled["deployment"]["withdrawn"] is True
    assert fleet.api.post(f"/api/rollouts/{rollout['id']}/resume").status_code == 409
    wait_for(lambda: all(m["error"] is None for a in agents for m in fleet.api.get(f"/api/devices/{a.device_id}")
                         .json()["modules"]), timeout=20, what="the canary devices to report v1 without error")
    assert kinds(fleet, rollout["id"])[-1] == "rolled_back"


def test_operator_pause_and_a_server_restart_mid_rollout_resume_where_it_was(fleet):
    fleet.start_agents(10, tags=FLEET_TAGS)
    fleet.build()
    rollout = fleet.post("/api/rollouts", {"module": "scaler", "selector": FLEET_TAGS,
                                           "plan": {"canary": 2, "wave_size": 3, "max_devices_per_minute": 600}},
                         expect=201)
    rid = rollout["id"]
    fleet.wait_rollout(rid, lambda r: len(r["waves"]) >= 2, what="the canary to pass")
    fleet.stop_server()  # in the middle: the canary passed, later waves are still to come
    fleet.start_server()
    done = fleet.wait_rollout(rid, lambda r: r["state"] == "completed", what="the restarted server to finish")
    assert [len(w) for w in done["waves"]] == [2, 3, 3, 2]
    history = fleet.api.get(f"/api/rollouts/{rid}/history").json()
    started = [e["detail"]["wave"] for e in history if e["kind"] == "wave_started"]
    assert started == [0, 1, 2, 3], "no wave was started twice after the restart"
    admitted = [d for e in history if e["kind"] == "devices_admitted" for d in e["detail"]["devices"]]
    assert sorted(admitted) == sorted(fleet.agents) and len(admitted) == 10

    fleet.build(scale=5.0)
    second = fleet.post("/api/rollouts", {"module": "scaler", "version": 2, "selector": FLEET_TAGS,
                                          "plan": {"canary": 1, "wave_window_s": 60}}, expect=201)
    paused = fleet.post(f"/api/rollouts/{second['id']}/pause")
    assert paused["state"] == "paused"
    fleet.stop_server()
    fleet.start_server()
    assert fleet.rollout(second["id"])["state"] == "paused", "a paused rollout stays paused across a restart"
    assert fleet.post(f"/api/rollouts/{second['id']}/resume")["state"] in ("running", "completed")
    fleet.wait_rollout(second["id"], lambda r: r["state"] == "completed")
    fleet.wait_models({"scaler": 2})
    assert kinds(fleet, second["id"])[:4] == ["created", "wave_started", "devices_admitted", "paused"]
    assert "resumed" in kinds(fleet, second["id"])


def test_rolling_back_a_completed_rollout_returns_every_device_to_the_version_it_kept(fleet):
    agents = fleet.start_agents(10, tags=FLEET_TAGS)
    fleet.build()
    fleet.post("/api/deployments", {"module": "scaler", "selector": FLEET_TAGS}, expect=201)
    fleet.wait_models({"scaler": 1})
    fleet.build(scale=3.0)
    rollout = fleet.post("/api/rollouts", {"module": "scaler", "version": 2, "selector": FLEET_TAGS,
                                           "plan": {"canary_percent": 20, "wave_percent": 40}}, expect=201)
    done = fleet.wait_rollout(rollout["id"], lambda r: r["state"] == "completed")
    assert [len(w) for w in done["waves"]] == [2, 4, 4]
    fleet.wait_models({"scaler": 2})

    assert fleet.post(f"/api/rollouts/{rollout['id']}/rollback")["state"] == "rolled_back"
    fleet.wait_models({"scaler": 1})  # v1 was kept on each device as the previous version
    wait_for(lambda: all(m["state"] == "running" and m["error"] is None
                         for a in agents for m in fleet.api.get(f"/api/devices/{a.device_id}").json()["modules"]),
             what="every device to report v1 running")


def test_a_crash_between_a_wave_event_and_the_wave_update_leaves_neither(fleet, monkeypatch):
    """A controller step commits its writes together: a failure halfway (as a kill -9 would) rolls all of them back."""
    from fleet_server.store import rollouts as rollout_store

    fleet.start_agents(3, tags=FLEET_TAGS)
    fleet.build()
    real_update, crashed = rollout_store.update_rollout, []

    def crash_once_when_the_second_wave_opens(**values):
        if len(values.get("waves", [])) == 2 and not crashed:  # after wave_succeeded(0) was written
            crashed.append(True)
            raise RuntimeError("simulated crash between the wave_succeeded event and the wave update")
        return real_update(**values)

    monkeypatch.setattr(rollout_store, "update_rollout", crash_once_when_the_second_wave_opens)
    rollout = fleet.post("/api/rollouts", {"module": "scaler", "selector": FLEET_TAGS,
                                           "plan": {"canary": 1, "wave_size": 2}}, expect=201)
    fleet.wait_rollout(rollout["id"], lambda r: r["state"] == "completed", what="the rollout to complete")
    assert crashed
    history = fleet.api.get(f"/api/rollouts/{rollout['id']}/history").json()
    wave_events = [(e["kind"], e["detail"].get("wave")) for e in history if e["kind"].startswith("wave_")]
    assert wave_events == [("wave_started", 0), ("wave_succeeded", 0), ("wave_started", 1), ("wave_succeeded", 1)]
