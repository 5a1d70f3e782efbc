"""The ``syncd`` command line: one module per subcommand, each with ``register(subparsers)``.

A subcommand module only parses its arguments, opens what it needs through ``syncd.session``
and prints; ``main`` turns expected failures into one line and an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys

from syncd import __version__, logs
from syncd.errors import ConfigError, SourceError, StoreError, SyncdError
from syncd.syncer import FatalStoreError

log = logging.getLogger("syncd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    from syncd.cli import check, config, convert, formats, resync, run, status, triggers

    parser = argparse.ArgumentParser(prog="syncd", description="Keeps Label Studio's annotations in "
                                     "cloud storage: one <task_id>.json per labeled task.")
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in (resync, run, check, status, triggers, config, convert, formats):
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(getattr(args, "log_format", None) or "text", getattr(args, "verbose", 0))
    try:
        return args.func(args)
    except (ConfigError, SourceError, FatalStoreError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except StoreError as exc:
        log.error("%s", exc)
        return EXIT_USAGE if exc.fatal else EXIT_FAILED
    except SyncdError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        log.error("interrupted; the next run continues where this one stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
