"""Label Studio's database as a source: the reader (``source``), the connection (``database``)
and its change feeds (SQLite file events in ``source.watch``, PostgreSQL's ``notify``)."""

from syncd.sources.labelstudio.database import Database, connect, default_db_url, mask_url
from syncd.sources.labelstudio.source import LabelStudioSource, TaskRows, User

__all__ = ["Database", "LabelStudioSource", "TaskRows", "User", "connect", "default_db_url", "mask_url"]
