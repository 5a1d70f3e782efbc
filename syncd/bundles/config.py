"""The ``bundles:`` section of the config: which export formats to publish, where, how often.

It imports no converter (the configuration stays a leaf of the import graph): format names are
checked against the converters by ``syncd.bundles.build.check_formats`` when a command loads
the configuration (``syncd.session.load_config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncd.errors import ConfigError
from syncd.keys import UnsafeKey, check_key, template_fields
from syncd.values import boolean, check_keys, whole_number

DEFAULT_KEY_TEMPLATE = "exports/{project_id}/{format}"
TEMPLATE_FIELDS = ("project_id", "project_slug", "format")
MANIFEST_NAME = "latest.json"
MAX_KEEP = 1000
MAX_DEBOUNCE = 86400.0
_CONFIG_KEYS = ("formats", "key_template", "keep", "debounce", "zip")


@dataclass
class BundleConfig:
    formats: list[str]  # in the converters' spelling (``format_name``), checked by ``build.check_formats``
    key_template: str = DEFAULT_KEY_TEMPLATE
    keep: int = 3
    debounce: float = 30.0
    zip: bool = False


def parse_bundle_config(raw: dict | list | str | None, where: str = "bundles") -> BundleConfig | None:
    """Validate the ``bundles:`` value of the config file; None when bundles are off.

    Accepts the short form (a list of formats, or one format as a string) and the mapping
    ``{formats, key_template, keep, debounce, zip}``. ``where`` prefixes every message (for
    example ``config.yaml: bundles``). Raises ``ConfigError``.
    """
    if raw is None or raw == "" or raw == []:
        return None
    if isinstance(raw, (list, str)):
        formats = _formats(raw, where)
        cfg = BundleConfig(formats=formats)
    elif isinstance(raw, dict):
        check_keys(raw, _CONFIG_KEYS, where)
        if "formats" not in raw:
            raise ConfigError(f"{where}.formats: missing; list the formats to build, for example [COCO, YOLO]")
        value = raw["formats"]
        if value is None or value == [] or value == "":
            return None
        cfg = BundleConfig(formats=_formats(value, f"{where}.formats"))
        if raw.get("key_template") is not None:
            template = raw["key_template"]
            if not isinstance(template, str):
                raise ConfigError(f"{where}.key_template: must be a string, got {template!r}")
            cfg.key_template = template
        if raw.get("keep") is not None:
            cfg.keep = whole_number(raw["keep"], f"{where}.keep", 1, MAX_KEEP)
        if raw.get("debounce") is not None:
            cfg.debounce = _seconds(raw["debounce"], f"{where}.debounce")
        if raw.get("zip") is not None:
            cfg.zip = boolean(raw["zip"], f"{where}.zip")
    else:
        raise ConfigError(f"{where}: must be a list of formats or a mapping with formats:, "
                          f"keep:, debounce:, key_template:, zip:; got {raw!r}")
    cfg.key_template = validate_bundle_template(cfg.key_template, f"{where}.key_template")
    return cfg


def format_name(name: str) -> str:
    """A format as written by a user (``coco``, ``yolo-obb``) in the converters' spelling."""
    return name.strip().upper().replace("-", "_")


def _formats(value: Any, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"{where}: must be a list of formats (for example [COCO, YOLO]), got {value!r}")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{where}: formats are names such as COCO or YOLO, got {item!r}")
        name = format_name(item)
        if name not in out:
            out.append(name)
    return out


def _seconds(value: Any, where: str) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        number = -1.0
    if not 0 <= number <= MAX_DEBOUNCE:
        raise ConfigError(f"{where}: must be a number of seconds from 0 to {MAX_DEBOUNCE:.0f}, got {value!r}")
    return number


def validate_bundle_template(template: str, where: str = "bundles.key_template") -> str:
    """Check a bundle key template (the folder of one project's bundle of one format).

    Fields: ``{project_id}``, ``{project_slug}``, ``{format}``; ``{project_id}`` and ``{format}``
    are required (two projects may share a title; formats must not share a folder). The rendered
    keys must pass ``keys.check_key``. Returns the template without trailing slashes.
    """
    stripped = template.rstrip("/") if template.strip("/") else template
    names = template_fields(stripped, where, TEMPLATE_FIELDS)
    for required, why in (("project_id", "or projects would overwrite each other's bundles"),
                          ("format", "or formats would overwrite each other's bundles")):
        if required not in names:
            raise ConfigError(f"{where}: {template!r} must contain {{{required}}}, {why}")
    try:
        sample = render_prefix(stripped, 1, "p", "JSON", check=False)
        check_key(f"{sample}/{MANIFEST_NAME}")
    except UnsafeKey as exc:
        raise ConfigError(f"{where}: {template!r} gives unsafe keys: {exc}") from None
    except (ValueError, IndexError, KeyError) as exc:  # a format spec such as {format:q}
        raise ConfigError(f"{where}: {template!r} does not format ({exc})") from None
    return stripped


def render_prefix(template: str, project_id: int, project_slug: str, fmt: str, check: bool = True) -> str:
    """The folder of one project's bundles of one format."""
    key = template.format(project_id=project_id, project_slug=project_slug, format=fmt).rstrip("/")
    if check:
        check_key(key)
    return key
