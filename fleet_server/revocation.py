"""Revoking a device: its certificates into the CRL, the broker told, its desired state emptied.

:func:`revoke_device` marks every certificate the CA issued to the device
revoked (``ca.revoke``, which re-issues the CRL), marks the device revoked
(the desired state is recomputed to no modules, so a device still connected
is told to stop serving fleet modules), and, when the server runs against a
Mosquitto it configured (``broker_tls_dir``), writes the new CRL there and
SIGHUPs the broker (its pid from ``broker_pid_file``). :class:`CrlRefresher`
does the same hourly when the CA has re-issued its CRL (past half of its
7-day validity), since a CRL past ``nextUpdate`` makes Mosquitto refuse
every client; among server replicas only the leader does (:mod:`.leadership`).

What a reload does, as tests/security observed with Mosquitto 2.0: the
revoked certificate is refused at its *next* TLS handshake; a connection
opened before the revocation stays up until it drops. To cut a device off at
once, restart the broker (sessions and retained messages persist). A device
that was revoked can come back only through a new enrollment token.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from fleet_protocol.timestamps import to_iso

from .broker_config import BrokerConfigFiles, reload_broker, write_crl
from .clock import utc_now
from .errors import NotFoundError
from .leadership import NotLeader
from .store import devices as device_store
from .store import enrollments as enrollment_store

log = logging.getLogger(__name__)
_ca_lock = threading.RLock()  # the CA is not safe for concurrent revocations and CRL re-issues


class CrlRefresher:
    """Hands the broker a fresh CRL well before the old one expires (an expired CRL locks out every client)."""

    def __init__(self, fleet, *, interval_s: float = 3600.0):
        self._fleet = fleet
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgefleet-crl", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            try:
                if self._fleet.leadership.is_leader:  # among replicas, the leader alone re-issues and reloads
                    with self._fleet.leadership.fenced():
                        publish_crl(self._fleet)  # the CA re-issues its CRL past half its validity
            except NotLeader as exc:
                log.info("the CRL is left to the leader: %s", exc)
            except Exception:  # noqa: BLE001 - keep trying: a lapsed CRL takes the whole fleet offline
                log.exception("refreshing the broker's CRL")
            if self._stop.wait(self._interval_s):
                return


def revoke_device(fleet, device_id: str) -> dict:
    """Revoke ``device_id``; ``{"device_id", "serials", "broker_reloaded"}``."""
    if device_store.get_device(db=fleet.db, device_id=device_id) is None:
        raise NotFoundError(f"there is no device {device_id!r}")
    now = to_iso(utc_now())
    serials = enrollment_store.mark_revoked(db=fleet.db, device_id=device_id, now=now)
    with _ca_lock:
        for serial in serials:
            fleet.ca.revoke(serial, reason="cessation_of_operation")
    device_store.set_revoked(db=fleet.db, device_id=device_id, revoked=now)
    fleet.desired.recompute([device_id])
    reloaded = publish_crl(fleet)
    log.info("device %s revoked (%d certificate(s)); broker reloaded: %s", device_id, len(serials), reloaded)
    return {"device_id": device_id, "serials": [str(s) for s in serials], "broker_reloaded": reloaded}


def publish_crl(fleet) -> bool:
    """Give the broker the CA's current CRL if it changed, and SIGHUP it; True when the broker was signalled."""
    if fleet.config.broker_tls_dir is None:
        return False
    files = BrokerConfigFiles.in_directory(fleet.config.broker_tls_dir)
    with _ca_lock:
        if files.crl.exists() and files.crl.read_bytes() == fleet.ca.crl_pem():
            return False
        write_crl(files, fleet.ca)
    pid_file = fleet.config.broker_pid_file
    if pid_file is None:
        log.warning("wrote a new CRL to %s but do not know the broker's pid (--broker-pid-file): reload the "
                    "broker yourself (kill -HUP) for it to take effect", fleet.config.broker_tls_dir)
        return False
    try:
        reload_broker(int(Path(pid_file).read_text().strip()))
    except (OSError, ValueError) as exc:
        log.error("could not signal the broker (pid file %s): %s; reload it yourself", pid_file, exc)
        return False
    return True
