"""The project's error types (one base for the loader and the generator), and how errors quote a user's file.

A label file may be a symlink to something unrelated (a key, a password file); an error that echoes the line it
could not parse would print that secret. Every error that quotes file content goes through `excerpt`.
"""

from __future__ import annotations

EXCERPT_CHARS = 24


def excerpt(text: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """`text`'s first `limit` characters, repr-escaped, with the full length when cut: "'0 0.5 x...' (61 chars)"."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.strip()
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} chars)"




class ThermVisionError(Exception):
    """Base class; `load_dataset` re-raises these unwrapped from `datasets`' generation errors."""


class MissingExtraError(ThermVisionError, ImportError):
    """An optional dependency the caller asked for is not installed; the message names the extra to install."""


class InputError(ThermVisionError, ValueError):
    """A value or file given by the user is wrong (out of range, malformed, inconsistent); the text says which."""


class MissingFileError(ThermVisionError, FileNotFoundError):
    """A file or folder the user named does not exist."""
