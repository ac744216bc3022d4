"""Telemetry retention: roll new raw telemetry up into minute and hour rows, and prune rows past their age limit.

Every ``telemetry_rollup_tick_s`` (:class:`~fleet_server.tick_loop.TickLoop`),
one step:

1. rolls raw telemetry up (:func:`fleet_server.store.rollups.roll_up`), one
   batch of ``rollup_batch`` rows per transaction, until none is left (or
   :data:`MAX_BATCHES` batches: a backlog bigger than that, e.g. the first
   start on an old data dir, is finished over the next ticks);
2. deletes, one batch of ``prune_batch`` rows per transaction, rows older
   than their limit: raw telemetry (by ``received``, and only once rolled
   up), drift windows and captures past ``telemetry_retention_s``; minute
   rollups (by bucket start) past ``minute_rollup_retention_s``; hour rollups
   past ``hour_rollup_retention_s`` when it is set (default: kept).

The loop steps only while this replica leads (:mod:`fleet_server.leadership`;
on SQLite the one server always does), and each batch is its own short
fenced transaction, so readers and ingest wait for one batch at most and a
replica that lost its lease commits nothing. Rolling up must run on one
server at a time (it merges rows read, add, write), which the lease ensures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta

from fleet_protocol.timestamps import to_iso

from .clock import utc_now
from .config import ServerConfig
from .leadership import Leadership, NotLeader
from .store import Database
from .store import rollups as rollup_store
from .tick_loop import TickLoop

log = logging.getLogger("edgefleet.server.retention")

ROLLUP_BATCH = 5_000  # raw rows rolled up per transaction
PRUNE_BATCH = 5_000  # rows deleted per transaction
MAX_BATCHES = 200  # per table and step: a step ends (and the loop can stop) within bounded time; the rest waits a tick


class TelemetryRetention:
    def __init__(self, *, db: Database, config: ServerConfig, leadership: Leadership | None = None,
                 clock: Callable[[], datetime] = utc_now, rollup_batch: int = ROLLUP_BATCH,
                 prune_batch: int = PRUNE_BATCH):
        """Without ``leadership`` (a tool or test on its own database) every step runs, in plain transactions."""
        self._db = db
        self._fenced: Callable[[], AbstractContextManager] = leadership.fenced if leadership else db.transaction
        self._clock = clock
        self._rollup_batch = rollup_batch
        self._prune_batch = prune_batch
        raw = config.telemetry_retention_s
        self.limits_s: dict[str, int | None] = {
            "telemetry": raw, "drift_windows": raw, "captures": raw,
            "telemetry_minute": config.minute_rollup_retention_s, "telemetry_hour": config.hour_rollup_retention_s}
        self._loop = TickLoop(self._tick, tick_s=config.telemetry_rollup_tick_s, name="edgefleet-retention", log=log,
                              failure="rolling up or pruning telemetry failed",
                              gate=(lambda: leadership.is_leader) if leadership else None)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _tick(self) -> None:
        try:
            self.step()
        except NotLeader as exc:  # lost the lease mid-step: the batch in hand rolled back, the new leader goes on
            log.info("telemetry retention left to the leader: %s", exc)

    def step(self) -> dict[str, int]:
        """Roll up everything pending, then prune each table; return the rows rolled up and deleted per table."""
        done = {"rolled_up": self._repeat(lambda: rollup_store.roll_up(db=self._db, limit=self._rollup_batch),
                                          self._rollup_batch)}
        now = self._clock()
        for table, limit_s in self.limits_s.items():
            if limit_s is None:
                continue
            cutoff = to_iso(now - timedelta(seconds=limit_s))
            done[table] = self._repeat(lambda t=table, c=cutoff: rollup_store.prune(
                db=self._db, table=t, cutoff=c, limit=self._prune_batch), self._prune_batch)
        if any(done.values()):
            log.info("telemetry retention: %s", ", ".join(f"{k} {v}" for k, v in done.items() if v))
        return done

    def _repeat(self, batch: Callable[[], int], size: int) -> int:
        """Run ``batch``, each in its own fenced transaction, until one does less than a full batch (at most
        :data:`MAX_BATCHES` times); the total done."""
        total = 0
        for _ in range(MAX_BATCHES):
            with self._fenced():
                done = batch()
            total += done
            if done < size:
                break
        return total
