"""A real HTTPS/1.1 server for the cloud client's tests and the pool benchmark: keep-alive, counting connections.

:class:`CountingHttpsServer` issues a server certificate for 127.0.0.1
from a fresh fleet CA (:mod:`fleet_server.ca`), serves HTTP/1.1 with
keep-alive in a thread on a free port, counts the TLS connections it
accepted and the requests it read, and answers each request from a script
(:meth:`answer_next`) or with a small OIP response. It can behave like a
server that drops keep-alive connections: ``close_after_each`` closes the
socket after every answer without saying so (an idle timeout), and
``drop_reused`` closes a connection, unanswered, when a second request
arrives on it (the close racing the client's send). It is not a fleet
server: paths and bodies are not looked at.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fleet_server.ca import CertificateAuthority

OIP_ANSWER = json.dumps({"model_name": "m", "model_version": "1", "outputs": [
    {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}]}).encode()


class CountingHttpsServer:
    def __init__(self, directory: Path, *, close_after_each: bool = False, drop_reused: bool = False):
        directory.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.load_or_create(directory / "ca")
        key_pem, cert_pem = ca.issue_server_certificate(["localhost"], ["127.0.0.1"])
        (directory / "server.key").write_bytes(key_pem)
        (directory / "server.crt").write_bytes(cert_pem)
        self.ca_file = directory / "ca.crt"
        self.ca_file.write_bytes(ca.certificate_pem())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "server.crt", directory / "server.key")
        self.close_after_each = close_after_each
        self.drop_reused = drop_reused
        self.connections = 0
        self.requests: list[tuple[str, str]] = []  # (method, path) of each request read
        self._script: deque[tuple[int, dict[str, str], bytes]] = deque()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.port = self._httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="https-test-server", daemon=True)

    def __enter__(self) -> "CountingHttpsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def answer_next(self, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> None:
        """The next request gets this answer (scripted answers go in order; then the default OIP answer)."""
        with self._lock:
            self._script.append((status, headers or {}, body))

    def _accepted(self) -> None:
        with self._lock:
            self.connections += 1

    def _next(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append((method, path))
            return self._script.popleft() if self._script else (200, {}, OIP_ANSWER)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hangs up mid-handshake is expected here


def _handler(server: CountingHttpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # the head and the body go in two writes: no 40 ms delayed-ACK stall

        def setup(self) -> None:
            super().setup()
            server._accepted()
            self.answered = 0

        def log_message(self, format, *args) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if server.drop_reused and self.answered:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status, headers, body = server._next(self.command, self.path)
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.answered += 1
            if server.close_after_each:
                self.close_connection = True

        do_GET = do_POST = _serve

    return Handler
