"""The HTTP endpoints of ``syncd run``, as one WSGI app on ``listen``.

``/healthz`` answers 200 while the process runs, ``/readyz`` 200 when in step (503 with the
reason otherwise), ``/metrics`` is prometheus_client's own WSGI app (content negotiation,
OpenMetrics, gzip), ``/`` (also ``/status``) the status page and ``/status.json`` its data
(``syncd.ops.status``). Everything is read-only: other methods than GET and HEAD get 405.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from syncd.errors import ConfigError
from syncd.ops.health import Health
from syncd.ops.metrics import Metrics
from syncd.ops.status import StatusBoard, render_html

log = logging.getLogger("syncd")

Start = Callable[[str, list[tuple[str, str]]], Any]


# The status page runs no script and loads nothing from elsewhere; say so to the browser too.
PAGE_HEADERS = [("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; "
                 "frame-ancestors 'none'"), ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"),
                ("Referrer-Policy", "no-referrer")]


def make_app(health: Health, metrics: Metrics,
             status: StatusBoard | None = None) -> Callable[[dict, Start], Iterable[bytes]]:
    prometheus = make_wsgi_app(metrics.registry)

    def app(environ: dict, start_response: Start) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])
            return [b""]
        if status is not None and path in ("/", "/status", "/status.json"):
            snapshot = status.snapshot()
            if path == "/status.json":
                body = (json.dumps(snapshot, ensure_ascii=False, indent=1) + "\n").encode()
                kind = "application/json"
            else:
                body, kind = render_html(snapshot).encode(), "text/html; charset=utf-8"
            start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body))), *PAGE_HEADERS])
            return [body]
        if path == "/metrics":
            return prometheus(environ, start_response)
        if path == "/healthz":
            return _text(start_response, 200, "ok")
        if path == "/readyz":
            ready, reason = health.get()
            text = ("ready" + (f": {reason}" if reason else "")) if ready else f"not ready: {reason}"
            return _text(start_response, 200 if ready else 503, text)
        return _text(start_response, 404, "not found: try /, /status.json, /healthz, /readyz or /metrics")

    return app


def _text(start_response: Start, status: int, text: str) -> list[bytes]:
    body = (text + "\n").encode()
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    start_response(f"{status} {reason}", [("Content-Type", "text/plain; charset=utf-8"),
                                          ("Content-Length", str(len(body)))])
    return [body]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:  # probes every few seconds: not worth a log line
        pass


def serve(listen: str, health: Health, metrics: Metrics, status: StatusBoard | None = None) -> _Server:
    """Start the endpoints on ``host:port`` in a daemon thread; ``shutdown()`` stops them."""
    host, _, port = listen.rpartition(":")
    try:
        server = make_server(host.strip("[]") or "127.0.0.1", int(port), make_app(health, metrics, status),
                             server_class=_Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"listen: cannot serve on {listen} ({exc.strerror}); choose a free address "
                          "or set listen: to empty to turn the endpoints off") from None
    threading.Thread(target=server.serve_forever, name="syncd-http", daemon=True).start()
    return server
