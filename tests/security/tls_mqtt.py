"""A TLS Mosquitto run with exactly the generated fleet config, and paho probes that record traffic.

Probes speak MQTT 3.1.1 with a client certificate and wait on events (CONNACK,
SUBACK, PUBACK, a message arriving), never on the clock; the timeouts only turn
a hang into a failure.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from edge_agent.identity import new_device_key_and_csr
from fleet_server.broker_config import BrokerConfigFiles, reload_broker, write_broker_config, write_crl
from fleet_server.ca import CertificateAuthority
from tests.support.mosquitto import Mosquitto
from tests.support.net import free_port, wait_for

EVENT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Identity:
    name: str
    cert: Path
    key: Path


@dataclass
class TlsBroker:
    """Mosquitto started with the files :func:`write_broker_config` wrote, nothing else."""

    ca: CertificateAuthority
    files: BrokerConfigFiles
    process: Mosquitto
    workdir: Path

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def server_identity(self) -> Identity:
        return Identity("edgefleet-server", self.files.client_cert, self.files.client_key)

    def device(self, prefix: str = "dev", *, ca: CertificateAuthority | None = None, **sign) -> Identity:
        """A fresh device identity (unique CN) with a certificate from ``ca`` (the fleet CA by default)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        key_pem, csr_pem = new_device_key_and_csr(name)
        cert_pem = (ca or self.ca).sign_csr(csr_pem, device_id=name, **sign)
        cert, key = self.workdir / f"{name}.crt", self.workdir / f"{name}.key"
        cert.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        return Identity(name, cert, key)

    def reloads(self) -> int:
        return self.process.log.read_text(errors="replace").count("Reloading config.")

    def publish_crl_and_reload(self, crl_pem: bytes | None = None) -> None:
        """Give the broker ``crl_pem`` (the CA's current CRL by default), SIGHUP it, wait until it has reloaded."""
        before = self.reloads()
        if crl_pem is None:
            write_crl(self.files, self.ca)
        else:
            self.files.crl.write_bytes(crl_pem)
        reload_broker(self.process.process.pid)
        wait_for(lambda: self.reloads() > before, what="Mosquitto to reload its configuration")

    def probe(self, identity: Identity | None, **kwargs) -> "Probe":
        return Probe(self, identity, **kwargs)


def start_tls_broker(workdir: Path, *, replicas: tuple[str, ...] = ()) -> TlsBroker:
    workdir.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.load_or_create(workdir / "ca")
    port = free_port()
    files = write_broker_config(workdir / "broker", ca, port=port, replicas=replicas)
    process = Mosquitto("127.0.0.1", port, None, files.config, workdir / "mosquitto.log")
    process.start()
    return TlsBroker(ca, files, process, workdir)


class Probe:
    """One paho client: connect, subscribe, publish with acks awaited; records every message received."""

    def __init__(self, broker: TlsBroker, identity: Identity | None, *, client_id: str = ""):
        self.broker = broker
        self.messages: list[tuple[str, bytes]] = []
        self.disconnects = 0
        self._cond = threading.Condition()
        self._outcome: str | None = None
        self._subacks: set[int] = set()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=True)
        certfile, keyfile = (str(identity.cert), str(identity.key)) if identity else (None, None)
        self.client.tls_set(str(broker.files.ca_cert), certfile, keyfile)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        with self._cond:
            self._outcome = self._outcome or ("connected" if not reason.is_failure else f"refused: {reason}")
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        with self._cond:
            self.disconnects += 1
            self._outcome = self._outcome or f"disconnected: {reason}"
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        with self._cond:
            self._subacks.add(mid)
            self._cond.notify_all()

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.messages.append((message.topic, message.payload))
            self._cond.notify_all()

    def _wait(self, predicate, what: str):
        with self._cond:
            if not self._cond.wait_for(predicate, timeout=EVENT_TIMEOUT_S):
                raise AssertionError(f"timed out waiting for {what}")

    def connect(self) -> str:
        """``"connected"``, or why the broker refused (TLS failure, CONNACK error, disconnect)."""
        try:
            self.client.connect("127.0.0.1", self.broker.port, keepalive=30)
        except OSError as exc:  # ssl.SSLError and resets during the handshake
            return f"handshake failed: {exc}"
        self.client.loop_start()
        self._wait(lambda: self._outcome is not None, "CONNACK or disconnect")
        return self._outcome

    def subscribe(self, *topics: str) -> None:
        for topic in topics:
            result, mid = self.client.subscribe(topic, qos=1)
            assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe {topic}: {mqtt.error_string(result)}"
            self._wait(lambda: mid in self._subacks, f"SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=EVENT_TIMEOUT_S)
        assert info.is_published(), f"no PUBACK for {topic}"

    def wait_for_message(self, topic: str) -> list[tuple[str, bytes]]:
        """Block until a message on ``topic`` arrives; return everything received up to and including it."""
        self._wait(lambda: any(t == topic for t, _ in self.messages), f"a message on {topic}")
        with self._cond:
            index = next(i for i, (t, _) in enumerate(self.messages) if t == topic)
            return list(self.messages[:index + 1])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
