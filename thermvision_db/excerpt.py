"""How errors quote a user's file: a short, escaped excerpt, never a whole line.

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
