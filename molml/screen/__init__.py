"""Streaming, resumable batch screening of compound libraries (``molml screen``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from molml.screen.run import screen_library

__all__ = ["screen_library"]


def __getattr__(name: str) -> Any:
    # imported on first use: ``molml screen --help`` reads molml.screen.options alone
    if name == "screen_library":
        from molml.screen.run import screen_library

        return screen_library
    raise AttributeError(f"module 'molml.screen' has no attribute {name!r}")
