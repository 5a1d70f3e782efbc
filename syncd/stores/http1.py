"""Keep-alive HTTP/1.1 connections to one origin, for the lean S3 upload (``s3_signed_put``).

Requests there are all alike: a small body already in memory, a handful of headers, an answer
that is a status line, a few headers and (on errors) a short XML body. urllib3 over http.client
spends several times the CPU of the whole rest of syncd's work per object on that (header
objects, URL parsing, the email package's header parser); this module sends the request with
one ``sendall`` and reads the answer with the socket file's C ``readline``.

What it takes care of: TLS with certificate and host name checks (the CA bundle given, else
the system's), connect and read timeouts, bodies by ``Content-Length``, chunked or until the
server closes, ``Connection: close`` and HTTP/1.0 answers, and a kept connection the server
closed meanwhile (checked before reuse, and a request that finds it dead before any answer
byte is sent once more on a new connection; PUT is idempotent). Anything else it does not
understand is a ``ProtocolError`` (a ``ConnectionError``): the store retries it like any
network error.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from syncd import __version__

USER_AGENT = f"syncd/{__version__}"
MAX_LINE = 65536
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_HEADERS = 100


class ProtocolError(ConnectionError):
    """An answer that is not HTTP/1.x as expected."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    data: bytes


class _Connection:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.file = sock.makefile("rb", buffering=MAX_LINE)
        self.used = False  # a request was answered on it before
        self.answering = False  # the current request's answer has begun

    def alive(self) -> bool:
        """Still open, with nothing unread: a server that closed a kept connection makes it
        readable (EOF), which a poll sees without blocking."""
        poll = select.poll()
        poll.register(self.sock, select.POLLIN)
        return not poll.poll(0)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class HTTPConnections:
    """Up to ``size`` kept connections to the origin of ``base_url`` (any number of threads)."""

    def __init__(self, base_url: str, size: int, *, connect_timeout: float = 10, read_timeout: float = 60,
                 ca_certs: str | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.size = size
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._tls = ssl.create_default_context(cafile=ca_certs)
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        """Send one request (``headers`` with Host; Content-Length and User-Agent are added)
        and read its whole answer."""
        head = [f"{method} {target} HTTP/1.1\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers.items()]
        head.append(f"user-agent: {USER_AGENT}\r\ncontent-length: {len(body)}\r\n\r\n")
        message = "".join(head).encode("latin-1")
        message = message + body if len(body) <= MAX_LINE else message
        rest = body if len(body) > MAX_LINE else b""
        while True:
            connection = self._take()
            connection.answering = False
            try:
                connection.sock.sendall(message)
                if rest:
                    connection.sock.sendall(rest)
                response, keep = self._read(connection, method)
            except BaseException as exc:
                connection.close()
                # A kept connection the server closed just now (a reset, an EOF, TLS's too):
                # nothing was answered, so the request is sent again on a new one (once: a new
                # connection is not retried).
                if (isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and connection.used
                        and not connection.answering):
                    continue
                raise
            if keep:
                connection.used = True
                self._give_back(connection)
            else:
                connection.close()
            return response

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # -- connections -------------------------------------------------------------------------

    def _take(self) -> _Connection:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect()
            if connection.alive():
                return connection
            connection.close()

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> _Connection:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.read_timeout)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    # -- answers -----------------------------------------------------------------------------

    def _read(self, connection: _Connection, method: str) -> tuple[Response, bool]:
        """The answer, and whether the connection can be used again."""
        file = connection.file
        while True:
            line = file.readline(MAX_LINE + 1)
            if not line:
                raise ProtocolError("the server closed the connection without answering")
            connection.answering = True
            version, status = _status_line(line)
            headers = _headers(file)
            if not 100 <= status < 200:
                break  # (1xx: an interim answer, then the real one)
        keep = version == "HTTP/1.1"
        tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        if "close" in tokens:
            keep = False
        elif "keep-alive" in tokens:
            keep = True
        if method == "HEAD" or status in (204, 304):
            return Response(status, headers, b""), keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return Response(status, headers, _chunked(file)), keep
        length = headers.get("content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {length[:40]!r}") from None
            data = file.read(size)
            if len(data) != size:
                raise ProtocolError("the server closed the connection in the middle of an answer")
            return Response(status, headers, data), keep
        return Response(status, headers, file.read()), False  # (the body ends where the connection does)


def _status_line(line: bytes) -> tuple[str, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(line) > MAX_LINE:
        raise ProtocolError(f"not an HTTP/1.x answer: {line[:40]!r}")
    try:
        return parts[0].decode("ascii"), int(parts[1])
    except ValueError:
        raise ProtocolError(f"not an HTTP/1.x answer: {line[:40]!r}") from None


def _headers(file) -> dict[str, str]:  # noqa: ANN001 - a BufferedReader
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = file.readline(MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line or len(line) > MAX_LINE:
            raise ProtocolError("the answer's headers were cut off or too long")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ProtocolError(f"not an HTTP header: {line[:40]!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    raise ProtocolError(f"more than {MAX_HEADERS} headers in an answer")


def _chunked(file) -> bytes:  # noqa: ANN001 - a BufferedReader
    parts = []
    while True:
        line = file.readline(MAX_LINE + 1)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {line[:40]!r}") from None
        if size == 0:
            _headers(file)  # the trailer, ended by an empty line
            return b"".join(parts)
        chunk = file.read(size)
        if len(chunk) != size or file.readline(MAX_LINE + 1) not in (b"\r\n", b"\n"):
            raise ProtocolError("the server closed the connection in the middle of an answer")
        parts.append(chunk)
