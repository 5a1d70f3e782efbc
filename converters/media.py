"""File names Label Studio's exporters derive from a task's media URL (no download)."""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from urllib.parse import parse_qs, unquote, urlparse

__all__ = ["cached_name", "file_name", "is_cloud_uri", "label_basename", "raw_basename", "url_path_basename"]

UPLOAD_PREFIXES = ("/data/upload", "upload/", "/upload/")  # Label Studio's uploaded files
_CLOUD_SCHEMES = ("s3://", "gs://", "azure-blob://", "azure-spi://", "azure://")


def file_name(name: str) -> str:
    """``name`` if it is one file name that stays inside the output folder; ``ValueError`` when
    it is not (empty, ".", "..", a path separator, NUL, more than 255 bytes): names come from
    task data (ids, image URLs, labels), which may hold anything."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name \
            or len(name.encode("utf-8", "surrogatepass")) > 255:
        raise ValueError(f"{name[:80]!r} cannot be a file name in the output")
    return name


def is_cloud_uri(url: str) -> bool:
    return url.lower().startswith(_CLOUD_SCHEMES)


def raw_basename(url: str) -> str:
    """``os.path.basename`` of the URL string as it is in the task data."""
    return posixpath.basename(url)


def cached_name(url: str) -> str:
    """Name Label Studio gives a downloaded http(s)/other URL: ``<md5[:8]>__<basename>``."""
    digest = hashlib.md5(url.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{digest}__{url_path_basename(url)}"


# An http(s) URL whose path urlparse takes as it is: no query, fragment or ";params", no tab or
# line break (urlparse removes those), an ASCII host without brackets (IPv6 and NFKC checks).
_PLAIN_HTTP_URL = re.compile(r"https?://[^/?#;\[\]\t\r\n]*((?:/[^?#;\t\r\n]*)?)\Z")


def url_path_basename(url: str) -> str:
    """``os.path.basename(urlparse(url).path)``; for a plain http(s) URL without urlparse (whose
    cache of 128 URLs only costs time when every task's URL is a new one)."""
    plain = _PLAIN_HTTP_URL.match(url)
    if plain is not None and url[:plain.start(1)].isascii():
        return os.path.basename(plain.group(1))
    return os.path.basename(urlparse(url).path)


def local_files_name(url: str) -> str | None:
    if url.startswith("/data/") and "?d=" in url:
        values = parse_qs(urlparse(url).query).get("d")
        if values:
            return posixpath.basename(values[0])
        return posixpath.basename(unquote(url.split("?d=", 1)[1]))
    return None


def label_basename(url: str) -> str:
    """The file name (with extension) YOLO labels and COCO ``images/`` entries are named after.

    Uploaded files and cloud URIs keep their basename; local-storage files use the basename of
    their ``?d=`` path; any other URL (http, https, relative) gets Label Studio's cache name
    ``<first 8 hex of md5(url)>__<basename>``.
    """
    if url.startswith(UPLOAD_PREFIXES) or is_cloud_uri(url):
        return raw_basename(url)
    local = local_files_name(url)
    if local is not None:
        return local
    return cached_name(url)
