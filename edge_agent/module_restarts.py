"""Crash loops and restarts of served modules: the part of the :class:`~edge_agent.reconciler.Reconciler`
that takes a crashing version out of service and brings it back.

:func:`on_crash_loop` runs on the request thread that saw a module's ``crash_limit``-th crash in a row: the
version is unloaded and reported ``failed``/``crash_loop``, then loaded again after a doubling back-off
(:func:`edgefleet_runtime.health.restart_delay_s`); after ``max_restarts`` loops it stays down (``module_broken``)
until a new desired state. :func:`restart_module` is the ``restart_module`` job: load the installed version
again and swap it in, or leave the served one untouched when that fails.

It does not count crashes (:mod:`edgefleet_runtime.runtime` does) or decide back-off delays
(:mod:`edgefleet_runtime.health`).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from edgefleet_runtime.health import restart_delay_s
from edgefleet_runtime.runtime import LoadedModule, ModelNotFound

if TYPE_CHECKING:
    from .reconciler import Reconciler

log = logging.getLogger("edgefleet.agent.reconciler")


def on_crash_loop(rec: Reconciler, loaded: LoadedModule) -> None:
    """Take the crash-looping version out, report it, and schedule its restart (or mark it broken)."""
    from .reconciler import ModuleStatus

    name = loaded.name
    if rec.runtime.table.get(name) is not loaded:
        return
    rec.runtime.unload(name)
    loops = rec._crash_loops[loaded.digest] = rec._crash_loops.get(loaded.digest, 0) + 1
    delay = restart_delay_s(loaded.policy, loops)
    message = (f"{name} v{loaded.version} crashed {loaded.policy.crash_limit} times in a row "
               + (f"(crash loop {loops}); restarting in {delay:g}s" if delay is not None
                  else f"in {loops} crash loops; marked broken until a new desired state"))
    error = {"code": "crash_loop", "category": "health", "message": message}
    log.error("%s", message)
    rec._set(name, ModuleStatus("failed", loaded.version, loaded.digest, error=error))
    rec.telemetry.event("crash_loop" if delay is not None else "module_broken", module=name,
                        version=loaded.version, digest=loaded.digest, loops=loops, **error)
    rec._changed()
    if delay is not None:
        timer = threading.Timer(delay, _restart_after_backoff, args=(rec, name, loaded.digest))
        timer.daemon = True
        timer.start()


def _restart_after_backoff(rec: Reconciler, name: str, digest: str) -> None:
    with rec._work:
        installed = rec.installer.active(name)
        if rec._stop.is_set() or installed is None or installed.digest != digest or name in rec.runtime.table:
            return  # stopped, replaced or already serving again
        log.info("restarting %s v%s after its crash-loop back-off", name, installed.version)
        rec._load_or_rollback(installed, target=None)


def restart_module(rec: Reconciler, name: str) -> LoadedModule:
    """Load the installed version of ``name`` again (model, ``init``, health check) and swap it in: the
    ``restart_module`` job. On a failure the version already served stays, untouched."""
    from .reconciler import ModuleStatus

    with rec._work:
        installed = rec.installer.active(name)
        serving = rec.runtime.table.get(name)
        if installed is None:
            raise ModelNotFound(f"module {name!r} is not installed on this device", code="module_not_installed",
                                category="job")
        if serving is not None and serving.variants:
            raise ModelNotFound(f"module {name!r} is served as an A/B split; restarting one version of it is "
                                "not supported (deploy it again instead)", code="module_split", category="job")
        loaded = rec.runtime.load(installed)
        rec._watch_crashes(loaded)
        rec.runtime.activate(loaded)
        rec._crash_loops.pop(installed.digest, None)
        rec._set(name, ModuleStatus("running", installed.version, installed.digest))
        rec.telemetry.event("module_restarted", module=name, version=installed.version, digest=installed.digest,
                            accelerator=loaded.accelerator)
    log.info("%s v%s restarted by a job", name, installed.version)
    rec._changed()
    return loaded
