"""A real three-node NATS server cluster with its MQTT listener, started and stopped by tests.

Each node is its own ``nats-server`` process (Debian's package, ``make system-deps``) on free loopback
ports: a client port, a cluster-route port and an MQTT port. JetStream runs on every node, because
NATS keeps MQTT sessions, retained messages and QoS 1 messages in JetStream streams; with
``stream_replicas 3`` each of those streams lives on all three nodes, so retained desired state and
persistent sessions survive the loss of any one node. A node is stopped by its pid (``kill -9``
for the fault tests) and can be started again on the same ports and store directory.

What it does not do: TLS or authentication (the broker tests against Mosquitto cover those), or
wait for JetStream's meta leader beyond the first MQTT connection that works (see
:meth:`NatsCluster.wait_ready`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from .processes import stop_process
from .net import free_port, wait_port

CLUSTER_NAME = "edgefleet"


@dataclass
class NatsNode:
    name: str
    client_port: int
    route_port: int
    mqtt_port: int
    config: Path
    log: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def start(self) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.process = subprocess.Popen([binary, "-c", str(self.config)], stdout=self.log.open("ab"),
                                        stderr=subprocess.STDOUT)
        wait_port(self.client_port, timeout=20)
        wait_port(self.mqtt_port, timeout=20)

    def kill(self) -> None:
        """``kill -9`` this node: no goodbye to its clients or its peers."""
        if self.pid is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        self.process = None


@dataclass
class NatsCluster:
    nodes: list[NatsNode] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until a persistent MQTT session can be made on every node (JetStream has its meta leader and the
        MQTT streams exist), so the first agent does not race the cluster's formation."""
        for node in self.nodes:
            _wait_mqtt_session(node, timeout_s)


def _wait_mqtt_session(node: NatsNode, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ready-{uuid.uuid4().hex[:8]}",
                             clean_session=False, protocol=mqtt.MQTTv311)
        try:
            client.connect("127.0.0.1", node.mqtt_port, keepalive=10)
            client.loop_start()
            info = client.subscribe("edgefleet/ready", 1)
            deadline_sub = time.monotonic() + 5
            while not client.is_connected() and time.monotonic() < deadline_sub:
                time.sleep(0.05)
            if client.is_connected() and info[0] == mqtt.MQTT_ERR_SUCCESS:
                client.disconnect()
                client.loop_stop()
                return
            last = "not connected"
        except OSError as exc:
            last = str(exc)
        client.loop_stop()
        time.sleep(0.5)
    raise AssertionError(f"NATS node {node.name} accepted no MQTT session within {timeout_s}s ({last}); "
                         f"see {node.log}")


def start_nats_cluster(workdir: Path, *, size: int = 3, max_payload_bytes: int = 8 * 1024**2) -> NatsCluster:
    """Start ``size`` NATS nodes that route to each other, each with JetStream and MQTT (replicas = size)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
    routes = ", ".join(f"nats-route://127.0.0.1:{route}" for _, route, _ in ports)
    cluster = NatsCluster()
    for index, (client_port, route_port, mqtt_port) in enumerate(ports):
        name = f"n{index + 1}"
        store = workdir / name
        store.mkdir(exist_ok=True)
        config = workdir / f"{name}.conf"
        config.write_text(
            f"server_name: {name}\n"
            f"listen: 127.0.0.1:{client_port}\n"
            f"max_payload: {max_payload_bytes}\n"
            f"jetstream {{ store_dir: \"{store}\" }}\n"
            f"cluster {{ name: {CLUSTER_NAME}, listen: 127.0.0.1:{route_port}, routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{mqtt_port}, stream_replicas: {size} }}\n"
        )
        cluster.nodes.append(NatsNode(name, client_port, route_port, mqtt_port, config, workdir / f"{name}.log"))
    try:
        for node in cluster.nodes:
            node.start()
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster
