"""The lean S3 path's HTTP/1.1 client (syncd/stores/http1.py) against a real socket server on
127.0.0.1 that answers each request with the bytes a test gives: the answer shapes S3-compatible
servers send, kept connections the server drops, timeouts and TLS."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import socket
import ssl
import threading
import time
from collections import deque
from pathlib import Path

import pytest

from syncd.stores.http1 import HTTPConnections, ProtocolError
from tests.servers import free_port

CLOSE = object()  # close the connection instead of answering
HANG = object()  # never answer


class ScriptedServer:
    """Reads each request (headers and Content-Length body) and sends the next scripted answer:
    bytes, bytes then close (a tuple ``(bytes, "close")``), ``CLOSE`` or ``HANG``."""

    def __init__(self, answers: list, tls: ssl.SSLContext | None = None):
        self.answers = deque(answers)
        self.requests: list[tuple[bytes, dict[str, str], bytes]] = []
        self.connections = 0
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._socks.append(sock)
            self._threads.append(threading.Thread(target=self._serve, args=(sock,), daemon=True))
            self._threads[-1].start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True)
            file = sock.makefile("rb")
            while True:
                line = file.readline()
                if not line:
                    return
                headers = {}
                while (header := file.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = file.read(int(headers.get("content-length", 0)))
                self.requests.append((line, headers, body))
                answer = self.answers.popleft()
                if answer is CLOSE:
                    return
                if answer is HANG:
                    self._stop.wait(30)
                    return
                data, after = answer if isinstance(answer, tuple) else (answer, "")
                sock.sendall(data)
                if after == "close":
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            sock.close()

    def close(self) -> None:
        """Stop, and end every connection's thread (a thread left running keeps later tests of
        this process from forking converter workers)."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # (wakes the accept; closing alone does not)
        self._listener.close()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)


@pytest.fixture
def serve():
    servers = []

    def start(answers: list, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        servers.append(ScriptedServer(answers, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ok(body: bytes = b"", extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nETag: \"e1\"\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body


def put(pool: HTTPConnections, body: bytes = b'{"id": 1}', path: str = "/bucket/1.json"):
    return pool.request("PUT", path, {"host": "127.0.0.1", "content-type": "application/json"}, body)


def test_requests_share_one_kept_connection_and_send_the_body_whole(serve):
    big = bytes(range(256)) * 1000  # 256 KB: sent apart from the headers
    server = serve([ok(), ok()])
    pool = HTTPConnections(f"http://127.0.0.1:{server.port}", 4)
    first = put(pool)
    second = put(pool, big, "/bucket/a%20b.json")
    assert (first.status, first.headers["etag"], first.data) == (200, '"e1"', b"")
    assert second.status == 200
    assert server.connections == 1
    (line1, headers1, body1), (line2, _, body2) = server.requests
    assert line1 == b"PUT /bucket/1.json HTTP/1.1\r\n" and line2 == b"PUT /bucket/a%20b.json HTTP/1.1\r\n"
    assert body1 == b'{"id": 1}' and hashlib.sha256(body2).digest() == hashlib.sha256(big).digest()
    assert headers1["host"] == "127.0.0.1" and headers1["content-type"] == "application/json"
    assert headers1["user-agent"].startswith("syncd/")


def test_answer_bodies_by_length_chunked_and_until_close(serve):
    error = b"<Error><Code>SlowDown</Code></Error>"
    chunked = (b"HTTP/1.1 503 Slow Down\r\nTransfer-Encoding: chunked\r\nRetry-After: 2\r\n\r\n"
               b"10;ext=1\r\n" + error[:16] + b"\r\n" + f"{len(error) - 16:x}".encode() + b"\r\n" + error[16:]
               + b"\r\n0\r\nX-Trailer: t\r\n\r\n")
    http10 = b"HTTP/1.0 500 Internal Server Error\r\nContent-Type: application/xml\r\n\r\n" + error
    server = serve([ok(error), chunked, (http10, "close"), ok()])
    pool = HTTPConnections(f"http://127.0.0.1:{server.port}", 4)
    assert put(pool).data == error
    answer = put(pool)
    assert (answer.status, answer.data, answer.headers["retry-after"]) == (503, error, "2")
    answer = put(pool)
    assert (answer.status, answer.data) == (500, error)
    assert server.connections == 1
    assert put(pool).status == 200  # an HTTP/1.0 answer ends its connection: a new one
    assert server.connections == 2


def test_connection_close_and_interim_answers(serve):
    server = serve([(ok(extra="Connection: close\r\n"), "close"),
                    b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done")])
    pool = HTTPConnections(f"http://127.0.0.1:{server.port}", 4)
    assert put(pool).status == 200
    answer = put(pool)
    assert (answer.status, answer.data) == (200, b"done")
    assert server.connections == 2


def test_a_kept_connection_the_server_dropped_is_not_used_again(serve):
    server = serve([(ok(), "close"), ok()])  # closed after answering, without saying so
    pool = HTTPConnections(f"http://127.0.0.1:{server.port}", 4)
    assert put(pool).status == 200
    time.sleep(0.2)  # the server's FIN arrives
    assert put(pool).status == 200
    assert server.connections == 2 and len(server.requests) == 2


def test_a_request_a_kept_connection_drops_unanswered_is_sent_once_more_on_a_new_one(serve):
    # The server takes the request and closes the kept connection (it timed it out just as
    # the request came): PUT is idempotent, so it goes again on a fresh connection.
    server = serve([ok(), CLOSE, ok()])
    pool = HTTPConnections(f"http://127.0.0.1:{server.port}", 4)
    assert put(pool).status == 200
    assert put(pool, b"again").status == 200
    assert [body for _, _, body in server.requests] == [b'{"id": 1}', b"again", b"again"]
    assert server.connections == 2


def test_a_new_connection_that_drops_is_an_error_not_a_loop(serve):
    server = serve([CLOSE])
    pool = HTTPConnections(f"http://127.0.0.1:{server.port}", 4)
    with pytest.raises(ConnectionError):
        put(pool)
    assert len(server.requests) == 1


@pytest.mark.parametrize("answer", [b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 abc OK\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
                                    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
                         ids=["not-http", "bad-status", "cut-off-body", "bad-header", "bad-chunk"])
def test_answers_that_are_not_http_are_protocol_errors(serve, answer):
    server = serve([(answer, "close")])
    pool = HTTPConnections(f"http://127.0.0.1:{server.port}", 4)
    with pytest.raises(ProtocolError):
        put(pool)


def test_a_server_that_never_answers_times_out(serve):
    server = serve([HANG])
    pool = HTTPConnections(f"http://127.0.0.1:{server.port}", 4, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        put(pool)
    assert time.monotonic() - started < 10


def test_nothing_listening_is_a_connection_error():
    with pytest.raises(ConnectionRefusedError):
        put(HTTPConnections(f"http://127.0.0.1:{free_port()}", 4))


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_tls_checks_the_certificate_and_the_host_name(serve, tmp_path):
    cert_file, key_file = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = serve([ok(b"over tls"), ok(), ok()], tls=context)
    trusted = HTTPConnections(f"https://localhost:{server.port}", 4, ca_certs=str(cert_file))
    answer = put(trusted)
    assert (answer.status, answer.data) == (200, b"over tls")
    assert put(trusted).status == 200 and server.connections == 1  # kept, over TLS too
    with pytest.raises(ssl.SSLCertVerificationError):  # not in the system's CA bundle
        put(HTTPConnections(f"https://localhost:{server.port}", 4))
