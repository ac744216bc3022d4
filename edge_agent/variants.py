"""A/B variants on the device: serve a module's other versions beside its main one, with the desired weights.

:func:`reconcile_variants` is the part of the :class:`~edge_agent.reconciler.Reconciler` that runs after a
desired module's main version is settled (on the reconciler's worker, holding its work lock). Each variant
is verified like any version (signature, pin; it may be older than the main one), checked to fit the
device, fetched and installed beside the main version, loaded, and then the runtime splits traffic by the
weights. A variant that cannot be served (refused, does not fit, does not load, or whose download cannot
start for lack of disk space) is reported through the reconciler's failure path (``variant_failed``); a
variant waiting for disk space is reported at once and cleared when space is freed. With no variants, or
while the main version is not the desired one, the split ends and stored variants are dropped.

It does not pick weights or decide promotion (the server does) and does not route requests
(:meth:`edgefleet_runtime.runtime.Runtime.set_split` does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet_protocol.errors import EdgefleetError
from fleet_protocol.messages import DesiredModule

from .fit import check_fits

if TYPE_CHECKING:
    from .reconciler import Reconciler


def reconcile_variants(rec: Reconciler, module: DesiredModule, generation: int) -> None:
    """Serve ``module``'s A/B variants beside its main version (or stop splitting when there are none)."""
    from .reconciler import ModuleStatus  # the reconciler imports this module

    name = module.name
    target = (module.version, module.bundle_digest)
    main = rec.runtime.table.get(name)
    if not module.variants or main is None or main.primary.digest != module.bundle_digest:
        rec.runtime.set_split(name, None, [])
        rec.installer.drop_variants(name, set())
        return

    def on_problem(error: EdgefleetError | None) -> None:  # no room for a variant's download, or room again
        if error is not None:
            rec._fail(name, target, error, event="variant_failed")
        else:
            rec._set(name, ModuleStatus("running", *target))
            rec._changed()

    chosen = []
    try:
        for variant in module.variants:
            desired = DesiredModule(name, variant.version, variant.bundle_digest, variant.manifest)
            loaded = rec.runtime.variant_of(name, variant.bundle_digest)
            if loaded is None:
                record = rec.installer.variants(name).get(variant.bundle_digest)
                if record is None:  # signed and pinned like any version; may be older than the main one
                    manifest = rec.trust.verify_module(desired, installed=None, now=rec._now())
                    check_fits(rec.runtime.profile, manifest)
                    content_key = rec.fetcher.open_key(manifest, variant.content_key)
                    rec.installer.seed_chunks(manifest)
                    rec.fetcher.fetch(manifest, on_problem=on_problem, content_key=content_key,
                                      waiting=rec._released,
                                      should_abort=lambda: rec._stop.is_set() or rec._newer_than(generation))
                    record = rec.installer.install_variant(manifest, variant.manifest)
                loaded = rec.runtime.load(record)
            chosen.append((loaded, variant.weight))
    except EdgefleetError as exc:
        rec.runtime.set_split(name, None, [])
        rec._fail(name, target, exc, event="variant_failed")
        return
    rec.runtime.set_split(name, module.weight, chosen)
    rec.installer.drop_variants(name, {v.bundle_digest for v in module.variants})
    rec.telemetry.event("split_set", module=name, weights={str(module.version): module.weight,
                                                           **{str(l.version): w for l, w in chosen}})
