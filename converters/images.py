"""Downloading the images of tasks (``syncd convert --download-images``) and reading their size.

Label Studio's ``*_WITH_IMAGES`` exports (and VOC) copy every task's image into ``images/`` and
read the image's size (COCO ``width``/``height``) and channel count (VOC ``depth``) from the
file. ``ImageFetcher`` does the same for images we can fetch:

* ``http://`` and ``https://`` URLs, with urllib;
* cloud URIs (``s3://bucket/key``, ``gs://bucket/key``, ``azure-blob://container/key``) through
  the ``read_cloud`` function the caller gives (syncd gives one that reads through its storage
  adapters: ``syncd.stores.fetch.CloudReader``); without one they fail with a warning;
* Label Studio's own ``/data/upload/...`` and ``/data/local-files/...`` paths cannot be fetched
  without Label Studio: they fail with a warning.

Images are fetched on a bounded thread pool while the conversion goes on: ``prefetch`` reads a
window of tasks ahead, so memory does not grow with the number of tasks. Every image that fails
gives one warning line. Sizes come from the PNG/JPEG/GIF/BMP/WebP header (no Pillow).
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import threading
import urllib.error
import urllib.request
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .media import is_cloud_uri, label_basename

__all__ = ["ImageFetcher", "ImageInfo", "image_size", "prefetch"]

MAX_IMAGE_BYTES = 1 << 30
_HEADER_BYTES = 1 << 16
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageInfo:
    name: str  # file name under images/
    width: int | None
    height: int | None
    channels: int | None  # as Pillow's len(image.getbands())


class FetchError(Exception):
    pass


# ------------------------------------------------------------------------------ image headers

def image_size(head: bytes) -> tuple[int, int, int] | None:
    """(width, height, channels) from the first bytes of a PNG, JPEG, GIF, BMP or WebP file.

    ``channels`` is what Pillow's ``len(image.getbands())`` gives (palette images: 1)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 26:
        width, height = struct.unpack(">II", head[16:24])
        color_type = head[25]
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color_type)
        return (width, height, channels) if channels else None
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return width, height, 1  # palette
    if head.startswith(b"BM") and len(head) >= 30:
        width, height = struct.unpack("<ii", head[18:26])
        bits = struct.unpack("<H", head[28:30])[0]
        channels = {1: 1, 4: 1, 8: 1, 24: 3, 32: 3}.get(bits)  # Pillow opens 32-bit BMPs as RGB
        return (width, abs(height), channels) if channels else None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            width, height = struct.unpack("<HH", head[26:30])
            return width & 0x3FFF, height & 0x3FFF, 3
        if kind == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            alpha = (bits >> 28) & 1
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 4 if alpha else 3
        if kind == b"VP8X":
            alpha = (head[20] >> 4) & 1
            width = int.from_bytes(head[24:27], "little") + 1
            height = int.from_bytes(head[27:30], "little") + 1
            return width, height, 4 if alpha else 3
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int, int] | None:
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in _SOF:
            if pos + 10 > n:
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            components = data[pos + 9]
            return width, height, {1: 1, 3: 3, 4: 4}.get(components, components)
        pos += 2 + length
    return None


# ------------------------------------------------------------------------------ fetching

def _safe_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise FetchError(f"no usable file name in the URL ({name!r})")
    return name


class ImageFetcher:
    """Fetches images into ``images_dir`` on a bounded thread pool; ``fetch(url)`` returns a
    future of ``ImageInfo``, raising ``FetchError`` (or ``OSError``) when it fails."""

    def __init__(self, images_dir: Path, workers: int = 8, timeout: float = 30.0,
                 opener: Callable[[str], Any] | None = None,
                 read_cloud: Callable[[str], bytes] | None = None) -> None:
        self.images_dir = Path(images_dir)
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="converters-images")
        self._futures: OrderedDict[str, Future] = OrderedDict()  # recent URLs (bounded)
        self._lock = threading.Lock()
        self._opener = opener  # tests: url -> file-like object
        self._read_cloud = read_cloud  # cloud URI -> the object's bytes (raises with a reason)

    def fetch(self, url: str) -> Future:
        with self._lock:
            future = self._futures.get(url)
            if future is None:
                future = self._pool.submit(self._fetch, url)
                self._futures[url] = future
                while len(self._futures) > 4096:
                    self._futures.popitem(last=False)
            else:
                self._futures.move_to_end(url)
            return future

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fetch(self, url: str) -> ImageInfo:
        name = _safe_name(label_basename(url))
        lower = url.lower()
        if lower.startswith(("http://", "https://")):
            source = self._open_http(url)
        elif is_cloud_uri(url):
            source = self._open_cloud(url)
        elif url.startswith("/data/"):
            raise FetchError("a Label Studio upload or local-storage path; only Label Studio can serve it "
                             "(http(s) URLs and cloud URIs are fetched)")
        else:
            raise FetchError("not an http(s) URL or a cloud URI")
        return self._save(source, name)

    def _open_http(self, url: str) -> Any:
        if self._opener is not None:
            return self._opener(url)
        request = urllib.request.Request(url, headers={"User-Agent": "syncd-convert"})
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 - http(s) only
        except urllib.error.HTTPError as exc:
            raise FetchError(f"HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise FetchError(str(exc.reason)) from None
        except (TimeoutError, OSError, ValueError) as exc:
            raise FetchError(str(exc) or type(exc).__name__) from None

    def _open_cloud(self, url: str) -> Any:
        if self._read_cloud is None:
            raise FetchError("cloud images need a reader of cloud storage (syncd convert gives one)")
        try:
            return io.BytesIO(self._read_cloud(url))
        except Exception as exc:  # noqa: BLE001 - any reason becomes this image's warning
            raise FetchError(" ".join(str(exc).split()) or type(exc).__name__) from None

    def _save(self, source: Any, name: str) -> ImageInfo:
        target = self.images_dir / name
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=self.images_dir)
        head = b""
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, source:
                while True:
                    try:
                        block = source.read(_CHUNK)
                    except (TimeoutError, OSError, ValueError) as exc:
                        raise FetchError(f"download interrupted ({exc or type(exc).__name__})") from None
                    if not block:
                        break
                    size += len(block)
                    if size > MAX_IMAGE_BYTES:
                        raise FetchError(f"larger than {MAX_IMAGE_BYTES >> 20} MB")
                    if len(head) < _HEADER_BYTES:
                        head += block[:_HEADER_BYTES - len(head)]
                    out.write(block)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        found = image_size(head)
        if found is None:
            return ImageInfo(name, None, None, None)
        width, height, channels = found
        return ImageInfo(name, width, height, channels)


def image_url(task: object, data_key: str) -> str | None:
    """The image URL a converter uses for this task (the last one of a list)."""
    if not isinstance(task, dict):
        return None
    data = task.get("data")
    if not isinstance(data, dict):
        return None
    value = data.get(data_key)
    if isinstance(value, list):
        value = value[-1] if value else None
    return value if isinstance(value, str) and value else None


def prefetch(tasks: Iterable[Any], fetcher: ImageFetcher, data_key: str,
             on_failure: Callable[[object, str, str], None], window: int = 64
             ) -> tuple[Iterator[Any], Callable[[str], ImageInfo | None]]:
    """(tasks, in order, each once its image is fetched; ``info(url)`` for the tasks yielded).

    ``on_failure(task_id, url, reason)`` is called once per task whose image failed."""
    done: OrderedDict[str, ImageInfo | None] = OrderedDict()

    def info(url: str) -> ImageInfo | None:
        return done.get(url)

    def generate() -> Iterator[Any]:
        pending: deque[tuple[Any, str | None, Future | None]] = deque()

        def release() -> Any:
            task, url, future = pending.popleft()
            if future is not None and url is not None:
                try:
                    done[url] = future.result()
                except (FetchError, OSError) as exc:
                    done[url] = None
                    task_id = task.get("id", "?") if isinstance(task, dict) else "?"
                    on_failure(task_id, url, str(exc) or type(exc).__name__)
                done.move_to_end(url)
                while len(done) > 4 * window:
                    done.popitem(last=False)
            return task

        for task in tasks:
            url = image_url(task, data_key)
            pending.append((task, url, fetcher.fetch(url) if url else None))
            if len(pending) >= window:
                yield release()
        while pending:
            yield release()

    return generate(), info
