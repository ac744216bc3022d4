"""Revoking a device: its certificates into the CRL, the broker told, its desired state emptied.

:meth:`Revocation.revoke_device` marks every certificate the CA issued to the device
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
from .ca import CertificateAuthority
from .clock import utc_now
from .config import ServerConfig
from .desired import DesiredStates
from .errors import NotFoundError
from .leadership import Leadership, NotLeader
from .store import Database
from .store import devices as device_store
from .store import enrollments as enrollment_store

log = logging.getLogger(__name__)
_ca_lock = threading.RLock()  # the CA is not safe for concurrent revocations and CRL re-issues


class CrlRefresher:
    """Hands the broker a fresh CRL well before the old one expires (an expired CRL locks out every client)."""

    def __init__(self, revocation: Revocation, leadership: Leadership, *, interval_s: float = 3600.0):
        self._revocation = revocation
        self._leadership = leadership
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
                if self._leadership.is_leader:  # among replicas, the leader alone re-issues and reloads
                    with self._leadership.fenced():
                        self._revocation.publish_crl()  # the CA re-issues its CRL past half its validity
            except NotLeader as exc:
                log.info("the CRL is left to the leader: %s", exc)
            except Exception:  # noqa: BLE001 - keep trying: a lapsed CRL takes the whole fleet offline
                log.exception("refreshing the broker's CRL")
            if self._stop.wait(self._interval_s):
                return


class Revocation:
    """Revokes devices and keeps the broker's CRL current; built by the fleet.

    ``config``: its ``broker_tls_dir`` / ``broker_pid_file``, where the broker the server configured reads its
    CRL and its pid (None: no such broker; the CA's CRL is then the operator's to hand out).
    """

    def __init__(self, *, db: Database, ca: CertificateAuthority, desired: DesiredStates, config: ServerConfig):
        self._db = db
        self._ca = ca
        self._desired = desired
        self._config = config

    def revoke_device(self, device_id: str) -> dict:
        """Revoke ``device_id``; ``{"device_id", "serials", "broker_reloaded"}``."""
        if device_store.get_device(db=self._db, device_id=device_id) is None:
            raise NotFoundError(f"there is no device {device_id!r}")
        now = to_iso(utc_now())
        serials = enrollment_store.mark_revoked(db=self._db, device_id=device_id, now=now)
        with _ca_lock:
            for serial in serials:
                self._ca.revoke(serial, reason="cessation_of_operation")
        device_store.set_revoked(db=self._db, device_id=device_id, revoked=now)
        self._desired.recompute([device_id])
        reloaded = self.publish_crl()
        log.info("device %s revoked (%d certificate(s)); broker reloaded: %s", device_id, len(serials), reloaded)
        return {"device_id": device_id, "serials": [str(s) for s in serials], "broker_reloaded": reloaded}

    def publish_crl(self) -> bool:
        """Give the broker the CA's current CRL if it changed, and SIGHUP it; True when the broker was signalled."""
        if self._config.broker_tls_dir is None:
            return False
        files = BrokerConfigFiles.in_directory(self._config.broker_tls_dir)
        with _ca_lock:
            if files.crl.exists() and files.crl.read_bytes() == self._ca.crl_pem():
                return False
            write_crl(files, self._ca)
        pid_file = self._config.broker_pid_file
        if pid_file is None:
            log.warning("wrote a new CRL to %s but do not know the broker's pid (--broker-pid-file): reload the "
                        "broker yourself (kill -HUP) for it to take effect", self._config.broker_tls_dir)
            return False
        try:
            reload_broker(int(Path(pid_file).read_text().strip()))
        except (OSError, ValueError) as exc:
            log.error("could not signal the broker (pid file %s): %s; reload it yourself", pid_file, exc)
            return False
        return True
