"""Running the server: blocking (``edgefleet server run``) or in a background thread (tests, demo).

Both build a :class:`~fleet_server.fleet.Fleet`, start its MQTT side and
serve the app with uvicorn. At the first start of a data dir the admin
token is printed once (it is stored only as a hash) with where the signing
key is; neither is ever logged.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import httpx
import uvicorn

from .api.app import create_app
from .config import ServerConfig
from .fleet import Fleet


def run_server(config: ServerConfig) -> None:
    """Serve until Ctrl-C (or SIGTERM), then stop the link, the broker and the database cleanly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fleet = Fleet(config)
    grpc_server = None
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default action that would end the
    # process before the finally below (no lease handed back, no clean broker and database close)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        fleet.start_mqtt()
        app = create_app(config, fleet=fleet)
        grpc_server = _start_grpc(fleet, app.version)
        print(_banner(fleet, f"http://{config.host}:{config.port}", grpc_server), flush=True)
        server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="info",
                                               lifespan="on"))
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if grpc_server is not None:
            grpc_server.stop()
        fleet.close()
        print("edgefleet server stopped", flush=True)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


class ServerThread:
    """The whole server in background threads; ``start()`` returns once the API answers and MQTT is connected."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.url = f"http://{_client_host(config.host)}:{config.port}"
        self.broker_url: str | None = None
        self.admin_token: str | None = None
        self.signing_public_key_hex: str | None = None
        self.fleet: Fleet | None = None
        self.grpc = None  # edgefleet_runtime.grpc_api.GrpcServer when config.grpc_port is set (.address: host:port)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 30.0) -> "ServerThread":
        deadline = time.monotonic() + timeout_s
        self.fleet = fleet = Fleet(self.config)
        try:
            self.admin_token = fleet.created_admin_token
            self.signing_public_key_hex = fleet.signing_key.public_key.to_hex()
            fleet.start_mqtt()
            self.broker_url = fleet.public_broker_url
            app = create_app(self.config, fleet=fleet)
            self.grpc = _start_grpc(fleet, app.version)
            self._server = uvicorn.Server(uvicorn.Config(app, host=self.config.host, port=self.config.port,
                                                         log_level="warning", lifespan="on"))
            self._thread = threading.Thread(target=self._server.run, name="edgefleet-api", daemon=True)
            self._thread.start()
            self._wait_api(deadline)
            if not fleet.link.wait_connected(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"the server could not connect to the MQTT broker at {fleet.broker_url}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self.grpc is not None:
            self.grpc.stop()
        if self.fleet is not None:
            self.fleet.close()
        self._server = self._thread = self.fleet = self.grpc = None

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_api(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError(f"the API server stopped at start (is port {self.config.port} free?)")
            if self._server.started:
                if self.config.port == 0:
                    port = self._server.servers[0].sockets[0].getsockname()[1]
                    self.url = f"http://{_client_host(self.config.host)}:{port}"
                try:
                    if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"the API did not answer at {self.url} in time")


def _start_grpc(fleet: Fleet, version: str):
    if fleet.config.grpc_port is None:
        return None
    from . import grpc_scoring

    return grpc_scoring.start(fleet, host=fleet.config.host, port=fleet.config.grpc_port, version=version)


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _banner(fleet: Fleet, url: str, grpc_server=None) -> str:
    lines = [f"edgefleet server: API {url} (OpenAPI {url}/docs), MQTT {fleet.broker_url}"
             + (" (embedded broker)" if fleet.broker else "")
             + (f", gRPC scoring {grpc_server.address}" if grpc_server is not None else ""),
             f"  agents connect to {fleet.public_broker_url}; data in {fleet.config.data_dir}"
             + (f", tables in {fleet.db.display_url}" if fleet.config.database_url else "")]
    if fleet.created_admin_token is not None:
        lines += ["  First start of this data dir. Admin API token (shown once, stored only as a hash):",
                  f"    {fleet.created_admin_token}",
                  "  Use it as EDGEFLEET_TOKEN or --token."]
    lines.append(f"  signing key: {fleet.keys.where}; public key "
                 f"{fleet.signing_key.public_key.to_hex()}")
    lines.append(f"  install a device: curl -fsSL {fleet.config.public_url or url}/install.sh | sudo sh -s -- "
                 "--token TOKEN  (TOKEN: `edgefleet device enroll --name DEVICE_ID`)")
    return "\n".join(lines)
