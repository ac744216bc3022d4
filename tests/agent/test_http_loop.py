"""The event-loop HTTP/1.1 server under the scoring API: framing, keep-alive, pipelining and slow clients.

A real :class:`~edge_agent.http_loop.HttpLoopServer` on a free port with a
small echo handler, driven over raw sockets; the routes and the model are
tested in test_scoring_api.py and tests/faults/test_scoring_hostile.py.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from edge_agent.http_head import HeadParser, Request
from edge_agent.http_loop import HttpLoopServer, Response

TIMEOUT_S = 1.0


def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("a handler bug")
    body = {"method": request.method, "path": request.path, "body": request.body.decode()}
    return Response(200, json.dumps(body).encode())


@pytest.fixture
def server():
    server = HttpLoopServer(("127.0.0.1", 0), echo, max_body_bytes=1024, timeout_s=TIMEOUT_S, server_name="test")
    server.start()
    yield server
    server.stop()


def connect(server: HttpLoopServer) -> socket.socket:
    return socket.create_connection(server.address, timeout=10)


def read_responses(sock: socket.socket, count: int) -> list[tuple[bytes, dict, bytes]]:
    """``count`` responses off ``sock``: status line, headers (lower-case names), body."""
    data, out = b"", []
    while len(out) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            status, *lines = data[:head_end].split(b"\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.decode().partition(":") for line in lines)}
            length = int(headers["content-length"])
            if len(data) >= head_end + 4 + length:
                out.append((status, headers, data[head_end + 4:head_end + 4 + length]))
                data = data[head_end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} responses")
        data += chunk
    return out


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body)


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_pipelined_requests_are_answered_in_order_on_one_connection(server):
    with connect(server) as sock:
        sock.sendall(post("/a", b"1") + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n" + post("/c", b"333"))
        answers = [json.loads(body) for _, _, body in read_responses(sock, 3)]
    assert [(a["method"], a["path"], a["body"]) for a in answers] == [("POST", "/a", "1"), ("GET", "/b", ""),
                                                                      ("POST", "/c", "333")]


def test_a_request_split_into_single_bytes_is_served_like_a_whole_one(server):
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in post("/split", b'{"x": 1}'):
            sock.send(bytes([byte]))
        (status, _, body), = read_responses(sock, 1)
    assert status == b"HTTP/1.1 200 OK" and json.loads(body)["body"] == '{"x": 1}'


def test_a_head_trickled_slower_than_the_timeout_allows_is_closed_though_bytes_keep_coming(server):
    head = b"GET /slow HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 20 + b"\r\n"
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        closed = False
        for byte in head[:-2]:  # never finished: a byte every tenth of the timeout, for up to 25 timeouts
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(TIMEOUT_S / 10)
            sock.settimeout(0.001)
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except (TimeoutError, BlockingIOError):
                pass
            except ConnectionResetError:
                closed = True
                break
    assert closed, "a client kept a request head open by sending a byte at a time"


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(server):
    with connect(server) as sock:
        sock.sendall(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        read_responses(sock, 1)
        assert closed_by_server(sock)


def test_expect_100_continue_gets_an_interim_answer_before_the_body_is_sent(server):
    with connect(server) as sock:
        sock.sendall(b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ok")
        (status, _, body), = read_responses(sock, 1)
    assert status == b"HTTP/1.1 200 OK" and json.loads(body)["body"] == "ok"


def test_http_1_0_closes_after_the_answer_unless_it_asks_for_keep_alive(server):
    with connect(server) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        (_, headers, _), = read_responses(sock, 1)
        assert headers["connection"] == "close" and closed_by_server(sock)
    with connect(server) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
        assert [h.get("connection") for _, h, _ in read_responses(sock, 2)] == [None, None]


@pytest.mark.parametrize(("head", "status"), [
    (b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"411"),
    (b"POST /c HTTP/1.1\r\nContent-Length: 1025\r\n\r\n", b"413"),
    (b"POST /c HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"411"),
    (b"GET /" + b"a" * 65_536 + b" HTTP/1.1\r\n\r\n", b"414"),
    (b"GET / HTTP/2.0\r\n\r\n", b"505"),
    (b"BREW / HTTP/1.1\r\n\r\n", b"501"),
    (b"GET /\r\n\r\n", b"400"),
])
def test_a_request_that_cannot_be_framed_is_refused_with_json_and_the_connection_closed(server, head, status):
    with connect(server) as sock:
        sock.sendall(head)
        (line, headers, body), = read_responses(sock, 1)
        assert line.split()[1] == status and headers["connection"] == "close" and "error" in json.loads(body)
        assert closed_by_server(sock)


def test_a_body_cut_short_by_the_client_closing_gets_400(server):
    with connect(server) as sock:
        sock.sendall(b"POST /short HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        sock.shutdown(socket.SHUT_WR)
        (line, _, body), = read_responses(sock, 1)
    assert line.startswith(b"HTTP/1.1 400 ") and json.loads(body)["error"] == "request body ended early"


def test_a_handler_that_raises_answers_500_and_the_connection_keeps_serving(server):
    with connect(server) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n")
        (first, _, body), (second, _, _) = read_responses(sock, 2)
    assert first.startswith(b"HTTP/1.1 500 ") and json.loads(body) == {"error": "internal error: RuntimeError"}
    assert second == b"HTTP/1.1 200 OK"


def test_a_head_parsed_from_a_growing_buffer_resumes_where_it_stopped_and_survives_dropped_prefixes():
    parser, whole = HeadParser(1024), post("/p", b"xy", b"X-A: 1\r\n")
    buffer = bytearray(b"done-request")  # bytes of an earlier request, dropped by the server mid-head
    start, result = len(buffer), None
    for i, byte in enumerate(whole):
        buffer.append(byte)
        result = parser.parse(buffer, start)
        if i == 20:
            del buffer[:start]
            start = 0
        if result is not None:
            break
    assert result is not None
    request, body_at = result
    assert (request.method, request.path, request.length, request.headers.get("x-a")) == ("POST", "/p", 2, "1")
    assert bytes(buffer[body_at:]) == b"" and body_at == len(buffer)
