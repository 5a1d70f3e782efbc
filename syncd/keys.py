"""Object keys: rendered from a template and validated so nothing can escape the target.

The template (default ``{task_id}.json``) may use ``{task_id}``, ``{project_id}`` and
``{project_slug}``. The project title is user-controlled, so it is slugified; the rendered key
is then checked as a whole, so neither the template nor a title can produce ``..``, an absolute
path, a backslash or a control character.
"""

from __future__ import annotations

import re
import string
import unicodedata

from syncd.errors import ConfigError

DEFAULT_TEMPLATE = "{task_id}.json"
TEMPLATE_FIELDS = ("task_id", "project_id", "project_slug")
MAX_KEY_BYTES = 1024  # S3, GCS and Azure all accept at least this much
TMP_DIR = ".syncd-tmp"  # a local target's temporary files: no key may start with it
SYNCD_DIR = ".syncd"  # syncd's own objects in a target (its marker): no key may start with it
MAX_SEGMENT_BYTES = 255  # a file name on every common file system
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode's category Cc, exactly


class UnsafeKey(ValueError):
    """A rendered key is unsafe."""


def slugify(title: str | None, project_id: int) -> str:
    """A filesystem- and URL-safe form of a project title (ASCII letters, digits, dashes)."""
    text = unicodedata.normalize("NFKD", title or "").encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64].strip("-")
    return slug or f"project-{project_id}"


def template_fields(template: str, where: str, allowed: tuple[str, ...] = TEMPLATE_FIELDS) -> list[str]:
    """The ``{fields}`` of a template; a ``ConfigError`` naming ``where`` for a malformed template
    or a field outside ``allowed``."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: {template!r} is not a valid template ({exc})") from None
    for field in fields:
        if field not in allowed:
            raise ConfigError(f"{where}: unknown field {{{field}}} in {template!r}; "
                              f"use {', '.join('{' + f + '}' for f in allowed)}")
    return fields


def validate_template(template: str, key_name: str = "key_template") -> str:
    """Check a key template once, at config time: it renders, its keys are safe (also with the
    longest ids and slugs), and none lands in syncd's own folders."""
    fields = template_fields(template, key_name)
    if "task_id" not in fields:
        raise ConfigError(f"{key_name}: {template!r} must contain {{task_id}}, "
                          "or every task would be written to the same key")
    try:
        check_key(render_key(template, 1, 1, "p", check=False))
        check_key(render_key(template, 2**63 - 1, 2**63 - 1, "p" * 64, check=False))  # the longest key
    except UnsafeKey as exc:
        raise ConfigError(f"{key_name}: {template!r} gives unsafe keys: {exc}") from None
    except (ValueError, IndexError, KeyError) as exc:  # a format spec such as {task_id:q}
        raise ConfigError(f"{key_name}: {template!r} does not format ({exc}); write the fields as "
                          "{task_id}, {project_id} and {project_slug}") from None
    return template


def render_key(template: str, task_id: int, project_id: int | None, project_slug: str,
               check: bool = True) -> str:
    key = template.format(task_id=task_id, project_id=project_id if project_id is not None else "none",
                          project_slug=project_slug)
    if check:
        check_key(key)
    return key


def check_key(key: str) -> str:
    """Raise ``UnsafeKey`` unless ``key`` is a safe relative '/'-separated key."""
    if not key:
        raise UnsafeKey("empty key")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise UnsafeKey(f"key longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise UnsafeKey(f"{key!r} is absolute")
    if "\\" in key:
        raise UnsafeKey(f"{key!r} contains a backslash")
    if _CONTROL.search(key):
        raise UnsafeKey(f"{key!r} contains a control character")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafeKey(f"{key!r} has an empty, '.' or '..' path segment")
        if len(part.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise UnsafeKey(f"{key!r} has a path segment longer than {MAX_SEGMENT_BYTES} bytes")
    if len(parts) > 1 and parts[0] in (TMP_DIR, SYNCD_DIR):
        raise UnsafeKey(f"{key!r} is inside {parts[0]}/, which is reserved for syncd's own files")
    return key


def template_pattern(template: str) -> re.Pattern[str]:
    """A regex matching exactly the keys ``template`` can render, capturing the ids."""
    parts = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name == "task_id":
            parts.append(r"(?P<task_id>\d+)")
        elif name == "project_id":
            parts.append(r"(?P<project_id>\d+|none)")
        elif name == "project_slug":
            parts.append(r"[a-z0-9-]+")
    return re.compile("".join(parts) + r"\Z")


def template_prefix(template: str) -> str:
    """The literal start of every key the template renders (to list less of a bucket)."""
    literal = next(string.Formatter().parse(template), ("", None, None, None))[0]
    return literal.rsplit("/", 1)[0] + "/" if "/" in literal else ""


def join_prefix(prefix: str, key: str) -> str:
    """``prefix/key`` without doubled or leading slashes."""
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key
