"""The reconciler's part for the ``edgefleet-agent`` module: a desired agent bundle, a new version of this agent.

:func:`reconcile_agent` runs on the :class:`~edge_agent.reconciler.Reconciler`'s worker in place of the
model path. The bundle gets the same trust checks, fetch and atomic install as any module
(:meth:`~edge_agent.reconciler.Reconciler._download`; no profile fit, it holds no model). Then the
installed bundle is handed to :class:`~edge_agent.self_update.AgentUpdater`, never to the runtime. The
updater makes the new environment and asks for the restart, or reports that this version already runs.
An agent with no updater, or one whose updater refuses (no supervisor, or this bundle was rolled back on
this device), reports the refusal through the reconciler's failure path (``install_refused``).

It does not make environments, restart or roll back (:mod:`edge_agent.self_update` and
:mod:`edge_agent.supervisor` do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet_protocol.errors import EdgefleetError
from fleet_protocol.manifest import AGENT_MODULE
from fleet_protocol.messages import DesiredModule

if TYPE_CHECKING:
    from .reconciler import Reconciler


def reconcile_agent(rec: Reconciler, module: DesiredModule, generation: int) -> None:
    """Bring the desired agent bundle to this device and hand it to the updater (or report why not)."""
    target = (module.version, module.bundle_digest)
    updater = rec.agent_updater
    refused = updater.refusal(module.bundle_digest) if updater is not None else EdgefleetError(
        "this agent does not update itself here", code="not_supervised", category="config")
    if refused is not None:
        rec._fail(AGENT_MODULE, target, refused, event="install_refused")
        return
    installed = rec.installer.active(AGENT_MODULE)
    if installed is not None and installed.digest == module.bundle_digest:
        updater.settle(installed)  # installed already: report it, or finish a switch a crash cut short
        return
    record = rec._download(module, installed, generation, fit_profile=False)
    if record is not None:
        updater.apply(record)
