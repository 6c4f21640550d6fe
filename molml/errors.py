"""Typed errors raised by molml. Each names the file, row or column it is about."""

from __future__ import annotations

import argparse
import functools
import inspect
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

#: the status of a molecule whose prediction is NaN or infinite
NON_FINITE = "non-finite prediction"


class MolmlError(Exception):
    """Base class of all molml errors."""


class InvalidMoleculeError(MolmlError, ValueError):
    """A molecule could not be parsed, standardized or featurized."""


class DataError(MolmlError, ValueError):
    """Input data is missing, malformed or inconsistent (names the file/row/column)."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose usage errors raise :class:`DataError`, so they print as one
    line with exit code 2, like every molml verb (see :func:`run_command`). Options must be
    spelled out: an abbreviation is an unknown option, not a guess."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("epilog", EXIT_CODES_HELP)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:
        raise DataError(message)


class CheckpointError(MolmlError, ValueError):
    """A file is not a loadable molml checkpoint."""


class TrainingError(MolmlError, RuntimeError):
    """Training cannot go on (for example, the loss became NaN or infinite)."""


class PredictorError(MolmlError, ValueError):
    """A trained model was asked for something it cannot do (e.g. an embedding of a baseline
    ensemble)."""


class ExportError(MolmlError, RuntimeError):
    """A model cannot be exported, or its export does not reproduce its predictions."""


EXIT_FAILURE = 1
"""Exit code of a command that failed for any other reason."""
EXIT_BAD_INPUT = 2
"""Exit code for bad input or usage: a :class:`DataError`, :class:`InvalidMoleculeError` or
:class:`PredictorError`."""
EXIT_CHECKPOINT = 3
"""Exit code for a :class:`CheckpointError`."""

EXIT_CODES_HELP = (
    "exit codes: 0 success; 2 bad input or usage (data, molecules, arguments); "
    "3 checkpoint cannot be loaded; 130 stopped by Ctrl-C; 143 stopped by SIGTERM; 1 any "
    "other error. Errors "
    "print one line "
    "'molml <verb>: error: <message>'; add --debug anywhere for the traceback."
)

_WORKER_TRACEBACK = "Original Traceback (most recent call last):"
_RERAISED = re.compile(r"^((?:\w+\.)*)(\w+): (.*)$")  # "molml.errors.DataError: message"

T = TypeVar("T")


def run_command(prog: str, command: Callable[[], T], *, debug: bool = False) -> T:
    """Run one ``molml`` verb; an error becomes one stderr line and a documented exit code.

    The line is ``<prog>: error: <message>`` (``prog``: ``molml fit``, ``molml screen``, ...);
    a molml error wrapped by Lightning or re-raised from a worker process prints its own
    message. ``debug`` adds the traceback. In a distributed run the other processes
    (:func:`other_process`) stay quiet about an interrupt, about a peer that went away (the
    first process names the cause) and, on the first node, about bad input, which they read
    alike, so that the line is printed once; other errors name the process.
    """
    other = other_process()
    _SIGTERM_RECEIVED.clear()
    _SIGINT_RECEIVED.clear()
    _DEFERRED.clear()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm) if main_thread else None
    previous_int = signal.signal(signal.SIGINT, _interrupt_on_sigint) if main_thread else None
    try:
        return command()
    except (KeyboardInterrupt, SystemExit) as exc:
        # Lightning turns an interrupt into SystemExit(1) after its graceful shutdown
        stop = "SIGTERM" if isinstance(exc, Terminated) else stop_signal()
        if stop is None:
            raise
        _exit_stopped(prog, stop, quiet=other is not None)
    except Exception as exc:  # noqa: BLE001 - every failure of a verb ends here
        stop = stop_signal()
        if stop is not None:
            # the stop's interrupt was replaced by an error it caused on its way out (a file
            # writer's cleanup, a library wrapping it): the verb was still stopped
            if debug:
                traceback.print_exc()
            _exit_stopped(prog, stop, quiet=other is not None)
        code = exit_code(exc)
        if debug:
            traceback.print_exc()
        if other is None:
            print(f"{prog}: error: {error_message(exc)}", file=sys.stderr)
        elif debug or not (code == EXIT_BAD_INPUT and _on_first_node() or _peer_gone(exc)):
            print(f"{prog} ({other}): error: {error_message(exc)}", file=sys.stderr)
        raise SystemExit(code) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
        # a later verb or study in this process (a notebook, a test) starts unstopped
        _SIGTERM_RECEIVED.clear()
        _SIGINT_RECEIVED.clear()
        _DEFERRED.clear()


def _exit_stopped(prog: str, stop: str, *, quiet: bool) -> NoReturn:
    """End a verb stopped by ``stop`` (``"SIGTERM"`` or ``"Ctrl-C"``) with its exit code,
    saying so unless ``quiet`` (a distributed run's other processes)."""
    if not quiet:
        print(f"{prog}: stopped by {stop}; anything already saved is kept", file=sys.stderr)
    raise SystemExit(EXIT_TERMINATED if stop == "SIGTERM" else EXIT_INTERRUPTED) from None


PEER_GONE = ("Connection closed by peer", "Connection reset by peer")
"""What gloo says in a process whose peer exited: the first process prints the real cause."""


def _peer_gone(exc: BaseException) -> bool:
    """Whether ``exc``, or the exception it was explicitly raised from (``raise ... from``,
    followed to its root), only says another process of the distributed run went away."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if any(text in str(link) for text in PEER_GONE):
            return True
        link = link.__cause__
    return False


def other_process() -> str | None:
    """``None`` in the first process of a distributed run (global rank 0) and outside one
    (``WORLD_SIZE`` unset or 1); in any other process its name (``rank 3`` from torchrun's
    ``RANK``, else ``local rank 1 of node 0`` from Lightning's ``LOCAL_RANK`` and
    ``NODE_RANK``)."""
    env = os.environ
    if env.get("WORLD_SIZE", "1") in ("", "0", "1"):
        return None
    if env.get("RANK", "0") != "0":
        return f"rank {env['RANK']}"
    if "RANK" not in env and (env.get("LOCAL_RANK", "0"), env.get("NODE_RANK", "0")) != ("0", "0"):
        return f"local rank {env.get('LOCAL_RANK', '0')} of node {env.get('NODE_RANK', '0')}"
    return None


def _on_first_node() -> bool:
    """Whether this process runs on the node of global rank 0 (which reads the same files)."""
    return os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")) in ("", "0")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch scheduler) stops a verb as Ctrl-C does: what was
    saved is kept, and the exit code is not 0."""


EXIT_TERMINATED = 143  # 128 + SIGTERM, as shells report a process ended by it
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C


_SIGTERM_RECEIVED: list[int] = []  # the signals received by this process's verb


def _interrupt_on_sigterm(signum: int, frame: Any) -> None:
    if _SIGTERM_RECEIVED:
        # the first one's exception was swallowed (raised inside a garbage-collection or
        # weakref callback, which Python ignores) or is held back by a write that must not be
        # cut (deferred_stops): a second SIGTERM ends the process the default way
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    _SIGTERM_RECEIVED.append(signum)
    _quiet_worker_teardown()
    if _DEFERRING:
        _DEFERRED.append(Terminated)
        return
    raise Terminated


_SIGINT_RECEIVED: list[int] = []


def _interrupt_on_sigint(signum: int, frame: Any) -> None:
    """Python's own Ctrl-C (a ``KeyboardInterrupt``), noted so that the verb exits 130 also
    when Lightning has turned the interrupt into ``SystemExit(1)``. Inside a
    :func:`deferred_stops` block the first Ctrl-C waits for the block; a second one does not."""
    _SIGINT_RECEIVED.append(signum)
    _quiet_worker_teardown()
    if _DEFERRING and KeyboardInterrupt not in _DEFERRED:
        _DEFERRED.append(KeyboardInterrupt)
        return
    raise KeyboardInterrupt


_DEFERRING: list[bool] = []  # one entry per open deferred_stops block
_DEFERRED: list[type[KeyboardInterrupt]] = []  # the interrupts held back by those blocks


@contextmanager
def deferred_stops() -> Iterator[None]:
    """Hold back a SIGTERM or Ctrl-C received inside the block (a checkpoint being written)
    until the block ends, then raise it: the write finishes instead of being cut midway, or
    its cleanup turning the interrupt into another error. A second SIGTERM still ends the
    process at once, and a second Ctrl-C interrupts the block. Outside a verb (no molml
    handler installed) signals act as before, and outside the main thread (which alone
    receives signals) the block holds nothing back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _DEFERRING.append(True)
    try:
        yield
    finally:
        _DEFERRING.pop()
        if not _DEFERRING and _DEFERRED:
            stop = _DEFERRED[0]
            _DEFERRED.clear()
            raise stop


C = TypeVar("C", bound=type)


def finishing_before_a_stop(cls: C) -> C:
    """Class decorator: every method that ``cls``'s direct base defines (a database client's
    reads and writes) runs in ``cls`` inside :func:`deferred_stops`, so a stop that lands in
    one takes effect when it returns. A stop that cut SQLAlchemy midway left its session half
    closed and SQLite locked: what the stopped verb then wrote (a failed trial, a killed run)
    waited for the lock and failed."""
    base = cls.__bases__[0]
    for name, method in vars(base).items():
        if inspect.isfunction(method) and not name.startswith("__") and name not in vars(cls):
            setattr(cls, name, _deferring(method))
    return cls


def _deferring(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> T:
        with deferred_stops():
            return method(*args, **kwargs)

    return call


def _quiet_worker_teardown() -> None:
    """Once the verb is stopping, drop what a data loader's finalizer raises about its
    workers, which the same signal (sent to the process group) has ended: Python would print
    it as an ignored exception with a traceback. Anything else is printed as before."""
    previous = sys.unraisablehook
    if getattr(previous, "_molml_stopping", False):
        return

    def hook(unraisable: Any) -> None:
        owner = getattr(unraisable.object, "__qualname__", "")
        if not (owner.endswith("DataLoaderIter.__del__") and _is_worker_death(unraisable)):
            previous(unraisable)

    hook._molml_stopping = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _is_worker_death(unraisable: Any) -> bool:
    """A data-loader worker killed by a signal or gone (torch's wording), or a stop signal."""
    exc = unraisable.exc_value
    return isinstance(exc, (KeyboardInterrupt, ConnectionError, EOFError)) or (
        isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc)
    )


def stop_signal() -> str | None:
    """The stop the running verb received: ``"SIGTERM"``, ``"Ctrl-C"`` or ``None``."""
    if _SIGTERM_RECEIVED:
        return "SIGTERM"
    return "Ctrl-C" if _SIGINT_RECEIVED else None


def sigterm_received() -> bool:
    """Whether the running verb received SIGTERM (loops that can stop between steps check it,
    in case the exception raised for it was swallowed)."""
    return bool(_SIGTERM_RECEIVED)


def _default_sigterm_in_child() -> None:
    """Forked workers (featurization pools) end on SIGTERM as usual: a pool terminates its
    idle workers with it, which must not print a ``Terminated`` traceback per worker."""
    if signal.getsignal(signal.SIGTERM) is _interrupt_on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_sigterm_in_child)


def exit_code(exc: BaseException) -> int:
    """The documented exit code for ``exc`` (see :data:`EXIT_CODES_HELP`)."""
    name = _describe(exc)[0]
    if name == CheckpointError.__name__:
        return EXIT_CHECKPOINT
    if name in (DataError.__name__, InvalidMoleculeError.__name__, PredictorError.__name__):
        return EXIT_BAD_INPUT
    if isinstance(exc, argparse.ArgumentError):  # a usage error of a parser that raises
        return EXIT_BAD_INPUT
    return EXIT_FAILURE


def error_message(exc: BaseException) -> str:
    """One line: the molml error's own message, else ``<type>: <message>``."""
    return _describe(exc)[1]


def _describe(exc: BaseException) -> tuple[str | None, str]:
    """The class name of the molml error behind ``exc`` (``None`` if none) and one message line.

    The molml error may be wrapped (raised from or during another exception) or re-raised from
    a worker process, whose message then holds the worker's traceback and the original error.
    """
    error = next((e for e in _chain(exc) if isinstance(e, MolmlError)), None)
    source = exc if error is None else error
    name = None if error is None else type(error).__name__
    text = str(source)
    if _WORKER_TRACEBACK in text:
        text = text.strip().splitlines()[-1]
        if match := _RERAISED.match(text):
            name = match[2] if match[1] == "molml.errors." else name
            text = match[3]
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    if name is None and not isinstance(source, argparse.ArgumentError):
        line = f"{type(source).__name__}: {line}" if line else type(source).__name__
    return name, line


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is not None and all(current is not s for s in seen):
            seen.append(current)
            pending += [current.__cause__, current.__context__]
    return seen
