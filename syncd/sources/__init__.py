"""Sources of labeled tasks, chosen by the ``db`` URL: Label Studio's database
(``sqlite://``, ``postgresql://``, or Label Studio's own settings when none is given) or a
directory of Label Studio task files (``dir://``). ``base`` defines the interface."""

from __future__ import annotations

from syncd.document import DocumentOptions
from syncd.sources.base import Cursor, Project, Source, Wake


def is_directory(url: str | None) -> bool:
    return bool(url) and url.lower().startswith("dir://")


def open_source(url: str | None, *, batch_size: int = 500, options: DocumentOptions | None = None,
                one_shot: bool = False, build_workers: int | None = 0) -> Source:
    """The source for ``url``. ``one_shot``: a run that reads once (``resync``, ``check``)
    waits a little for files still being written instead of leaving them for the next scan.
    ``build_workers``: processes that build a Label Studio database's documents in big passes
    (None: one per CPU, up to 4; 0: none)."""
    if is_directory(url):
        from syncd.sources.directory import DirectorySource

        return DirectorySource.from_url(url, wait_settled=one_shot)
    from syncd.sources.labelstudio import LabelStudioSource, connect
    from syncd.sources.labelstudio.builders import default_workers

    workers = default_workers() if build_workers is None else build_workers
    return LabelStudioSource(connect(url), batch_size=batch_size, options=options, workers=workers)


__all__ = ["Cursor", "Project", "Source", "Wake", "is_directory", "open_source"]
