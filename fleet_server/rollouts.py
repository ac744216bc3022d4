"""Staged rollouts: a deployment let in wave by wave, gated on device health.

A rollout owns one deployment whose ``admitted`` list starts empty. The
controller (:class:`RolloutController`, one background thread, plus
:meth:`~RolloutController.step_all` for callers that want a step now) moves
each running rollout forward:

1. wave 0 is the canary (``canary`` devices or ``canary_percent`` of the
   targeted ones); wave k ≥ 1 has ``wave_size`` (or ``wave_percent``)
   devices times ``growth``^(k-1); without either, wave 1 takes the rest.
   With ``max_devices_per_minute`` a wave's devices are let in gradually.
2. A wave succeeds when every device of it is admitted and at least
   ``success_percent`` of them report the version running (agents report
   ``running`` only after the version passed its health check), within
   ``wave_window_s`` of the wave's start; then the next wave starts, and
   after the last one the rollout is ``completed`` and the deployment
   targets every matching device (new ones included).
3. Failures (devices reporting an error for this version) are counted over
   all admitted devices since the last resume; at ``max_failures`` or
   ``max_failure_percent`` the rollout pauses (or aborts, ``on_failure``).
   A wave that runs out of time pauses too.
4. A rollout whose target matches no device it may run on (created with
   ``allow_empty``; otherwise creation is refused) stays ``running`` at
   wave -1 with the reason "waiting for a device…", and starts its canary
   when the first one appears; it never completes empty. Devices its fit
   check refuses (:func:`~fleet_server.targeting.refusal`) are listed as
   ``refused`` and never let in.

States: running → paused ⇄ running → completed | aborted | rolled_back.
Operators pause, resume, abort (stop letting devices in; what runs stays)
and roll back (withdraw the deployment: devices go back to whatever the
other deployments say, normally the previous version). Everything is in
the database and every step reads it afresh, so a restarted server (or a
new leader among replicas: only the leader advances rollouts) continues
where it was. Each creation, wave transition and operator action is
appended to the rollout's history (never updated).
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import timedelta

from fleet_protocol.errors import BadDataError
from fleet_protocol.timestamps import from_iso, to_iso

from .deployments import describe_target
from . import targeting
from .clock import utc_now
from .errors import ConflictError, NotFoundError
from .leadership import NotLeader
from .store import deployments as deployment_store
from .store import devices as device_store
from .store import rollouts as rollout_store
from .tick_loop import TickLoop

log = logging.getLogger(__name__)

ACTIVE_STATES = ("running", "paused")
STATES = ("running", "paused", "completed", "aborted", "rolled_back")
PLAN_DEFAULTS = {"canary": None, "canary_percent": None, "wave_size": None, "wave_percent": None, "growth": 1.0,
                 "max_devices_per_minute": None, "success_percent": 100.0, "max_failures": 1,
                 "max_failure_percent": None, "on_failure": "pause", "wave_window_s": 600.0}


def normalise_plan(plan: dict) -> dict:
    """The plan with defaults filled in; :class:`BadDataError` for contradictions."""
    plan = {**PLAN_DEFAULTS, **{k: v for k, v in plan.items() if v is not None}}
    if plan["canary"] is not None and plan["canary_percent"] is not None:
        raise BadDataError("give canary (devices) or canary_percent, not both")
    if plan["wave_size"] is not None and plan["wave_percent"] is not None:
        raise BadDataError("give wave_size (devices) or wave_percent, not both")
    if plan["canary"] is None and plan["canary_percent"] is None:
        plan["canary"] = 1
    if plan["on_failure"] not in ("pause", "abort"):
        raise BadDataError("on_failure must be 'pause' or 'abort'")
    return plan


def wave_size(plan: dict, wave: int, total: int) -> int:
    """How many devices wave ``wave`` (0 = canary) lets in when ``total`` devices are targeted."""
    if wave == 0:
        size = plan["canary"] if plan["canary"] is not None else math.ceil(plan["canary_percent"] * total / 100)
        return max(1, size)
    if plan["wave_size"] is not None:
        base = plan["wave_size"]
    elif plan["wave_percent"] is not None:
        base = math.ceil(plan["wave_percent"] * total / 100)
    else:
        return max(1, total)
    return max(1, math.ceil(base * plan["growth"] ** (wave - 1)))


class RolloutController:
    """Creates rollouts, applies operator actions and advances running rollouts on a timer."""

    def __init__(self, fleet, *, tick_s: float = 1.0):
        self._fleet = fleet
        self._db = fleet.db
        self._leadership = fleet.leadership
        self._lock = threading.RLock()
        self._loop = TickLoop(self.step_all, tick_s=tick_s, name="edgefleet-rollouts", log=log,
                              failure="advancing rollouts failed", gate=lambda: self._leadership.is_leader)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    # --- operations ---------------------------------------------------------------------------

    def create(self, *, module: str, version: int | None, bundle_digest: str | None, devices: list[str] | None,
               selector: dict[str, str] | None, group: str | None, priority: int, plan: dict,
               gate: dict | None = None, allow_empty: bool = False) -> dict:
        plan = normalise_plan(plan)
        with self._lock:
            deployment = self._fleet.deployments.create_deployment(
                module=module, version=version, bundle_digest=bundle_digest, devices=devices,
                selector=selector, group=group, priority=priority, admitted=[], gate=gate, allow_empty=allow_empty)
            now = to_iso(utc_now())
            rollout = rollout_store.insert_rollout(db=self._db, deployment_id=deployment["id"], plan=plan, created=now)
            self._event(rollout["id"], "created", "operator", deployment=deployment, plan=plan)
            self._step_now(rollout["id"])
        return self.detail(rollout["id"])

    def act(self, rollout_id: int, action: str) -> dict:
        """An operator's ``pause``, ``resume``, ``abort`` or ``rollback``."""
        with self._lock:
            with self._db.transaction():  # the change and its history event commit together
                rollout = self._get(rollout_id)
                state, now = rollout["state"], to_iso(utc_now())
                allowed = {"pause": ("running",), "resume": ("paused",), "abort": ACTIVE_STATES,
                           "rollback": ("running", "paused", "completed", "aborted")}[action]
                if state not in allowed:
                    raise ConflictError(f"rollout {rollout_id} is {state}; {action} needs it {' or '.join(allowed)}")
                if action == "pause":
                    self._set(rollout, state="paused", reason="paused by an operator")
                elif action == "resume":
                    failures = self._summary(rollout)["failed"]
                    self._set(rollout, state="running", reason=None, acknowledged_failures=failures, wave_started=now)
                elif action == "abort":
                    self._set(rollout, state="aborted", reason="aborted by an operator")
                else:
                    deployment_store.withdraw(db=self._db, deployment_id=rollout["deployment_id"])
                    self._set(rollout, state="rolled_back", reason="rolled back by an operator")
                self._event(rollout_id, {"pause": "paused", "resume": "resumed", "abort": "aborted",
                                         "rollback": "rolled_back"}[action], "operator", previous_state=state)
            if action == "rollback":
                self._fleet.desired.recompute([d for wave in rollout["waves"] for d in wave] or None)
            if action == "resume":
                self._step_now(rollout_id)
        return self.detail(rollout_id)

    def step_all(self) -> None:
        with self._lock:
            for rollout in rollout_store.list_rollouts(db=self._db, states=("running",)):
                self._step(rollout["id"])

    # --- reading ------------------------------------------------------------------------------

    def detail(self, rollout_id: int) -> dict:
        rollout = self._get(rollout_id)
        deployment = deployment_store.get_deployment(db=self._db, deployment_id=rollout["deployment_id"])
        summary = self._summary(rollout)
        return {**rollout, "deployment": deployment, "wave": len(rollout["waves"]) - 1, **summary}

    def history(self, rollout_id: int) -> list[dict]:
        self._get(rollout_id)
        return rollout_store.events(db=self._db, rollout_id=rollout_id)

    def list(self) -> list[dict]:
        return [self.detail(r["id"]) for r in rollout_store.list_rollouts(db=self._db)]

    # --- internals ----------------------------------------------------------------------------

    def _get(self, rollout_id: int) -> dict:
        rollout = rollout_store.get_rollout(db=self._db, rollout_id=rollout_id)
        if rollout is None:
            raise NotFoundError(f"there is no rollout {rollout_id}")
        return rollout

    def _set(self, rollout: dict, **values) -> None:
        rollout_store.update_rollout(db=self._db, rollout_id=rollout["id"], updated=to_iso(utc_now()), **values)
        rollout.update(values)

    def _event(self, rollout_id: int, kind: str, actor: str, **detail) -> None:
        rollout_store.add_event(db=self._db, rollout_id=rollout_id, ts=to_iso(utc_now()), kind=kind, actor=actor,
                                detail=detail)
        log.info("rollout %d: %s (%s) %s", rollout_id, kind, actor, detail if kind != "created" else "")

    def _summary(self, rollout: dict) -> dict:
        """Each admitted (or refused) device's state, the counts, and the devices still waiting for a wave."""
        deployment = deployment_store.get_deployment(db=self._db, deployment_id=rollout["deployment_id"])
        deployments = deployment_store.list_deployments(db=self._db, module=deployment["module"])
        admitted = {d: i for i, wave in enumerate(rollout["waves"]) for d in wave}
        rows, waiting = [], []
        for device in device_store.list_devices(db=self._db):
            if not targeting.matches(deployment, device):
                continue
            if targeting.refusal(deployment, device):  # its firmware profile fails the fit check: never let in
                rows.append({**targeting.device_state(deployment, device, None), "wave": admitted.get(device["id"])})
                continue
            if device["id"] not in admitted and deployment["admitted"] is not None:
                waiting.append(device["id"])
                continue
            effective = targeting.effective_deployments(device, deployments).get(deployment["module"])
            row = targeting.device_state(deployment, device, effective)
            row["wave"] = admitted.get(device["id"])
            rows.append(row)
        counts = {state: 0 for state in targeting.STATES}
        for row in rows:
            counts[row["state"]] += 1
        return {"devices": rows, "waiting": waiting, "counts": counts, "failed": counts["failed"]}

    def _step_now(self, rollout_id: int) -> None:
        """A step right after an operator's change when this replica leads; elsewhere the leader's next tick."""
        if self._leadership.is_leader:
            try:
                self._step(rollout_id)
            except NotLeader as exc:
                log.info("rollout %d: left to the leader (%s)", rollout_id, exc)

    def _step(self, rollout_id: int) -> None:
        """One controller step. Its writes (rollout, history events, admitted devices) commit together, fenced
        (only while this replica leads: :mod:`.leadership`), so a crash leaves all or none of a transition and a
        deposed leader none; the newly admitted devices' desired state goes out after."""
        with self._leadership.fenced():
            admitted = self._transition(rollout_id)
        if admitted:
            self._fleet.desired.recompute(admitted)

    def _transition(self, rollout_id: int) -> list[str]:
        """Pause, abort, admit, advance or complete as the plan says; return the devices admitted now."""
        rollout = self._get(rollout_id)
        if rollout["state"] != "running":
            return []
        plan, now = rollout["plan"], utc_now()
        summary = self._summary(rollout)
        new_failures = summary["failed"] - rollout["acknowledged_failures"]
        admitted_count = sum(len(w) for w in rollout["waves"])
        if new_failures > 0 and (
                (plan["max_failures"] is not None and new_failures >= plan["max_failures"]) or
                (plan["max_failure_percent"] is not None and admitted_count and
                 new_failures * 100 / admitted_count >= plan["max_failure_percent"])):
            state = "paused" if plan["on_failure"] == "pause" else "aborted"
            reason = f"{new_failures} device(s) failed (threshold crossed)"
            failed = [r for r in summary["devices"] if r["state"] == "failed"]
            self._set(rollout, state=state, reason=reason)
            self._event(rollout_id, state, "controller", reason=reason,
                        failures=[{"device_id": r["device_id"], "error": r["error"]} for r in failed])
            return []
        deployment = deployment_store.get_deployment(db=self._db, deployment_id=rollout["deployment_id"])
        total = len(summary["devices"]) + len(summary["waiting"]) - summary["counts"]["refused"]
        waves = [list(w) for w in rollout["waves"]]
        if not waves and not total:  # created with allow_empty: wait for a device, never claim completion
            reason = (f"waiting for a device: none that it may run on matches "
                      f"{describe_target(deployment['target'])} yet")
            if rollout["reason"] != reason:
                self._set(rollout, reason=reason)
                self._event(rollout_id, "waiting", "controller", reason=reason)
            return []
        if not waves:
            waves.append([])
            self._set(rollout, waves=waves, wave_started=to_iso(now), reason=None)
            self._event(rollout_id, "wave_started", "controller", wave=0,
                        planned=min(wave_size(plan, 0, total), total))
        index, current = len(waves) - 1, waves[-1]
        planned = wave_size(plan, index, total)
        waiting = sorted(summary["waiting"])
        if len(current) < planned and waiting:
            return self._admit(rollout, deployment, waves, planned, waiting, now)
        by_device = {r["device_id"]: r for r in summary["devices"]}
        counted = [by_device[d] for d in current
                   if d in by_device and by_device[d]["state"] not in ("superseded", "refused")]
        running = sum(1 for r in counted if r["state"] == "running")
        if running >= math.ceil(plan["success_percent"] * len(counted) / 100) and (counted or not current):
            self._event(rollout_id, "wave_succeeded", "controller", wave=index, running=running, devices=len(current))
            if not waiting:
                deployment_store.set_admitted(db=self._db, deployment_id=deployment["id"], admitted=None)
                self._set(rollout, state="completed", reason=None)
                self._event(rollout_id, "completed", "controller", devices=admitted_count)
                return []
            waves.append([])
            self._set(rollout, waves=waves, wave_started=to_iso(now))
            self._event(rollout_id, "wave_started", "controller", wave=index + 1,
                        planned=min(wave_size(plan, index + 1, total), len(waiting)))
            return self._admit(rollout, deployment, waves, wave_size(plan, index + 1, total), waiting, now)
        started = from_iso(rollout["wave_started"])
        if now - started > timedelta(seconds=plan["wave_window_s"]):
            reason = (f"wave {index}: only {running} of {len(counted)} device(s) running the version after "
                      f"{plan['wave_window_s']:g}s")
            self._set(rollout, state="paused", reason=reason)
            self._event(rollout_id, "paused", "controller", reason=reason)
        return []

    def _admit(self, rollout: dict, deployment: dict, waves: list[list[str]], planned: int, waiting: list[str],
               now) -> list[str]:
        """Let the next devices of the current wave in, within the rate limit; return them."""
        plan, current = rollout["plan"], waves[-1]
        room = planned - len(current)
        rate = plan["max_devices_per_minute"]
        if rate is not None:
            elapsed_s = (now - from_iso(rollout["wave_started"])).total_seconds()
            room = min(room, 1 + math.floor(rate * elapsed_s / 60) - len(current))
        new = waiting[:max(0, room)]
        if not new:
            return []
        current.extend(new)
        admitted = [d for wave in waves for d in wave]
        deployment_store.set_admitted(db=self._db, deployment_id=deployment["id"], admitted=admitted)
        self._set(rollout, waves=waves)
        self._event(rollout["id"], "devices_admitted", "controller", wave=len(waves) - 1, devices=new)
        return new
