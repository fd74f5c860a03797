"""What one `load_dataset` call makes once and shares: the opened source, the generation settings, fingerprints.

The cache key, the split generators and the generator door each need the same objects; inside `one_call()`
`memo(key, make)` returns the first one made, so a URL's zips are opened once and the weight folders are
walked once per call. Outside a call nothing is kept (a later call sees changed files).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")
_memo: dict | None = None


@contextlib.contextmanager
def one_call():
    """Share objects made within the block (re-entrant: an inner block joins the outer one)."""
    global _memo
    if _memo is not None:
        yield
        return
    _memo = {}
    try:
        yield
    finally:
        _memo = None


def memo(key: Hashable, make: Callable[[], T]) -> T:
    """`make()` once per call for `key`; every time when no call is running."""
    if _memo is None:
        return make()
    if key not in _memo:
        _memo[key] = make()
    return _memo[key]
