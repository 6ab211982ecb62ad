"""The Triton HTTP client's connection handling, against a small KServe-v2 responder on the
loopback: requests of one thread share one kept-alive connection, each thread has its own, and
a connection the server dropped while idle costs no request (the real server is in
test_serving.py)."""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from hgdeploy.serving.client import HEADER_LENGTH, InferError, TritonHttp


class _Responder(BaseHTTPRequestHandler):
    """Answers every infer with y = sum(x) as FP32; counts the connections it accepted."""

    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise
    connections = 0
    answered = 0
    drop_after_each = False  # close the connection after answering, without saying so
    lock = threading.Lock()

    def setup(self) -> None:
        super().setup()
        with _Responder.lock:
            _Responder.connections += 1

    def do_POST(self) -> None:  # http.server calls it by this name
        length = int(self.headers["Content-Length"])
        header_length = int(self.headers[HEADER_LENGTH])
        body = self.rfile.read(length)
        header = json.loads(body[:header_length])
        if header["inputs"][0]["name"] != "x":
            reply, status = json.dumps({"error": "unknown input"}).encode(), 400
            self._send(status, reply, {})
            return
        total = np.frombuffer(body[header_length:], dtype=np.float32).sum()
        out = json.dumps({"outputs": [{"name": "y", "shape": [1], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 4}}]}).encode()  # fmt: skip
        with _Responder.lock:  # counted before the client can see the answer
            _Responder.answered += 1
        self._send(200, out + struct.pack("<f", total), {HEADER_LENGTH: str(len(out))})
        if _Responder.drop_after_each:
            self.close_connection = True

    def _send(self, status: int, body: bytes, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def responder() -> Iterator[str]:
    _Responder.connections = _Responder.answered = 0
    _Responder.drop_after_each = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Responder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _x(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 3), value, dtype=np.float32)}


def test_one_thread_sends_every_request_over_one_connection(responder: str) -> None:
    client = TritonHttp(responder, timeout=10)
    for value in (1.0, 2.0, 3.0):
        assert client.infer("m", _x(value), ["y"])["y"][0] == pytest.approx(3 * value)
    client.close()
    assert (_Responder.connections, _Responder.answered) == (1, 3)


def test_each_thread_has_its_own_connection(responder: str) -> None:
    client = TritonHttp(responder, timeout=10)
    results: list[float] = []

    def work() -> None:
        for _ in range(3):
            results.append(float(client.infer("m", _x(1.0), ["y"])["y"][0]))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [3.0] * 9
    assert (_Responder.connections, _Responder.answered) == (3, 9)


def test_a_connection_dropped_while_idle_costs_no_request(responder: str) -> None:
    _Responder.drop_after_each = True
    client = TritonHttp(responder, timeout=10)
    for value in (1.0, 2.0, 3.0):
        assert client.infer("m", _x(value), ["y"])["y"][0] == pytest.approx(3 * value)
    # each answer was followed by a silent close: every request after the first found its
    # connection gone, opened a new one and was answered once
    assert (_Responder.connections, _Responder.answered) == (3, 3)


def test_an_error_answer_is_an_infer_error_and_the_connection_stays(responder: str) -> None:
    client = TritonHttp(responder, timeout=10)
    with pytest.raises(InferError, match="^m: HTTP 400: unknown input$"):
        client.infer("m", {"z": np.zeros(1, np.float32)}, ["y"])
    assert client.infer("m", _x(2.0), ["y"])["y"][0] == pytest.approx(6.0)
    assert _Responder.connections == 1
