"""The ways to run syncd (deploy/, Dockerfile, .dockerignore), checked offline against the real tools
and against syncd itself: systemd units with ``systemd-analyze``, Kubernetes manifests rendered with
kustomize and validated against the API's OpenAPI schemas, the Dockerfile parsed and its build
context replayed, and every command the files run parsed by syncd's own command line."""

from __future__ import annotations

import base64
import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

from syncd import config as config_mod
from syncd import daemon as daemon_mod
from syncd.cli import build_parser
from syncd.ops.health import Health
from syncd.ops.http import serve
from syncd.ops.metrics import Metrics
from syncd.sources.labelstudio.database import default_db_url
from tests.conftest import EXAMPLE_DB, REPO, skip_or_fail
from tests.daemon_helpers import RunningSyncd, free_port

DEPLOY = REPO / "deploy"
SYSTEMD = DEPLOY / "systemd"
K8S = DEPLOY / "kubernetes"
UNITS = ("syncd.service", "syncd@.service", "syncd-resync.service", "syncd-resync.timer")
SERVICES = ("syncd.service", "syncd@.service", "syncd-resync.service")
INSTALLED_SYNCD = "/usr/local/bin/syncd"  # ExecStart's path in the units
SYNCD_IMAGE = "ghcr.io/example/labelstudio-syncd:0.1.0"
LS_IMAGE = "heartexlabs/label-studio:1.23.2"
CONFIG_PATH = "/etc/syncd/config.yaml"  # in the units, the image and the pods
# Native sidecars (restartPolicy: Always on an init container) are on by default from 1.29.
OLDEST_KUBERNETES = "1.29.0"
DEFAULT_LISTEN = config_mod.Config().listen
DEFAULT_PORT = int(DEFAULT_LISTEN.rpartition(":")[2])
LIVENESS_PATH, READINESS_PATH = "/healthz", "/readyz"  # served by syncd/ops.py (checked live below)
# Label Studio's own environment variables: cleared before resolving a container's database.
LS_ENV = re.compile(r"^(LABEL_STUDIO_|HEARTEX_)?(DJANGO_DB|POSTGRE_\w+|DATABASE_NAME|BASE_DATA_DIR)$")


# ------------------------------------------------------------------ helpers


def unit_settings(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment in a systemd unit file, in order."""
    settings, section, pending = [], "", ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = (pending + raw.strip()) if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.append((section, key.strip(), value.strip()))
    return settings


def unit_values(path: Path, key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in unit_settings(path) if s == section and k == key]


def unit_value(path: Path, key: str, section: str = "Service") -> str:
    values = unit_values(path, key, section)
    assert values, f"{path.name}: no {key}= in [{section}]"
    return values[-1]


def seconds(span: str) -> float:
    """A systemd time span ("15", "15s", "3min", "6h", "1h 30min") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hr": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts, span
    return sum(float(n) * units[u] for n, u in parts)


def exec_argv(path: Path, key: str = "ExecStart") -> list[str]:
    return shlex.split(unit_value(path, key).lstrip("-+!@:"))


def parse_cli(argv: list[str], where: str) -> None:
    """Parse ``argv`` (without the program name) with syncd's real argument parser."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `syncd {shlex.join(argv)}` is not a valid syncd command line (exit {exc.code})")


def find(docs: list[dict], kind: str, name: str) -> dict:
    """The rendered object of ``kind`` named ``name`` (or ``name-<hash>`` for generated ones)."""
    for doc in docs:
        if doc["kind"] == kind and re.fullmatch(re.escape(name) + r"(-[a-z0-9]{10})?", doc["metadata"]["name"]):
            return doc
    raise AssertionError(f"no {kind} {name} in {[(d['kind'], d['metadata']['name']) for d in docs]}")


def by_name(items: list[dict] | None, name: str) -> dict:
    matches = [item for item in items or [] if item.get("name") == name]
    assert matches, f"no {name!r} among {[item.get('name') for item in items or []]}"
    return matches[0]


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def syncd_containers(docs: list[dict]) -> dict[str, tuple[dict, dict]]:
    """The syncd containers (sidecar and CronJob), each with its pod spec."""
    deployment, cronjob = find(docs, "Deployment", "label-studio"), find(docs, "CronJob", "syncd-resync")
    return {"sidecar": (by_name(pod_spec(deployment).get("initContainers"), "syncd"), pod_spec(deployment)),
            "cronjob": (by_name(pod_spec(cronjob)["containers"], "syncd"), pod_spec(cronjob))}


def named(docs: list[dict], kind: str, name: str) -> dict:
    """The rendered object of ``kind`` with exactly this (generated) name."""
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def container_env(container: dict, docs: list[dict]) -> dict[str, str]:
    """The environment a container gets: its env values over its envFrom Secrets and ConfigMaps."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            secret = named(docs, "Secret", source["secretRef"]["name"])
            env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
        else:
            env.update(named(docs, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def mount_for(container: dict, path: str) -> dict | None:
    """The volume mount that holds ``path`` in ``container`` (the deepest one), or None."""
    holding = [m for m in container.get("volumeMounts", [])
               if (path + "/").startswith(m["mountPath"].rstrip("/") + "/")]
    return max(holding, key=lambda m: len(m["mountPath"].rstrip("/")), default=None)


def dockerfile():
    try:
        from dockerfile_parse import DockerfileParser
    except ImportError:
        skip_or_fail("dockerfile-parse is not installed (pip install -e '.[test]')")
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    return parser, [(i["instruction"], i["value"]) for i in parser.structure if i["instruction"] != "COMMENT"]


def exec_form(value: str) -> list[str]:
    argv = json.loads(value)
    assert isinstance(argv, list), f"not the exec (JSON) form: {value}"
    return argv


# ------------------------------------------------------------------ systemd


@pytest.fixture
def units_for_this_machine(tmp_path) -> Path:
    """Copies of the units with ExecStart pointing at this machine's syncd: systemd-analyze
    verify checks that the binary exists, and /usr/local/bin/syncd need not be here."""
    installed = shutil.which("syncd")
    if installed is None:
        skip_or_fail("the syncd command is not on PATH (pip install -e .)")
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name in UNITS:
        text = (SYSTEMD / name).read_text(encoding="utf-8")
        (unit_dir / name).write_text(text.replace(INSTALLED_SYNCD, installed), encoding="utf-8")
    return unit_dir


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        skip_or_fail("systemd-analyze is not installed (apt-get install systemd)")
    return tool


def test_systemd_units_pass_systemd_analyze_verify(units_for_this_machine):
    tool = systemd_analyze()
    paths = [str(units_for_this_machine / name) for name in UNITS]
    result = subprocess.run([tool, "verify", *paths], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    # verify exits 0 on unknown keys and bad values ("..., ignoring."): any line about our units fails.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if any(n in line for n in UNITS)]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


def test_systemd_services_are_sandboxed(units_for_this_machine):
    tool = systemd_analyze()
    for name in SERVICES:
        # Exposure 0-10 (x10 here); 1.5 now: ProtectSystem=strict, no capabilities, a syscall filter, ...
        result = subprocess.run([tool, "security", "--offline=yes", "--threshold=25",
                                 str(units_for_this_machine / name)], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
        assert result.returncode == 0, f"{name}: exposure above 2.5\n{result.stdout}{result.stderr}"


def test_systemd_service_settings_fit_the_daemon():
    unit = SYSTEMD / "syncd.service"
    assert unit_value(unit, "Type") == "notify"  # READY=1 after the initial reconcile
    assert exec_argv(unit)[0] == INSTALLED_SYNCD
    assert exec_argv(unit, "ExecReload") == ["/bin/kill", "-HUP", "$MAINPID"]
    assert unit_value(unit, "Restart") == "on-failure"
    assert unit_value(unit, "RestartPreventExitStatus") == "2"  # a config error does not heal by restarting
    # The watchdog must outlast the longest wait without a ping (the reconnect backoff); the stop
    # timeout must leave syncd its drain time before SIGKILL.
    assert seconds(unit_value(unit, "WatchdogSec")) > daemon_mod.MAX_BACKOFF
    assert seconds(unit_value(unit, "TimeoutStopSec")) == 15 > daemon_mod.SHUTDOWN_GRACE
    for name in SERVICES:
        unit = SYSTEMD / name
        assert unit_value(unit, "EnvironmentFile") == "-/etc/syncd/syncd.env"
        assert unit_value(unit, "StateDirectory") == "syncd"
        assert unit_value(unit, "ProtectSystem") == "strict"
        for key in ("NoNewPrivileges", "PrivateTmp", "PrivateDevices"):
            assert unit_value(unit, key) == "yes", (name, key)
        assert unit_value(unit, "CapabilityBoundingSet") == ""
        user = unit_values(unit, "User")
        assert unit_values(unit, "DynamicUser") == ["yes"] or (user and user[-1] not in ("root", "0")), name
        assert "/var/lib/label-studio" in " ".join(unit_values(unit, "ReadOnlyPaths"))


def test_systemd_timer_and_oneshot():
    timer, oneshot = SYSTEMD / "syncd-resync.timer", SYSTEMD / "syncd-resync.service"
    assert unit_value(timer, "Unit", "Timer") == "syncd-resync.service"
    assert unit_value(timer, "Persistent", "Timer") == "true"
    assert unit_value(timer, "OnCalendar", "Timer")
    assert unit_value(timer, "WantedBy", "Install") == "timers.target"
    assert unit_value(oneshot, "Type") == "oneshot"
    argv = exec_argv(oneshot)
    assert argv[:2] == [INSTALLED_SYNCD, "resync"]
    args = build_parser().parse_args(argv[1:])
    assert args.metrics_file == "/var/lib/node_exporter/textfile_collector/syncd.prom"
    assert unit_value(oneshot, "ReadWritePaths").lstrip("-") == str(Path(args.metrics_file).parent)
    assert args.verify_remote
    # Not the daemon's checkpoint: syncd run holds its lock.
    daemon_state = config_mod.load(str(SYSTEMD / "config.yaml")).state
    assert args.state and args.state != daemon_state and args.state.startswith("/var/lib/syncd/")


def test_systemd_example_config_and_env_file():
    cfg = config_mod.load(str(SYSTEMD / "config.yaml"))
    assert cfg.state and cfg.state.startswith("/var/lib/syncd/"), "state: must be in the unit's StateDirectory"
    assert cfg.listen == DEFAULT_LISTEN
    db_dir = str(Path(cfg.db.removeprefix("sqlite:///")).parent)
    assert db_dir in [p.lstrip("-") for p in unit_values(SYSTEMD / "syncd.service", "ReadOnlyPaths")]
    for line in (SYSTEMD / "syncd.env.example").read_text(encoding="utf-8").splitlines():
        line = line.lstrip("#").strip()
        if "=" in line and " " not in line.partition("=")[0]:
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", line.partition("=")[0]), line


def test_systemd_resync_command_runs_as_installed(tmp_path):
    """The timer's ExecStart, with its paths moved into tmp_path: it writes every document and the
    metrics file, and a second run repairs an object someone changed in the target."""
    argv = exec_argv(SYSTEMD / "syncd-resync.service")
    raw = yaml.safe_load((SYSTEMD / "config.yaml").read_text(encoding="utf-8"))
    db = tmp_path / "label_studio.sqlite3"
    shutil.copyfile(EXAMPLE_DB, db)
    raw.update(db=f"sqlite:///{db}", target=str(tmp_path / "out"), state=str(tmp_path / "state.sqlite3"))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    moved = {CONFIG_PATH: str(config)}
    args = build_parser().parse_args(argv[1:])
    moved[args.state] = str(tmp_path / "resync-state.sqlite3")
    moved[args.metrics_file] = str(tmp_path / "syncd.prom")
    command = [sys.executable, "-m", "syncd", *(moved.get(a, a) for a in argv[1:])]

    first = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert first.returncode == 0, first.stderr
    documents = sorted((tmp_path / "out").glob("*.json"))
    assert documents and f"{len(documents)} written" in first.stderr
    metrics = (tmp_path / "syncd.prom").read_text()
    assert "syncd_last_run_success 1.0" in metrics
    assert f"syncd_objects_written_total {len(documents)}.0" in metrics

    original = documents[0].read_bytes()
    documents[0].write_text("{}")
    second = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert second.returncode == 0, second.stderr
    assert " 1 written" in second.stderr and documents[0].read_bytes() == original


# ------------------------------------------------------------------ Kubernetes


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """The overlays rendered by kustomize (kubectl's built-in one, or the standalone binary),
    in a copy of deploy/kubernetes where the git-ignored env files are made from their examples;
    "readiness" is the sqlite overlay with components/syncd-readiness."""
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if not kubectl and not kustomize:
        skip_or_fail("neither kubectl nor kustomize is installed (kustomize renders the overlays)")
    root = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("credentials.env", "postgres.env"))
    for example in root.rglob("*.env.example"):
        shutil.copyfile(example, example.with_suffix(""))
    readiness = root / "overlays" / "readiness"
    readiness.mkdir()
    (readiness / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../sqlite"], "components": ["../../components/syncd-readiness"]}))
    docs = {}
    for overlay in ("sqlite", "postgresql", "readiness", "replicas"):
        path = str(root / "overlays" / overlay)
        command = [kubectl, "kustomize", path] if kubectl else [kustomize, "build", path]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"kustomize {overlay}: {result.stderr}"
        docs[overlay] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return docs


@pytest.fixture(scope="module")
def sidecar_overlays(rendered) -> dict[str, list[dict]]:
    """The overlays with syncd as Label Studio's sidecar (all but replicas)."""
    return {name: docs for name, docs in rendered.items() if name != "replicas"}


def test_kubernetes_manifests_validate_offline_against_the_api_schemas(rendered, monkeypatch):
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import latest_version
    except ImportError:
        skip_or_fail("kubernetes-validate is not installed (pip install -e '.[test]')")

    def no_network(*args, **kwargs):
        raise AssertionError("the schema validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    raw = [d for f in sorted((K8S / "base").glob("*.yaml")) if f.name not in ("kustomization.yaml", "config.yaml")
           for d in yaml.safe_load_all(f.read_text(encoding="utf-8")) if d]
    assert {d["kind"] for d in raw} >= {"Deployment", "CronJob", "Service", "PersistentVolumeClaim"}
    documents = [("base/" + d["kind"], d) for d in raw]
    documents += [(f"{overlay}/{d['kind']}/{d['metadata']['name']}", d) for overlay, ds in rendered.items() for d in ds]
    for version in (OLDEST_KUBERNETES, latest_version()):
        for where, doc in documents:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where} against Kubernetes {version}: {'.'.join(map(str, exc.path))}: {exc.message}")
    # The validation is strict: an unknown field fails, and a Kubernetes without native sidecars too.
    deployment = copy.deepcopy(find(rendered["sqlite"], "Deployment", "label-studio"))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.27.0", strict=True)
    pod_spec(deployment)["initContainers"][0]["restartPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_KUBERNETES, strict=True)


def test_kubernetes_sidecar_probes_reach_syncd_endpoints(rendered):
    for overlay in ("sqlite", "postgresql", "readiness"):
        deployment = find(rendered[overlay], "Deployment", "label-studio")
        sidecar = by_name(pod_spec(deployment)["initContainers"], "syncd")
        assert sidecar["restartPolicy"] == "Always"  # a native sidecar, not a run-to-completion init container
        assert "command" not in sidecar and sidecar["args"] == ["run", "--config", CONFIG_PATH]
        assert sidecar["livenessProbe"]["httpGet"] == {"path": LIVENESS_PATH, "port": DEFAULT_PORT}
        assert [p["containerPort"] for p in sidecar["ports"]] == [DEFAULT_PORT]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(DEFAULT_PORT)
        assert annotations["prometheus.io/path"] == "/metrics"
        if overlay == "readiness":
            assert sidecar["readinessProbe"]["httpGet"] == {"path": READINESS_PATH, "port": DEFAULT_PORT}
        else:
            # Deliberately none: a sidecar's readiness is the pod's, and a storage outage would take
            # Label Studio out of its Service (see components/syncd-readiness).
            assert "readinessProbe" not in sidecar

    # The probe paths answer as the kubelet expects, on syncd's own HTTP server.
    health, port = Health(), free_port()
    server = serve(f"127.0.0.1:{port}", health, Metrics(daemon=True))

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        assert status(LIVENESS_PATH) == 200 and status(READINESS_PATH) == 503
        health.set(True)
        assert status(READINESS_PATH) == 200 and status("/metrics") == 200
    finally:
        server.shutdown()


def test_kubernetes_config_map_is_a_syncd_config_the_containers_can_use(sidecar_overlays, tmp_path):
    for overlay, docs in sidecar_overlays.items():
        config_map = find(docs, "ConfigMap", "syncd-config")
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(config_map["data"]["config.yaml"], encoding="utf-8")
        cfg = config_mod.load(str(path))
        host, _, port = cfg.listen.rpartition(":")
        assert host in ("0.0.0.0", "::", "[::]") and int(port) == DEFAULT_PORT, "the kubelet probes the pod's IP"
        assert cfg.target and cfg.log_format == "json"
        for where, (container, spec) in syncd_containers(docs).items():
            mount = mount_for(container, CONFIG_PATH)
            volume = by_name(spec["volumes"], mount["name"])
            assert volume["configMap"]["name"] == config_map["metadata"]["name"], where
            assert CONFIG_PATH in container["args"] and mount["readOnly"], where
            # Read-only root file system: the checkpoint and /tmp must be writable volumes.
            for writable in (cfg.state, "/tmp/x"):
                mount = mount_for(container, writable)
                assert mount and not mount.get("readOnly"), (overlay, where, writable)
        state_volume = by_name(syncd_containers(docs)["sidecar"][1]["volumes"],
                               mount_for(syncd_containers(docs)["sidecar"][0], cfg.state)["name"])
        assert state_volume["persistentVolumeClaim"]["claimName"] == "syncd-state"  # survives restarts


def test_kubernetes_database_wiring_resolves_like_label_studio(rendered, monkeypatch):
    def resolve(env: dict[str, str]) -> str:
        for name in list(os.environ):
            if LS_ENV.match(name):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return default_db_url()

    # SQLite: syncd opens the file on Label Studio's data volume, mounted read-only.
    docs = rendered["sqlite"]
    label_studio = by_name(pod_spec(find(docs, "Deployment", "label-studio"))["containers"], "label-studio")
    ls_url = resolve(container_env(label_studio, docs))
    assert ls_url == "sqlite:////label-studio/data/label_studio.sqlite3"
    ls_mount = mount_for(label_studio, ls_url.removeprefix("sqlite:///"))
    for where, (container, spec) in syncd_containers(docs).items():
        assert resolve(container_env(container, docs)) == ls_url, where
        mount = mount_for(container, ls_url.removeprefix("sqlite:///"))
        assert mount["name"] == ls_mount["name"] and mount["readOnly"], where
        assert by_name(spec["volumes"], mount["name"])["persistentVolumeClaim"]["claimName"] == "label-studio-data"
    affinity = syncd_containers(docs)["cronjob"][1]["affinity"]["podAffinity"]
    term = affinity["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["labelSelector"]["matchLabels"] == find(docs, "Deployment", "label-studio")["spec"]["selector"][
        "matchLabels"] and term["topologyKey"] == "kubernetes.io/hostname"  # the ReadWriteOnce volume's node

    # PostgreSQL: both read DJANGO_DB=default and POSTGRE_* from the same Secret; no shared volume.
    docs = rendered["postgresql"]
    label_studio = by_name(pod_spec(find(docs, "Deployment", "label-studio"))["containers"], "label-studio")
    ls_env = container_env(label_studio, docs)
    assert ls_env["DJANGO_DB"] == "default" and ls_env["POSTGRE_PASSWORD"]
    ls_url = resolve(ls_env)
    assert ls_url.startswith("postgresql://")
    for where, (container, _spec) in syncd_containers(docs).items():
        env = container_env(container, docs)
        assert resolve(env) == ls_url, where
        assert any(k.startswith("AWS_") for k in env), f"{where} lost the storage credentials"
        assert mount_for(container, "/label-studio/data/label_studio.sqlite3") is None, where
    cronjob_pod = syncd_containers(docs)["cronjob"][1]
    assert "affinity" not in cronjob_pod and "data" not in [v["name"] for v in cronjob_pod["volumes"]]


def test_kubernetes_containers_are_locked_down(rendered):
    parser, instructions = dockerfile()
    image_uid = int([v for i, v in instructions if i == "USER"][-1].split(":")[0])
    replicas = find(rendered["replicas"], "Deployment", "syncd")
    containers = {("replicas", "deployment"): (by_name(pod_spec(replicas)["containers"], "syncd"), pod_spec(replicas))}
    for overlay, docs in rendered.items():
        if overlay != "replicas":
            containers.update({(overlay, where): c for where, c in syncd_containers(docs).items()})
    for (overlay, where), (container, spec) in containers.items():
        assert container["image"] == SYNCD_IMAGE, where
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True, where
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
        assert context["runAsUser"] == image_uid, "the image's USER"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (overlay, where, kind)
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for overlay, docs in rendered.items():
        if overlay == "replicas":
            continue
        pod = pod_spec(find(docs, "Deployment", "label-studio"))
        assert by_name(pod["containers"], "label-studio")["image"] == LS_IMAGE
        assert find(docs, "Deployment", "label-studio")["spec"]["strategy"]["type"] == "Recreate"
        selector = find(docs, "Deployment", "label-studio")["spec"]["selector"]["matchLabels"]
        assert find(docs, "Service", "label-studio")["spec"]["selector"] == selector
        cronjob = find(docs, "CronJob", "syncd-resync")
        assert len(cronjob["spec"]["schedule"].split()) == 5 and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        args = build_parser().parse_args(syncd_containers(docs)["cronjob"][0]["args"])
        assert args.command == "resync" and args.log_format == "json" and args.verify_remote


def test_kubernetes_replicas_share_the_work_without_a_volume(rendered, tmp_path):
    docs = rendered["replicas"]
    syncd = find(docs, "Deployment", "syncd")
    assert syncd["spec"]["replicas"] == 2
    assert syncd["spec"]["strategy"]["type"] == "RollingUpdate"
    assert syncd["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = pod_spec(syncd)
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"]), "no volume: the state is in PostgreSQL"
    container = by_name(pod["containers"], "syncd")
    assert build_parser().parse_args(container["args"]).command == "run"
    assert container["readinessProbe"]["httpGet"] == {"path": READINESS_PATH, "port": DEFAULT_PORT}
    assert container["livenessProbe"]["httpGet"] == {"path": LIVENESS_PATH, "port": DEFAULT_PORT}
    secrets = {ref["secretRef"]["name"] for ref in container["envFrom"]}
    assert {"syncd-credentials", "syncd-state"} <= {re.sub(r"-[a-z0-9]{10}$", "", s) for s in secrets}
    pdb = find(docs, "PodDisruptionBudget", "syncd")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == syncd["spec"]["selector"]["matchLabels"]
    # Label Studio without the sidecar, and nothing left that needs syncd's volume.
    label_studio = pod_spec(find(docs, "Deployment", "label-studio"))
    assert not label_studio.get("initContainers") and not any(v["name"].startswith("syncd")
                                                            for v in label_studio["volumes"])
    assert not [d for d in docs if d["kind"] in ("CronJob", "PersistentVolumeClaim")
                and "syncd" in d["metadata"]["name"]]
    # The configuration: a PostgreSQL state from SYNCD_STATE_URL, in Label Studio's database by an explicit yes.
    path = tmp_path / "replicas.yaml"
    path.write_text(find(docs, "ConfigMap", "syncd-config")["data"]["config.yaml"], encoding="utf-8")
    cfg = config_mod.load(str(path))
    assert cfg.state is None and cfg.state_in_label_studio_db and cfg.lease_seconds <= 15
    example = (K8S / "overlays" / "replicas" / "state.env.example").read_text(encoding="utf-8")
    assert re.search(r"^SYNCD_STATE_URL=postgresql://", example, re.M)


def test_kubernetes_secret_files_stay_out_of_git():
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("deploy/kubernetes/base/credentials.env", "deploy/kubernetes/overlays/postgresql/postgres.env",
                 "deploy/kubernetes/overlays/replicas/state.env"):
        assert (REPO / (path + ".example")).is_file()
        result = subprocess.run([git, "check-ignore", "-q", path], cwd=REPO)
        assert result.returncode == 0, f"{path} is not git-ignored"


# ------------------------------------------------------------------ container image


def test_dockerfile_base_user_healthcheck_and_command():
    parser, instructions = dockerfile()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    base = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+(@sha256:[0-9a-f]{64})?", parser.baseimage)
    assert base, f"base image {parser.baseimage!r} is not a pinned python:X.Y.Z-slim-<debian> image"
    minimum = tuple(int(n) for n in re.search(r"(\d+)\.(\d+)", pyproject["project"]["requires-python"]).groups())
    assert (int(base[1]), int(base[2])) >= minimum
    users = [(n, v) for n, (i, v) in enumerate(instructions) if i == "USER"]
    last_run = max(n for n, (i, _) in enumerate(instructions) if i == "RUN")
    assert users and users[-1][0] > last_run, "the image must end as a non-root USER"
    assert users[-1][1].split(":")[0] not in ("root", "0")
    healthcheck = [v for i, v in instructions if i == "HEALTHCHECK"]
    assert len(healthcheck) == 1 and "urllib" in healthcheck[0] and "curl" not in healthcheck[0]
    assert f"127.0.0.1:{DEFAULT_PORT}{LIVENESS_PATH}" in healthcheck[0]
    entrypoint = exec_form([v for i, v in instructions if i == "ENTRYPOINT"][-1])
    cmd = exec_form([v for i, v in instructions if i == "CMD"][-1])
    assert entrypoint == ["syncd"] and cmd == ["run", "--config", CONFIG_PATH]
    copies = [v.split() for i, v in instructions if i == "COPY"]
    assert ["deploy/docker/config.yaml", CONFIG_PATH] in copies


def test_dockerfile_installs_the_package_the_readme_installs():
    parser, instructions = dockerfile()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first_command = re.search(r"```(?:sh|bash|console)?\n(.*?)\n", readme).group(1)
    readme_target = re.search(r"pip install\s+(\S+)", first_command).group(1)
    installs = [v for i, v in instructions if i == "RUN" and "pip install" in v]
    assert len(installs) == 1, installs
    words = shlex.split(installs[0].split("pip install", 1)[1].split("&&")[0])
    targets = [w for w in words if not w.startswith("-")]
    assert len(targets) == 1, words
    target, extras = re.fullmatch(r"([^\[]+)(?:\[([\w,-]+)\])?", targets[0]).groups()
    assert target == readme_target, f"the Dockerfile installs {target}, the README {readme_target}"
    optional = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    extras = set((extras or "").split(","))
    assert extras <= set(optional), extras
    installed = set().union(*(optional[e] for e in extras))
    for needed in ("postgres", "s3", "gcs", "azure"):  # every database and target a deployment may use
        assert set(optional[needed]) <= installed, needed


def dockerignore_matcher(text: str):
    """Docker's .dockerignore rules: Go filepath.Match patterns plus ``**``, ``!`` re-includes,
    the last matching pattern wins, and a pattern that matches a directory matches its contents."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            else:
                regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        rules.append((re.compile(regex), negate))

    def excluded(path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for regex, negate in rules:
            if any(regex.fullmatch(c) for c in candidates):
                result = not negate
        return result

    return excluded


def find_packages(root: Path, include: list[str]) -> list[str]:
    """setuptools' package discovery: directories with an __init__.py whose dotted name matches."""
    found: list[str] = []

    def walk(directory: Path, prefix: str) -> None:
        for child in sorted(directory.iterdir()):
            if child.is_dir() and (child / "__init__.py").is_file():
                if any(fnmatch.fnmatchcase(prefix + child.name, pattern) for pattern in include):
                    found.append(prefix + child.name)
                walk(child, f"{prefix}{child.name}.")

    walk(root, "")
    return found


def test_docker_build_context_holds_the_whole_package(tmp_path):
    """Replays the Dockerfile's COPY lines on the build context .dockerignore leaves, then checks
    that the directory `pip install` runs in holds the same package as the repository."""
    parser, instructions = dockerfile()
    excluded = dockerignore_matcher((REPO / ".dockerignore").read_text(encoding="utf-8"))
    for heavy in ("tests", "examples", "bench", "node_modules", ".git", "syncd/__pycache__/cli.cpython-311.pyc"):
        assert excluded(heavy), f"{heavy} should not be sent to the Docker daemon"
    image = tmp_path / "image"
    workdir = "/"
    for instruction, value in instructions:
        if instruction == "WORKDIR":
            workdir = os.path.join(workdir, value)
        elif instruction == "COPY":
            *sources, dest = value.split()
            assert not any(s.startswith("--") for s in sources), "only plain COPY from the context is replayed"
            dest = os.path.join(workdir, dest)
            for source in sources:
                assert (REPO / source).exists() and not excluded(source), f"COPY {source}: not in the build context"
                files = [REPO / source] if (REPO / source).is_file() else sorted(
                    p for p in (REPO / source).rglob("*") if p.is_file())
                for file in files:
                    relative = file.relative_to(REPO).as_posix()
                    if excluded(relative):
                        continue
                    if (REPO / source).is_file():
                        target = Path(dest) / file.name if dest.endswith("/") or len(sources) > 1 else Path(dest)
                    else:
                        target = Path(dest) / file.relative_to(REPO / source)
                    (image / target.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(file, image / target.relative_to("/"))
        elif instruction == "RUN" and "pip install" in value:
            break
    src = image / workdir.lstrip("/")
    pyproject = tomllib.loads((src / "pyproject.toml").read_text(encoding="utf-8"))
    assert (src / pyproject["project"]["readme"]).is_file(), "pyproject's readme must be in the image"
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(src, include)
    assert sorted(packages) == sorted(find_packages(REPO, include)) and "syncd" in packages
    for package in packages:
        here = {p.relative_to(REPO).as_posix() for p in (REPO / package.replace(".", "/")).glob("*.py")}
        there = {p.relative_to(src).as_posix() for p in (src / package.replace(".", "/")).glob("*.py")}
        assert here == there, package


def test_image_default_config(monkeypatch):
    for name in [n for n in os.environ if n.startswith("SYNCD_")]:
        monkeypatch.delenv(name)
    path = str(DEPLOY / "docker" / "config.yaml")
    cfg = config_mod.load(path)
    assert cfg.target is None and cfg.db is None  # the CLI then asks for --target; db: Label Studio's env
    monkeypatch.setenv("SYNCD_TARGET", "s3://bucket/labels")
    monkeypatch.setenv("SYNCD_DELETE", "true")
    cfg = config_mod.load(path)
    assert cfg.target == "s3://bucket/labels" and cfg.delete is True
    assert cfg.listen == f"0.0.0.0:{DEFAULT_PORT}"  # the HEALTHCHECK asks 127.0.0.1:<default port>
    parser, instructions = dockerfile()
    volumes = [p for i, v in instructions if i == "VOLUME" for p in exec_form(v)]
    assert any(cfg.state.startswith(v.rstrip("/") + "/") for v in volumes)


def test_image_healthcheck_command_asks_syncd_run(ls_db, tmp_path):
    parser, instructions = dockerfile()
    healthcheck = [v for i, v in instructions if i == "HEALTHCHECK"][0]
    argv = exec_form(healthcheck.split("CMD", 1)[1].strip())
    assert argv[0] == "python"
    command = [sys.executable, *argv[1:]]
    daemon = RunningSyncd(tmp_path, f"sqlite:///{ls_db}", str(tmp_path / "out"))
    try:
        daemon.wait_ready()
        url = f"http://127.0.0.1:{daemon.port}{LIVENESS_PATH}"
        ok = subprocess.run(command, env={**os.environ, "SYNCD_HEALTHCHECK_URL": url}, capture_output=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
    finally:
        daemon.stop()
    down = subprocess.run(command, env={**os.environ, "SYNCD_HEALTHCHECK_URL": url}, capture_output=True, timeout=30)
    assert down.returncode != 0, "the health check must fail when syncd does not answer"


# ------------------------------------------------------------------ every command, and the docs


def test_every_deployed_command_is_a_valid_syncd_command_line():
    commands = {f"deploy/systemd/{name}": exec_argv(SYSTEMD / name)[1:] for name in SERVICES}
    parser, instructions = dockerfile()
    commands["Dockerfile"] = [*exec_form([v for i, v in instructions if i == "ENTRYPOINT"][-1])[1:],
                              *exec_form([v for i, v in instructions if i == "CMD"][-1])]
    for name in ("deployment.yaml", "cronjob.yaml"):
        for doc in yaml.safe_load_all((K8S / "base" / name).read_text(encoding="utf-8")):
            for container in pod_spec(doc).get("initContainers", []) + pod_spec(doc)["containers"]:
                if container["image"] == SYNCD_IMAGE:
                    commands[f"deploy/kubernetes/base/{name}"] = container["args"]
    # In deploy/README.md's code blocks: syncd, /usr/local/bin/syncd (drop-ins, cron) and the image's arguments.
    blocks = "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", (DEPLOY / "README.md").read_text(encoding="utf-8"),
                                  re.M | re.S))
    invocation = (r"(?:^|[\s=])(?:/usr/local/bin/syncd|syncd|labelstudio-syncd:[\w.]+) "
                  r"((?:resync|run|check|config)\b.*)$")
    for n, match in enumerate(re.finditer(invocation, blocks, re.M)):
        commands[f"deploy/README.md #{n}: {match.group(0).strip()}"] = shlex.split(re.split(r" #|>", match[1])[0])
    assert len(commands) >= 10, list(commands)
    for where, argv in commands.items():
        parse_cli(argv, where)


def test_deploy_readme_covers_each_way_and_names_real_files():
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    headings = [h.lower() for h in re.findall(r"^##+ (.+)$", readme, re.M)]
    for way in ("systemd", "kubernetes", "container image", "scheduled"):
        assert any(way in h for h in headings), f"no section about {way}: {headings}"
    for path in sorted(set(re.findall(r"\bdeploy/[\w./*@-]*[\w*]", readme))):
        exists = any(REPO.glob(path)) or (REPO / (path + ".example")).exists()  # *.env: made from *.env.example
        assert exists, f"deploy/README.md names {path}, which does not exist"


def test_metrics_are_one_vocabulary_served_by_prometheus_client(ls_db, tmp_path):
    """The names ``--metrics-file`` writes are the names ``/metrics`` serves, and /metrics speaks
    Prometheus' content negotiation (OpenMetrics on request) and gzip."""
    import gzip

    prom = tmp_path / "syncd.prom"
    result = subprocess.run([sys.executable, "-m", "syncd", "resync", "--db", f"sqlite:///{ls_db}", "--target",
                             str(tmp_path / "out"), "--state", str(tmp_path / "s.sqlite3"), "--metrics-file",
                             str(prom)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    file_names = {line.split()[2] for line in prom.read_text().splitlines() if line.startswith("# TYPE")}

    port = free_port()
    server = serve(f"127.0.0.1:{port}", Health(), Metrics(daemon=True))
    try:
        def get(headers: dict) -> tuple[dict, bytes]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
            with urllib.request.urlopen(request, timeout=5) as response:
                return dict(response.headers), response.read()

        headers, body = get({})
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        served = {line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE")}
        headers, body = get({"Accept": "application/openmetrics-text; version=1.0.0"})
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        headers, body = get({"Accept-Encoding": "gzip"})
        assert headers.get("Content-Encoding") == "gzip" and b"syncd_ready" in gzip.decompress(body)
    finally:
        server.shutdown()
    assert file_names and file_names <= served
    assert served - file_names == {"syncd_seconds_behind", "syncd_queue_depth", "syncd_ready", "syncd_projects_held",
                                   "syncd_process_info"}
