"""Parsing config values: one wording for every key's error ("must be a whole number ...")."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from syncd.errors import ConfigError


def whole_number(value: Any, where: str, low: int, high: int | None) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < low or (high is not None and number > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ConfigError(f"{where}: must be a whole number {span}, got {value!r}")
    return number


def boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise ConfigError(f"{where}: must be true or false, got {value!r}")


def seconds(value: Any, where: str, low: float, high: float, *, off: bool = False) -> float:
    """A number of seconds from ``low`` to ``high``; with ``off``, also 0 (the feature off)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not (low <= number <= high or (off and number == 0)):
        span = f"from {low:g} to {high:g}"
        raise ConfigError(f"{where}: must be " + (f"0 (off) or a number of seconds {span}" if off else
                                                  f"a number of seconds {span}") + f", got {value!r}")
    return number


def check_keys(keys: Iterable[Any], known: tuple[str, ...] | list[str], where: str) -> None:
    """Raise ``ConfigError`` for the first of ``keys`` not ``known``, suggesting the closest."""
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key {key!r}; {hint}")
