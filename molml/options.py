"""Checks of options (numbers, writable folders), shared by every command-line verb and the
Python API."""

from __future__ import annotations

import json
import numbers
import os
import tempfile
from pathlib import Path
from typing import Any

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
        try:
            check_int(value, name, minimum=1)
        except DataError:
            raise DataError(
                f"{name} must be -1 (one process per CPU core) or an integer >= 1, got {value!r}"
            ) from None


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, as ``taskset`` or a batch
    scheduler sets it), else every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def writable_directory(
    directory: str | Path, problem: str, *, advice: str = "", make: bool = True
) -> Path:
    """``directory`` (made first with ``make``), checked by writing a temporary file there
    before any work, so a long run cannot end unable to write; otherwise a :class:`DataError`
    ``"<problem> (<reason>)<advice>"``."""
    directory = Path(directory)
    try:
        if make:
            directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise DataError(f"{problem} ({exc.strerror or exc}){advice}") from exc
    return directory


def creatable_directory(directory: str | Path, problem: str) -> Path:
    """Check, without making anything, that ``directory`` exists as a writable folder or can
    be made (its nearest existing parent is a writable folder); otherwise a
    :class:`DataError` ``"<problem> (<reason>)"``. For a run that makes its folder only once
    its input is known to be usable, yet refuses an impossible output before any work."""
    directory = Path(directory)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"{problem} ({existing} is a file, not a directory)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"{problem} ({existing} is not writable)")
    return directory


def output_file_folder(output: str | Path, option: str = "--output") -> Path:
    """``output`` (a file to write) whose folder is checked to exist and take files before any
    work; otherwise a :class:`DataError` naming ``option`` and the folder."""
    output = Path(output)
    folder = output.parent
    if not folder.is_dir():
        state = "is a file, not a directory" if folder.exists() else "does not exist"
        raise DataError(f"{option} {output}: directory {folder} {state}")
    writable_directory(folder, f"{option} {output}: directory {folder} is not writable", make=False)
    return output


def same_config(a: Any, b: Any) -> bool:
    """Whether two config values are the same as plain data (key order, tuples and lists
    aside)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def plain_data(value: Any) -> Any:
    """``value`` with the types a weights-only checkpoint cannot hold made plain: paths as
    strings, numpy and pandas values (scalars, arrays, a Series or Index) as Python numbers
    and lists, in dicts (kept as their own type when it is a plain ``dict`` subclass such as
    Lightning's ``AttributeDict``), lists and tuples, recursively; anything else as it is."""
    if isinstance(value, dict):
        items = {plain_data(k): plain_data(v) for k, v in value.items()}
        try:
            return type(value)(items)
        except TypeError:  # e.g. a defaultdict, whose first argument is its factory
            return items
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return tuple(plain_data(v) for v in value)
    if isinstance(value, (list, tuple)):
        return type(value)(plain_data(v) for v in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__.split(".")[0] in ("numpy", "pandas") and hasattr(value, "tolist"):
        return plain_data(value.tolist())
    return value
