"""Checks of numeric options, shared by every command-line verb and the Python API."""

from __future__ import annotations

import numbers

from molml.errors import DataError


def check_int(value: object, name: str, *, minimum: int = 0, allow_none: bool = False) -> None:
    """Raise :class:`DataError` unless ``value`` is an integer ``>= minimum`` (or None when
    ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_jobs(value: object, name: str) -> None:
    """Raise :class:`DataError` unless ``value`` is a number of processes: ``-1`` (all cores)
    or an integer ``>= 1``."""
    if value != -1:
        check_int(value, name, minimum=1)
