"""SIGTERM in a multi-process (DDP) run without a collective inside the signal handler.

Lightning's SIGTERM handler forwards the signal to the other processes and then broadcasts a
flag from rank 0 from inside the handler. A handler runs wherever the main thread happens to
be, so rank 0 can enter that broadcast while another rank waits in a different collective (or
rank 0 itself is between collectives, e.g. in an MLflow database write): both wait forever.
molml stops on SIGTERM at once in every process (:class:`molml.errors.Terminated` raised by its
own handler, which Lightning calls after its own), so the broadcast adds nothing but the hang.
:func:`forward_sigterm_without_broadcast` keeps the forwarding and drops the broadcast.
"""

from __future__ import annotations

from types import FrameType
from typing import Any

from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

LIGHTNING_SIGTERM_NOTIFIER = _SignalConnector._sigterm_notifier_fn
"""Lightning's own notifier (the one with the broadcast), as it was before molml replaced it."""


def _forward_sigterm(self: Any, signum: int, frame: FrameType | None) -> None:
    """Lightning's SIGTERM notifier (forward the signal to the processes this one launched,
    once; note it) without its ``dist.broadcast``."""
    if not self.received_sigterm:
        launcher = self.trainer.strategy.launcher
        if launcher is not None:
            launcher.kill(signum)
    self.received_sigterm = True


def forward_sigterm_without_broadcast() -> None:
    """Install :func:`_forward_sigterm` as Lightning's SIGTERM notifier (idempotent; every
    Trainer made afterwards uses it)."""
    _SignalConnector._sigterm_notifier_fn = _forward_sigterm
