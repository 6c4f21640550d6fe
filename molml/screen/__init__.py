"""Streaming, resumable batch screening of compound libraries (``molml screen``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from molml._lazy import lazy_attributes

if TYPE_CHECKING:
    from molml.screen.run import screen_library

__all__ = ["screen_library"]


# imported on first use: ``molml screen --help`` reads molml.screen.options alone
__getattr__ = lazy_attributes(__name__, {"screen_library": "molml.screen.run"})
