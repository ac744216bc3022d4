"""Drift windows in, alerts once per crossing, reports out.

**Ingest** (:meth:`Drift.ingest`, inside the telemetry batch's transaction): each
``drift`` record is checked (:func:`fleet_protocol.drift.parse_window`,
then against the version's stored reference: same reference id, one count
per bin); a bad one is counted as malformed and dropped, the rest of the
batch is kept. Windows are stored once (``(device, outbox, seq)``).

**Alerts** (:meth:`Drift.evaluate`, after each ingest, per device and version):
the device's windows of the ``drift_alert_period_s`` up to the newest one
received (by the device's timestamps, so a backlog sent after hours offline
is judged too) are merged and
each feature judged (:mod:`.stats`). A feature that drifts and has no open
alert raises one (stored with its statistics); an open alert whose feature
has settled (every statistic under 80 % of its threshold,
:func:`.stats.settled`) is cleared. So an alert is raised once per crossing,
not per window, a feature hovering at a threshold keeps its one alert, and a
period with too few rows changes nothing.

**Reports** (:meth:`Drift.report`): windows merged by group (all devices, a tag's
values, or devices) over the whole period, and per time bucket for drift
over time.
"""

from __future__ import annotations

from datetime import timedelta

from fleet_protocol import drift
from fleet_protocol.errors import BadDataError, MessageError
from fleet_protocol.timestamps import from_iso, to_iso

from ..clock import utc_now
from ..config import ServerConfig
from ..errors import NotFoundError
from ..spans import parse_since
from ..store import Database
from ..store import drift as drift_store
from . import stats

MAX_SERIES_BUCKETS = 500


class Drift:
    """Drift references, windows and alerts of the model versions, over the store; built by the fleet."""

    def __init__(self, *, db: Database, config: ServerConfig):
        self._db = db
        self._config = config  # its drift_alert_period_s, read at each evaluation

    def set_reference(self, *, model: str, version: int, reference: drift.Reference, source: str) -> dict:
        drift_store.put_reference(db=self._db, model=model, version=version, reference_id=reference.id,
                                  reference=reference.to_dict(), source=source, created=to_iso(utc_now()))
        return summary(reference, source)

    def load_reference(self, model: str, version: int) -> tuple[str, drift.Reference] | None:
        stored = drift_store.get_reference(db=self._db, model=model, version=version)
        if stored is None:
            return None
        return stored["reference_id"], drift.Reference.from_dict(stored["reference"])

    def stored_reference(self, model: str, version: int) -> dict:
        """The stored reference as the API shows it: per feature its bin edges, baseline range and counts."""
        stored = drift_store.get_reference(db=self._db, model=model, version=version)
        if stored is None:
            raise NotFoundError(f"model {model}:{version} has no drift reference")
        return stored

    def alerts(self, *, model: str | None, version: int | None, open_only: bool) -> list[dict]:
        """Drift alerts, newest first."""
        return drift_store.list_alerts(db=self._db, model=model, version=version, open_only=open_only)

    def ingest(self, *, device_id: str, outbox_id: str, records: list[dict], received: str, refuse) -> int:
        """Store the valid windows of a batch; ``refuse(reason)`` counts a bad one. Return how many were new."""
        windows, references = [], {}
        for record in records:
            try:
                window = drift.parse_window(record["data"])
                key = (window["model"], window["version"])
                if key not in references:
                    references[key] = self.load_reference(*key)
                if references[key] is None:
                    raise MessageError(f"drift window for {key[0]}:{key[1]}, which has no drift reference")
                reference_id, reference = references[key]
                if window["reference"] != reference_id:
                    raise MessageError(f"drift window counted against reference {window['reference']}, "
                                       f"not {key[0]}:{key[1]}'s {reference_id}")
                drift.check_counts(reference, window["counts"], window["rows"])
                ts = to_iso(from_iso(record["ts"], what="drift window ts"))
            except BadDataError as exc:
                refuse(str(exc))
                continue
            windows.append({**window, "seq": record["seq"], "ts": ts})
        if not windows:
            return 0
        new = drift_store.insert_windows(db=self._db, device_id=device_id, outbox_id=outbox_id, windows=windows,
                                         received=received)
        for model, version in {(w["model"], w["version"]) for w in windows}:
            latest = max(w["ts"] for w in windows if (w["model"], w["version"]) == (model, version))
            self.evaluate(model=model, version=version, device_id=device_id,
                          reference=references[(model, version)][1], until=latest)
        return new

    def evaluate(self, *, model: str, version: int, device_id: str, reference: drift.Reference, until: str) -> None:
        """Raise or clear this device's alerts from its windows of the alert period that ends at ``until`` (the
        newest window just received: a device back from hours offline has its backlog judged as it was scored)."""
        now = utc_now()
        since = to_iso(from_iso(until) - timedelta(seconds=self._config.drift_alert_period_s))
        rows = drift_store.windows(db=self._db, model=model, version=version, since=since, until=until,
                                   device_id=device_id)
        merged = drift.merge([w["counts"] for w in rows])
        if merged is None:
            return
        open_alerts = drift_store.open_alerts(db=self._db, model=model, version=version, device_id=device_id)
        for feature, observed in zip(reference.features, merged):
            result = _compare(reference, feature, observed)
            if result["rows"] < stats.MIN_ROWS:
                continue
            if result["drifted"] and feature.name not in open_alerts:
                drift_store.raise_alert(db=self._db, model=model, version=version, device_id=device_id,
                                        feature=feature.name, raised=to_iso(now), statistics=result)
            elif feature.name in open_alerts and stats.settled(result):
                drift_store.clear_alert(db=self._db, alert_id=open_alerts[feature.name], cleared=to_iso(now))

    def report(self, *, model: str, version: int, by: str | None = None, since: str | None = None,
               bucket_s: int = 3600) -> dict:
        """Statistics per feature for each group, drift over time (PSI per feature per bucket), and the alerts.

        ``since``: a time (``2026-12-03T10:00:00Z``) or a span back from now (``30m``, ``6h``, ``7d``).
        """
        loaded = self.load_reference(model, version)
        if loaded is None:
            raise NotFoundError(f"model {model}:{version} has no drift reference: register it with --baseline")
        if bucket_s < 60:
            raise BadDataError(f"bucket_s must be at least 60 seconds, got {bucket_s}")
        since = parse_since(since)
        reference = loaded[1]
        windows = drift_store.windows(db=self._db, model=model, version=version, since=since)
        groups: dict[str, list[dict]] = {}
        for window in windows:
            key = window["device_id"] if by == "device" else (window["tags"].get(by, "(none)") if by else "all")
            groups.setdefault(key, []).append(window)
        return {"model": model, "version": version, "by": by, "since": since, "bucket_s": bucket_s,
                "thresholds": stats.THRESHOLDS, "min_rows": stats.MIN_ROWS,
                "reference": summary(reference, "stored"),
                "groups": [_group(name, rows, reference, bucket_s) for name, rows in sorted(groups.items())],
                "alerts": drift_store.list_alerts(db=self._db, model=model, version=version)}


def summary(reference: drift.Reference, source: str) -> dict:
    return {"rows": reference.rows, "features": [f.name for f in reference.features],
            "skipped": list(reference.skipped), "source": source, "id": reference.id}


def _group(name: str, windows: list[dict], reference: drift.Reference, bucket_s: int) -> dict:
    merged = drift.merge([w["counts"] for w in windows])
    features = [{"name": f.name, **_compare(reference, f, observed)} for f, observed in zip(reference.features,
                                                                                          merged)]
    buckets: dict[str, list[dict]] = {}
    for window in windows:
        moment = from_iso(window["ts"])
        start = moment.timestamp() // bucket_s * bucket_s
        buckets.setdefault(to_iso(moment - timedelta(seconds=moment.timestamp() - start)), []).append(window)
    series = []
    for start, rows in sorted(buckets.items())[-MAX_SERIES_BUCKETS:]:
        counts = drift.merge([w["counts"] for w in rows])
        series.append({"start": start, "rows": sum(w["rows"] for w in rows),
                       "psi": {f.name: _compare(reference, f, c)["psi"] for f, c in zip(reference.features, counts)}})
    return {"group": name, "devices": len({w["device_id"] for w in windows}), "windows": len(windows),
            "rows": sum(w["rows"] for w in windows), "features": features, "series": series}


def _compare(reference: drift.Reference, feature: drift.Feature, observed) -> dict:
    return stats.compare(feature.expected, observed, baseline_nan=reference.non_finite(feature))
