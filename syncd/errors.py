"""Errors a user can act on.

Every expected failure is raised as a ``SyncdError`` whose message is one line naming the thing
that is wrong and what to do about it; the CLI prints it without a traceback.
"""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for logs
    and error lines that quote a driver's or an SDK's error."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class SyncdError(Exception):
    """An expected failure, reported to the user as one line."""


class ConfigError(SyncdError):
    """The configuration or the command line is wrong (exit code 2)."""


class SourceError(SyncdError):
    """Label Studio's database (or directory) cannot be read."""


class BadTask(SyncdError):
    """One task cannot be turned into a document; the others still sync."""

    def __init__(self, task_id: int, message: str, project_id: int | None = None):
        where = f"task {task_id}" if project_id is None else f"task {task_id} (project {project_id})"
        super().__init__(f"{where}: {message}")
        self.reason = message
        self.task_id = task_id
        self.project_id = project_id


class StoreError(SyncdError):
    """A storage operation failed.

    ``retryable`` is True for failures that may pass (throttling, 5xx, timeouts, connection
    resets) and False for those that will not (missing bucket, access denied, bad key).
    ``fatal`` marks failures that concern the whole target rather than one object, so a run
    stops instead of failing every task one by one.
    """

    def __init__(self, message: str, *, retryable: bool = False, fatal: bool = False,
                 retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.fatal = fatal
        self.retry_after = retry_after
