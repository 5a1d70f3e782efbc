"""Sources of labeled tasks, chosen by the ``db`` URL: Label Studio's database
(``sqlite://``, ``postgresql://``, or Label Studio's own settings when none is given) or a
directory of Label Studio task files (``dir://``). ``base`` defines the interface."""

from __future__ import annotations

from syncd.document import DocumentOptions
from syncd.sources.base import Cursor, Project, Source, Wake


def is_directory(url: str | None) -> bool:
    return bool(url) and url.lower().startswith("dir://")


def open_source(url: str | None, *, batch_size: int = 500, options: DocumentOptions | None = None,
                one_shot: bool = False) -> Source:
    """The source for ``url``. ``one_shot``: a run that reads once (``resync``, ``check``)
    waits a little for files still being written instead of leaving them for the next scan."""
    if is_directory(url):
        from syncd.sources.directory import DirectorySource

        return DirectorySource.from_url(url, wait_settled=one_shot)
    from syncd.sources.labelstudio import LabelStudioSource, connect

    return LabelStudioSource(connect(url), batch_size=batch_size, options=options)


__all__ = ["Cursor", "Project", "Source", "Wake", "is_directory", "open_source"]
