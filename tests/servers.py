"""Real storage servers for the tests, as session-scoped pytest fixtures.

  s3_service     moto's standalone S3 server, in a subprocess; stores upload through syncd's lean
                 signed PUT
  s3_boto3_service  the same server; stores upload through plain boto3 (``S3Store.lean_put = False``)
  s3_auth_service   another moto server, in a subprocess, that checks every request's signature
                 (an IAM user's keys; moto's reset-auth, as INITIAL_NO_AUTH_ACTION_COUNT=0 would)
  gcs_service    gcp-storage-emulator, in memory, in a subprocess
  azure_service  Azurite's blob service (npm package ``azurite``, installed by ``npm ci``), a subprocess
  local_service  plain directories under pytest's tmp_path_factory

Each starts on a free 127.0.0.1 port and stops at the end of the session. A server that cannot be
had (package not installed, no Node.js, Azurite not installed by ``npm ci``) skips the tests that
need it, or fails them when SYNCD_REQUIRE_SERVICES=1 (CI sets it): see ``service_unavailable``.

Every service makes targets the same way, for the conformance suite and for end-to-end runs:

    url, options, env = service.fresh_target("some/prefix")

creates an empty bucket (container, directory) and returns the target URL, the backend options for
``syncd.stores.open_store`` (or the config's backend section), and the environment variables the
SDK needs (a value of None means: unset it). Apply ``env`` with ``apply_env(monkeypatch, env)`` in
a test, or ``tests.conftest.child_env(env)`` for a ``syncd`` subprocess.

Use the fixtures (named local_service, s3_service, gcs_service, azure_service, fault_proxy) by
``pytest_plugins = ["tests.servers"]`` in tests/conftest.py, or by importing their ``*_fixture``
functions into a test module.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

from tests.conftest import skip_or_fail

REPO_ROOT = Path(__file__).resolve().parent.parent

Env = dict[str, "str | None"]

# Never send test traffic to a proxy named in the environment.
_LOOPBACK_ENV: Env = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def service_unavailable(service: str, reason: str) -> NoReturn:
    """Skip the calling test (or fixture) because ``service`` cannot be had, or fail it when
    SYNCD_REQUIRE_SERVICES=1, so that CI never passes by skipping a backend."""
    skip_or_fail(f"{service} is not available: {reason}")
    raise AssertionError("unreachable")  # skip_or_fail always raises


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def apply_env(monkeypatch: pytest.MonkeyPatch, env: Env) -> None:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def unique_name(stem: str = "syncd-test") -> str:
    """A bucket/container name valid on S3, GCS and Azure: lowercase letters, digits and hyphens."""
    return f"{stem}-{uuid.uuid4().hex[:12]}"


@dataclass
class Fault:
    status: int
    headers: dict[str, str]
    body: bytes
    times: int
    method: str | None


class FaultProxy:
    """An HTTP proxy in front of a test server that answers chosen requests with an error.

    Point an adapter at ``proxy.url`` instead of the server (``service.fresh_target(endpoint=proxy.url)``),
    queue faults with ``fail(...)``: the next matching requests get that answer instead of being
    forwarded. ``requests`` records (method, path) of every request that reached the proxy.
    """

    _HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
            "expect", "content-length"}

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def fail(self, status: int, *, body: bytes = b"", headers: dict[str, str] | None = None, times: int = 1,
             method: str | None = None) -> None:
        """Answer the next ``times`` requests (of ``method``, if given) with ``status``."""
        with self._lock:
            self._faults.append(Fault(status, dict(headers or {}), body, times, method))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method is None or fault.method == method:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(handler.rfile)
        else:
            body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        with self._lock:
            self.requests.append((handler.command, handler.path))
        fault = self._take_fault(handler.command)
        if fault is not None:
            handler.send_response(fault.status)
            for name, value in fault.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(fault.body)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(fault.body)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in self._HOP}
        if body or handler.command in ("PUT", "POST", "PATCH"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            conn.request(handler.command, handler.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            handler.send_response(resp.status, resp.reason)
            length = None
            for name, value in resp.getheaders():
                if name.lower() == "content-length":
                    length = value
                elif name.lower() not in self._HOP:
                    handler.send_header(name, value)
            if handler.command != "HEAD" or not length:
                length = str(len(data))
            handler.send_header("Content-Length", length)
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(data)
        finally:
            conn.close()


def _read_chunked(rfile: Any) -> bytes:
    data = b""
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline().strip():  # trailers
                pass
            return data
        data += rfile.read(size)
        rfile.readline()


@pytest.fixture(name="fault_proxy")
def fault_proxy_fixture() -> Iterator[Any]:
    """A factory: ``fault_proxy(upstream_url)`` -> a FaultProxy, closed after the test."""
    proxies: list[FaultProxy] = []

    def make(upstream: str) -> FaultProxy:
        proxy = FaultProxy(upstream)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


# -- services ------------------------------------------------------------------------------------


@dataclass
class Service:
    """A running storage server and how to make targets on it."""

    name: str  # "local", "s3", "gcs", "azure"
    scheme: str  # URL scheme of its targets
    endpoint: str  # where the server listens ("" for local)
    env: Env = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def url(self, bucket: str, prefix: str = "") -> str:
        return f"{self.scheme}://{bucket}/{prefix}".rstrip("/") if prefix else f"{self.scheme}://{bucket}"

    def fresh_target(self, prefix: str = "", *, endpoint: str | None = None
                     ) -> tuple[str, dict[str, Any], Env]:
        """A new empty bucket: (target URL, backend options, environment). ``endpoint`` reaches the
        server another way (a FaultProxy's URL, say)."""
        return self.target(self.new_bucket(), prefix, endpoint=endpoint)

    def new_bucket(self) -> str:
        """Create an empty bucket (container, directory) and return its name."""
        bucket = unique_name()
        self.create_bucket(bucket)
        return bucket

    def missing_target(self) -> tuple[str, dict[str, Any], Env]:
        """A target whose bucket does not exist."""
        return self.target(unique_name("syncd-missing"))

    def target(self, bucket: str, prefix: str = "", *, endpoint: str | None = None
               ) -> tuple[str, dict[str, Any], Env]:
        return self.url(bucket, prefix), dict(self.options), dict(self.env)

    def create_bucket(self, bucket: str) -> None:
        raise NotImplementedError

    # What a user would check with the vendor's own tools, bypassing syncd's adapter:
    def read_object(self, bucket: str, key: str) -> bytes:
        raise NotImplementedError

    def object_properties(self, bucket: str, key: str) -> tuple[str | None, dict[str, str]]:
        """(Content-Type, user metadata) of a stored object."""
        raise NotImplementedError

    def raw_keys(self, bucket: str) -> list[str]:
        """Every key in the bucket, as the vendor's SDK lists it."""
        raise NotImplementedError

    def configure(self, store: Any) -> None:
        """Set up a store opened on this service the way this variant tests it."""

    def put_foreign(self, bucket: str, key: str, data: bytes) -> None:
        """Write an object as another tool would: no syncd metadata."""
        raise NotImplementedError

    def error_answer(self, status: int, code: str) -> tuple[dict[str, str], bytes]:
        """Headers and body of an error response in this service's own format."""
        raise NotImplementedError


class LocalService(Service):
    def __init__(self, root: Path):
        super().__init__("local", "file", "")
        self.root = root

    def url(self, bucket: str, prefix: str = "") -> str:
        return (self.root / bucket / prefix).as_uri() if prefix else (self.root / bucket).as_uri()

    def create_bucket(self, bucket: str) -> None:
        (self.root / bucket).mkdir(parents=True)

    def missing_target(self) -> tuple[str, dict[str, Any], Env]:
        blocker = self.root / unique_name("syncd-not-a-dir")
        blocker.write_text("a file where the target directory should be")
        return (blocker / "target").as_uri(), {}, {}

    def read_object(self, bucket: str, key: str) -> bytes:
        return (self.root / bucket / key).read_bytes()

    def raw_keys(self, bucket: str) -> list[str]:
        base = self.root / bucket
        return sorted(str(p.relative_to(base)).replace(os.sep, "/") for p in base.rglob("*") if p.is_file())

    def put_foreign(self, bucket: str, key: str, data: bytes) -> None:
        path = self.root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture(scope="session", name="local_service")
def local_service_fixture(tmp_path_factory: pytest.TempPathFactory) -> LocalService:
    return LocalService(tmp_path_factory.mktemp("local-targets"))


# S3 ----------------------------------------------------------------------------------------------


class S3Service(Service):
    def __init__(self, endpoint: str, access_key: str = "testing", secret_key: str = "testing", *,
                 lean_put: bool = True):
        self.access_key, self.secret_key, self.lean_put = access_key, secret_key, lean_put
        env: Env = {
            **_LOOPBACK_ENV,
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_SESSION_TOKEN": None,
            "AWS_SECURITY_TOKEN": None,
            "AWS_PROFILE": None,
            "AWS_DEFAULT_PROFILE": None,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": None,
            "AWS_ENDPOINT_URL": None,
            "AWS_ENDPOINT_URL_S3": None,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        super().__init__("s3", "s3", endpoint, env, {"endpoint_url": endpoint})

    def target(self, bucket: str, prefix: str = "", *, endpoint: str | None = None
               ) -> tuple[str, dict[str, Any], Env]:
        url, options, env = super().target(bucket, prefix)
        options["endpoint_url"] = endpoint or self.endpoint
        return url, options, env

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def configure(self, store: Any) -> None:
        store.lean_put = self.lean_put

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def read_object(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def object_properties(self, bucket: str, key: str) -> tuple[str | None, dict[str, str]]:
        resp = self.client().head_object(Bucket=bucket, Key=key)
        return resp.get("ContentType"), resp.get("Metadata") or {}

    def raw_keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", ()))

    def put_foreign(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def error_answer(self, status: int, code: str) -> tuple[dict[str, str], bytes]:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>injected {code}</Message><RequestId>fault</RequestId></Error>")
        return {"Content-Type": "application/xml"}, body.encode()

    @contextlib.contextmanager
    def enforce_auth(self) -> Iterator[None]:
        """Make the moto server check every request's credentials against its IAM (none of the test
        credentials exist there), as AWS does; undone on exit."""
        import requests

        resp = requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
        resp.raise_for_status()
        try:
            yield
        finally:
            requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()


@pytest.fixture(scope="session", name="s3_service")
def s3_service_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        service_unavailable("S3 (moto server)", f"Python package {exc.name!r} is not installed; "
                            "run: pip install boto3 'moto[server]'")
    # (the wrapper of the s3_auth service: the same server, whose signature checks, when
    # enforce_auth turns them on, canonicalise requests as AWS does)
    port = free_port()
    command = [sys.executable, str(Path(__file__).with_name("moto_auth_server.py")), "-H", "127.0.0.1", "-p", str(port)]
    with server_process("S3 (moto server)", command, port, tmp_path_factory.mktemp("moto")):
        yield S3Service(f"http://127.0.0.1:{port}")


@pytest.fixture(scope="session", name="s3_boto3_service")
def s3_boto3_service_fixture(s3_service: S3Service) -> S3Service:
    return S3Service(s3_service.endpoint, lean_put=False)


@pytest.fixture(scope="session", name="s3_auth_service")
def s3_auth_service_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """moto in a process of its own (its auth switch is global to a process) with request
    authentication on: an IAM user allowed s3:* signs every request; a wrong signature or key
    is refused as AWS refuses it."""
    try:
        import boto3
        import requests
    except ImportError as exc:
        service_unavailable("S3 with authentication (moto server)", f"Python package {exc.name!r} is not "
                            "installed; run: pip install boto3 'moto[server]'")
    port = free_port()
    command = [sys.executable, str(Path(__file__).with_name("moto_auth_server.py")), "-H", "127.0.0.1", "-p", str(port)]
    with server_process("S3 with authentication (moto server)", command, port, tmp_path_factory.mktemp("moto")):
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        iam.create_user(UserName="syncd")
        iam.put_user_policy(UserName="syncd", PolicyName="syncd-s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="syncd")["AccessKey"]
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        yield S3Service(endpoint, key["AccessKeyId"], key["SecretAccessKey"])


@contextlib.contextmanager
def server_process(service: str, command: list[str], port: int, workdir: Path) -> Iterator[None]:
    """Run a test server's ``command`` in ``workdir`` until the block ends; the service is
    unavailable (skip or fail) when nothing listens on ``port`` within 30 s."""
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_for_port(port, 30, proc):
            tail = " ".join(log_path.read_text(errors="replace").split()[-40:])
            service_unavailable(service, f"{command[0]} did not start on 127.0.0.1:{port}: {tail}")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# GCS ---------------------------------------------------------------------------------------------


class GCSService(Service):
    def __init__(self, endpoint: str):
        env: Env = {
            **_LOOPBACK_ENV,
            "STORAGE_EMULATOR_HOST": endpoint,
            "GOOGLE_APPLICATION_CREDENTIALS": None,
            "GOOGLE_CLOUD_PROJECT": "test",
        }
        super().__init__("gcs", "gs", endpoint, env, {})

    def target(self, bucket: str, prefix: str = "", *, endpoint: str | None = None
               ) -> tuple[str, dict[str, Any], Env]:
        url, options, env = super().target(bucket, prefix)
        env["STORAGE_EMULATOR_HOST"] = endpoint or self.endpoint
        return url, options, env

    def client(self) -> Any:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="test", credentials=AnonymousCredentials(),
                              client_options=ClientOptions(api_endpoint=self.endpoint))

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(bucket)

    def read_object(self, bucket: str, key: str) -> bytes:
        return self.client().bucket(bucket).blob(key).download_as_bytes()

    def object_properties(self, bucket: str, key: str) -> tuple[str | None, dict[str, str]]:
        blob = self.client().bucket(bucket).get_blob(key)
        assert blob is not None, f"gs://{bucket}/{key} does not exist"
        return blob.content_type, dict(blob.metadata or {})

    def raw_keys(self, bucket: str) -> list[str]:
        return sorted(blob.name for blob in self.client().list_blobs(bucket))

    def put_foreign(self, bucket: str, key: str, data: bytes) -> None:
        self.client().bucket(bucket).blob(key).upload_from_string(data)

    def error_answer(self, status: int, code: str) -> tuple[dict[str, str], bytes]:
        body = {"error": {"code": status, "message": f"injected {code}",
                          "errors": [{"message": f"injected {code}", "domain": "global", "reason": code}]}}
        return {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(body).encode()


@pytest.fixture(scope="session", name="gcs_service")
def gcs_service_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSService]:
    try:
        import gcp_storage_emulator  # noqa: F401
        import google.cloud.storage  # noqa: F401
    except ImportError as exc:
        service_unavailable("GCS (gcp-storage-emulator)", f"Python package {exc.name!r} is not installed; "
                            "run: pip install google-cloud-storage gcp-storage-emulator")
    port = free_port()
    command = [sys.executable, str(Path(__file__).with_name("gcs_emulator_server.py")), str(port)]
    with server_process("GCS (gcp-storage-emulator)", command, port, tmp_path_factory.mktemp("gcs")):
        yield GCSService(f"http://127.0.0.1:{port}")


# Azure -------------------------------------------------------------------------------------------

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key: not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzureService(Service):
    def __init__(self, endpoint: str):
        self.account_url = f"{endpoint}/{AZURITE_ACCOUNT}"
        env: Env = {**_LOOPBACK_ENV, "AZURE_STORAGE_CONNECTION_STRING": self.connection_string(endpoint)}
        super().__init__("azure", "azure", endpoint, env, {})

    @staticmethod
    def connection_string(endpoint: str) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};")

    def target(self, bucket: str, prefix: str = "", *, endpoint: str | None = None
               ) -> tuple[str, dict[str, Any], Env]:
        url, options, env = super().target(bucket, prefix)
        env["AZURE_STORAGE_CONNECTION_STRING"] = self.connection_string(endpoint or self.endpoint)
        return url, options, env

    def client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string(self.endpoint))

    def create_bucket(self, bucket: str) -> None:
        self.client().create_container(bucket)

    def read_object(self, bucket: str, key: str) -> bytes:
        return self.client().get_blob_client(bucket, key).download_blob().readall()

    def object_properties(self, bucket: str, key: str) -> tuple[str | None, dict[str, str]]:
        props = self.client().get_blob_client(bucket, key).get_blob_properties()
        return props.content_settings.content_type, dict(props.metadata or {})

    def raw_keys(self, bucket: str) -> list[str]:
        return sorted(blob.name for blob in self.client().get_container_client(bucket).list_blobs())

    def put_foreign(self, bucket: str, key: str, data: bytes) -> None:
        self.client().get_blob_client(bucket, key).upload_blob(data)

    def error_answer(self, status: int, code: str) -> tuple[dict[str, str], bytes]:
        body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                f"<Message>injected {code}\nRequestId:fault\nTime:2024-01-01T00:00:00Z</Message></Error>")
        return {"Content-Type": "application/xml", "x-ms-error-code": code}, body.encode()


def _azurite_command() -> list[str] | None:
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return [str(local)]
    found = shutil.which("azurite-blob")
    return [found] if found else None


@pytest.fixture(scope="session", name="azure_service")
def azure_service_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureService]:
    try:
        import azure.storage.blob  # noqa: F401
    except ImportError as exc:
        service_unavailable("Azure (Azurite)", f"Python package {exc.name!r} is not installed; "
                            "run: pip install azure-storage-blob azure-identity")
    if shutil.which("node") is None:
        service_unavailable("Azure (Azurite)", "Node.js is not installed (Azurite runs on Node.js; "
                            "apt-get install nodejs npm, then npm ci)")
    command = _azurite_command()
    if command is None:
        service_unavailable("Azure (Azurite)", f"Azurite is not installed; run `npm ci` in {REPO_ROOT}")
    port = free_port()
    with server_process("Azure (Azurite)", [*command, "--blobHost", "127.0.0.1", "--blobPort", str(port),
                        "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
                        "--silent"], port, tmp_path_factory.mktemp("azurite")):
        yield AzureService(f"http://127.0.0.1:{port}")


CLOUD_SERVICES = ("s3", "s3_boto3", "s3_auth", "gcs", "azure")
ALL_SERVICES = ("local", *CLOUD_SERVICES)


def get_service(request: pytest.FixtureRequest, name: str) -> Service:
    """The session's running service named ``name`` (starting it on first use)."""
    return request.getfixturevalue(f"{name}_service")
