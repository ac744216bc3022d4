"""A Mosquitto configuration for the fleet: mutual TLS, per-device ACL, CRL.

:func:`write_broker_config` writes everything Mosquitto needs into one
directory: ``mosquitto.conf``, the CA certificate, the broker's server key
and certificate, the CRL, the ACL file, and the fleet server's own client
identity. Devices authenticate with the client certificate the fleet CA
issued them; the certificate's CN becomes the MQTT username (``%u`` in the
ACL) and the client id, so a device can neither reach another device's topics
nor kick another device off by reusing its client id. The flip side: one
connection per certificate; a second one with the same certificate replaces
the first (the fleet server keeps a single connection). Several server
replicas on one broker (shared subscriptions) therefore each get their own
identity, ``edgefleet-server.<replica>`` (``--replica``), with the server's
rights in the ACL. Topic names come from
:mod:`fleet_protocol.topics`.

Observed with Mosquitto 2.0.11 and OpenSSL 3: SIGHUP (:func:`reload_broker`)
rereads the ACL file, the CRL and the server certificate. A revoked
certificate is refused at the next handshake, but a connection opened before
the revocation stays up and may still publish: to cut a revoked device off at
once, restart the broker (persistence keeps sessions and retained messages;
every client reconnects). A CRL past its ``nextUpdate`` makes OpenSSL refuse
*every* client ("certificate verify failed"): call :func:`write_crl` and
:func:`reload_broker` well within :data:`fleet_server.ca.CRL_VALID`.
Mosquitto logs a harmless warning that the bundle-chunk pattern has no ``%u``.
This module does not start or supervise the broker.
"""

from __future__ import annotations

import os
import pwd
import signal
from dataclasses import dataclass
from pathlib import Path

from fleet_protocol.messages import MAX_MESSAGE_BYTES
from fleet_protocol.topics import PREFIX, ROOT_TOPIC

from .ca import SERVER_IDENTITY, CertificateAuthority, replica_identity, write_atomic

DEVICE_WRITES = ("reported", "status", "telemetry", "fetch", "renew")
DEVICE_READS = ("desired", "certificate", "jobs")
PACKET_OVERHEAD_BYTES = 64 * 1024  # MQTT fixed header, topic and properties on top of the payload
MAX_QUEUED_MESSAGES = 1000


@dataclass(frozen=True)
class BrokerConfigFiles:
    """Where :func:`write_broker_config` put each file."""

    directory: Path
    config: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    crl: Path
    acl: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def in_directory(cls, out_dir: Path) -> "BrokerConfigFiles":
        out_dir = Path(out_dir)
        return cls(directory=out_dir, config=out_dir / "mosquitto.conf", ca_cert=out_dir / "ca.crt",
                   server_cert=out_dir / "server.crt", server_key=out_dir / "server.key", crl=out_dir / "crl.pem",
                   acl=out_dir / "acl", client_cert=out_dir / "server-client.crt",
                   client_key=out_dir / "server-client.key")

    def server_tls(self, replica: str | None = None) -> tuple[Path, Path, Path]:
        """``(CA certificate, client certificate, client key)`` for the fleet server's MQTT link: the server's
        identity, or with ``replica`` that replica's (:class:`ValueError` when it was not written)."""
        if replica is None:
            return self.ca_cert, self.client_cert, self.client_key
        cert, key = self.replica_files(replica)
        if not (cert.exists() and key.exists()):
            raise ValueError(f"{self.directory} holds no MQTT identity for server replica {replica!r}: each replica "
                             "on a shared broker needs its own (the broker makes a certificate's name its client id); "
                             f"write it with `edgefleet server broker-config --replica {replica}`")
        return self.ca_cert, cert, key

    def replica_files(self, replica: str) -> tuple[Path, Path]:
        return (self.directory / f"server-client.{replica}.crt", self.directory / f"server-client.{replica}.key")


def write_broker_config(out_dir: Path, ca: CertificateAuthority, *, port: int,
                        hostnames: list[str] | None = None, ips: list[str] | None = None,
                        bind: str = "127.0.0.1", run_as: str | None = None,
                        replicas: tuple[str, ...] = ()) -> BrokerConfigFiles:
    """Write a complete Mosquitto TLS configuration for ``ca``'s fleet into ``out_dir`` (mode 0700).

    Mosquitto started as root drops to ``run_as`` and must still read these
    files on SIGHUP: by default the broker runs as the user writing them
    (``user <that user>``); with ``run_as`` (needs root) the files go to that
    user instead. Each call issues a fresh broker certificate and server
    identity (one per name in ``replicas`` too); earlier ones stay valid until they expire.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o700)
    files = BrokerConfigFiles.in_directory(out_dir)
    server_key, server_cert = ca.issue_server_certificate(
        ["localhost"] if hostnames is None else hostnames, ["127.0.0.1"] if ips is None else ips)
    client_key, client_cert = ca.issue_client_identity(SERVER_IDENTITY)
    write_atomic(files.ca_cert, ca.certificate_pem(), mode=0o644)
    write_atomic(files.server_key, server_key, mode=0o600)
    write_atomic(files.server_cert, server_cert, mode=0o644)
    write_atomic(files.client_key, client_key, mode=0o600)
    write_atomic(files.client_cert, client_cert, mode=0o644)
    for replica in replicas:
        replica_key, replica_cert = ca.issue_client_identity(replica_identity(replica))
        cert_path, key_path = files.replica_files(replica)
        write_atomic(key_path, replica_key, mode=0o600)
        write_atomic(cert_path, replica_cert, mode=0o644)
    write_atomic(files.acl, acl_text(replicas).encode(), mode=0o644)
    write_crl(files, ca)
    user = run_as or pwd.getpwuid(os.geteuid()).pw_name
    write_atomic(files.config, mosquitto_conf(files, port=port, bind=bind, user=user).encode(), mode=0o644)
    if run_as is not None:  # the broker needs everything but the fleet server's own identity
        account = pwd.getpwnam(run_as)
        for path in (out_dir, files.config, files.ca_cert, files.server_cert, files.server_key, files.crl, files.acl):
            os.chown(path, account.pw_uid, account.pw_gid)
    return files


def write_crl(files: BrokerConfigFiles, ca: CertificateAuthority) -> None:
    """Replace the broker's CRL with the CA's current one; then :func:`reload_broker`."""
    write_atomic(files.crl, ca.crl_pem(), mode=0o644)


def acl_text(replicas: tuple[str, ...] = ()) -> str:
    """Pattern rules: a device (``%u`` = its certificate CN) reaches only its own topics and bundle chunks.

    Every device may read every bundle's chunk topic (one publish fans out to all its listeners); what keeps a
    bundle from devices it is not assigned to is that its chunks are encrypted with a key only they receive
    (:mod:`fleet_server.content_keys`).
    """
    lines = ["# Generated by fleet_server.broker_config; %u is the client certificate's CN.", ""]
    lines += [f"pattern write {PREFIX}/devices/%u/{kind}" for kind in DEVICE_WRITES]
    lines += [f"pattern read {PREFIX}/devices/%u/{kind}" for kind in DEVICE_READS]
    lines += [f"pattern read {PREFIX}/bundles/+/chunks", f"pattern read {ROOT_TOPIC}", ""]
    for user in (SERVER_IDENTITY, *map(replica_identity, replicas)):
        lines += [f"user {user}", f"topic readwrite {PREFIX}/#", ""]
    return "\n".join(lines)


def mosquitto_conf(files: BrokerConfigFiles, *, port: int, bind: str, user: str) -> str:
    return "\n".join([
        "# Generated by fleet_server.broker_config.",
        f"user {user}",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {files.acl}",
        "persistence true",
        f"persistence_location {files.directory}/",
        f"max_packet_size {MAX_MESSAGE_BYTES + PACKET_OVERHEAD_BYTES}",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        "connection_messages true",
        "log_dest stderr",
        "",
        f"listener {port} {bind}",
        "protocol mqtt",
        "tls_version tlsv1.2",
        f"cafile {files.ca_cert}",
        f"certfile {files.server_cert}",
        f"keyfile {files.server_key}",
        f"crlfile {files.crl}",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "",
    ])


def reload_broker(pid: int) -> None:
    """Ask Mosquitto to reread its configuration, ACL, CRL and server certificate (SIGHUP)."""
    os.kill(pid, signal.SIGHUP)
