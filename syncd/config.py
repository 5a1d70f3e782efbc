"""The configuration: a YAML file, ``${ENV_VAR}`` expansion, and command-line overrides.

It only reads and checks values; ``syncd.session`` turns a ``Config`` into running parts.

Every error names the key and says what is wrong, e.g.
``config.yaml: transfers: must be a whole number from 1 to 256, got 'many'``.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from syncd.bundles.config import BundleConfig, parse_bundle_config
from syncd.errors import ConfigError
from syncd.keys import DEFAULT_TEMPLATE, validate_template
from syncd.ops.notify_config import NotifyConfig, parse_notify_config
from syncd.values import boolean, check_keys, seconds, whole_number

BACKEND_SECTIONS = ("s3", "gcs", "azure")


@dataclass
class Config:
    db: str | None = None  # None: the database Label Studio itself would use (its env vars)
    target: str | None = None
    projects: list[int] = field(default_factory=list)
    key_template: str = DEFAULT_TEMPLATE
    state: str | None = None  # None: $XDG_STATE_HOME/syncd/<target>.sqlite3
    predictions: str = "full"
    delete: bool = False
    max_delete: int | None = None
    transfers: int = 16  # measured: bench/bench_s3.py --sweep (BENCHMARKS.md)
    batch_size: int = 500
    build_workers: int | str = "auto"  # processes building documents in big passes; auto: one per CPU, up to 4
    log_format: str = "text"
    listen: str | None = "127.0.0.1:9187"  # syncd run: /healthz, /readyz, /metrics; empty: off
    poll_interval: float = 1.0  # syncd run: seconds between polls when no file event wakes it
    reconcile_interval: float = 30.0  # syncd run: seconds between fingerprint reconciliations
    audit_interval: float = 3600.0  # syncd run: seconds between audits of the target's listing; 0: never
    state_schema: str = "syncd"  # PostgreSQL state: the schema syncd keeps its tables in
    state_in_label_studio_db: bool = False  # PostgreSQL state: allowed in Label Studio's own database
    lease_seconds: float = 10.0  # PostgreSQL state: a dead process's projects are taken over after this
    s3: dict[str, Any] = field(default_factory=dict)
    gcs: dict[str, Any] = field(default_factory=dict)
    azure: dict[str, Any] = field(default_factory=dict)
    bundles: BundleConfig | None = None  # export formats published per project
    notify: NotifyConfig | None = None  # webhooks for events, a heartbeat URL (syncd.ops.notify)
    source_file: str | None = None  # where it was read from, for messages

    def backend_options(self, scheme: str) -> dict[str, Any]:
        section = {"s3": "s3", "gs": "gcs", "azure": "azure", "az": "azure"}.get(scheme)
        return dict(getattr(self, section)) if section else {}


KEYS = [f.name for f in fields(Config) if f.name != "source_file"]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, where: str) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string of ``value``."""
    if isinstance(value, str):
        def sub(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable {name} is not set; set it or write "
                              f"${{{name}:-default}}")
        return _ENV.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}") for k, v in value.items()}
    return value


CONFIG_ENV = "SYNCD_CONFIG"  # a config file to use when --config is not given


def config_search_path() -> list[Path]:
    """Where syncd looks for a config file when ``--config`` is not given, in order."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path("syncd.yaml"), Path(xdg) / "syncd" / "config.yaml", Path("/etc/syncd/config.yaml")]


def find_config() -> str | None:
    """The config file to read without ``--config``: ``$SYNCD_CONFIG``, else the first file of
    ``config_search_path()`` that exists; None: the defaults (and the command line)."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        return named
    return next((str(path) for path in config_search_path() if path.is_file()), None)


SECRET_NAME = re.compile(r"(secret|password|passwd|token|credential|connection_string|sas|private|api_key|"
                         r"access_key)", re.I)


def masked(cfg: Config) -> dict[str, Any]:
    """Every key with its effective value, secrets masked (``syncd config``): values of keys
    that name a secret, passwords in URLs, and the path and query of notification URLs (a
    webhook's path is often its secret)."""
    def mask(value: Any, name: str, path: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return {k: mask(v, str(k), (*path, str(k))) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [mask(v, name, path) for v in value]
        if value in (None, "") or isinstance(value, bool):
            return value
        if SECRET_NAME.search(name) and not name.endswith(("_env", "_file")):
            return "***"
        if isinstance(value, str) and "://" in value:
            from syncd.sources.labelstudio.database import mask_url

            if path and path[0] == "notify":
                scheme, _, rest = value.partition("://")
                host = rest.split("/", 1)[0].rpartition("@")[2]
                return f"{scheme}://{host}/***" if "/" in rest.strip("/") or "?" in rest else value
            return mask_url(value)
        return value

    values: dict[str, Any] = {}
    for key in KEYS:
        value = getattr(cfg, key)
        if is_dataclass(value):
            value = asdict(value)
        values[key] = mask(value, key, (key,))
    return values


def load(path: str | None) -> Config:
    """Read a config file (or return the defaults when ``path`` is None)."""
    if path is None:
        return Config()
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist; copy config.example.yaml there or "
                          "pass --config with the right path") from None
    except OSError as exc:
        raise ConfigError(f"config file {p} cannot be read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {p} is not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must be a mapping of keys to values (see config.example.yaml)")
    return from_mapping(raw, str(p))


def from_mapping(raw: dict[str, Any], origin: str = "config") -> Config:
    cfg = Config(source_file=origin)
    for key, value in raw.items():
        where = f"{origin}: {key}"
        check_keys([key], KEYS, origin)
        value = expand_env(value, where)
        setattr(cfg, key, _coerce(key, value, where))
    validate(cfg, origin)
    return cfg


def _coerce(key: str, value: Any, where: str) -> Any:
    if key in ("db", "target", "state"):
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string (a URL or a path), got {value!r}")
        return value
    if key == "listen":
        if value is None or value == "":
            return None
        text = str(value)
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{where}: must be HOST:PORT (for example 127.0.0.1:9187), got {value!r}")
        return text
    if key in ("poll_interval", "reconcile_interval"):
        return seconds(value, where, 0.05, 86400)
    if key == "lease_seconds":
        return seconds(value, where, 3, 300)
    if key == "state_schema":
        if not isinstance(value, str) or not value.replace("_", "").isalnum() or value[:1].isdigit():
            raise ConfigError(f"{where}: must be a schema name of letters, digits and underscores, got {value!r}")
        return value
    if key == "state_in_label_studio_db":
        return boolean(value, where)
    if key == "audit_interval":
        return seconds(value, where, 1, 604800, off=True)
    if key in ("key_template", "predictions", "log_format"):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, got {value!r}")
        return value
    if key == "projects":
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        return [whole_number(v, f"{where}", 1, None) for v in items]
    if key == "delete":
        return boolean(value, where)
    if key == "max_delete":
        return None if value is None or value == "" else whole_number(value, where, 0, None)
    if key == "transfers":
        return whole_number(value, where, 1, 256)
    if key == "batch_size":
        return whole_number(value, where, 1, 10000)
    if key == "build_workers":
        if value is None or value == "auto":
            return "auto"
        try:
            return whole_number(value, where, 0, 64)
        except ConfigError:
            raise ConfigError(f"{where}: must be auto or a whole number from 0 to 64, got {value!r}") from None
    if key == "bundles":
        return parse_bundle_config(value, where)
    if key == "notify":
        return parse_notify_config(value, where)
    if key in BACKEND_SECTIONS:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a mapping of {key} options, got {value!r}")
        return dict(value)
    raise AssertionError(key)


def validate(cfg: Config, origin: str = "config") -> Config:
    if cfg.predictions not in ("full", "ids"):
        raise ConfigError(f"{origin}: predictions: must be 'full' (prediction objects) or 'ids' "
                          f"(Label Studio's bare ids), got {cfg.predictions!r}")
    if cfg.log_format not in ("text", "json"):
        raise ConfigError(f"{origin}: log_format: must be 'text' or 'json', got {cfg.log_format!r}")
    validate_template(cfg.key_template, f"{origin}: key_template")
    return cfg
