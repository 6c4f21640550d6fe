"""Streaming, resumable batch screening of compound libraries (``molml screen``)."""

from molml.screen.run import screen_library

__all__ = ["screen_library"]
