"""Claims on units of work, so processes writing into one corpus folder share it without a launcher.

Two `thermvision-db generate` runs into the same folder (a second terminal, a re-submitted job) both own every
identity. Each still block and each identity is claimed with an exclusive advisory lock (fcntl) on its own file
under `.locks/`, holding the claimant's host and PID. A unit claimed by another process is put off and done last:
by then it is usually finished, and if its holder died (the kernel drops a dead process's locks) it is made here.
So both runs end with the whole corpus and nothing is made twice at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

log = logging.getLogger(__name__)

LOCKS_DIR = ".locks"


class Claims:
    """Exclusive claims on named units of work inside one corpus folder."""

    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root) / LOCKS_DIR

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.lock"

    def holder(self, name: str) -> str:
        """'host PID' of the process that claimed `name` last (it may have finished since)."""
        try:
            return self._path(name).read_text().strip() or "another process"
        except OSError:
            return "another process"

    @contextlib.contextmanager
    def claim(self, name: str, wait: bool) -> Iterator[bool]:
        """Yield True while holding `name`'s claim; False at once when another process holds it and not `wait`."""
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self._path(name), "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                log.warning("%s is being made by %s; waiting for it", name, self.holder(name))
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"{socket.gethostname()} {os.getpid()}\n")
                handle.flush()
                yield True
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def each_held(self, items: Iterable, name: Callable[[object], str], done: Callable[[object], bool],
                  before_waiting: Callable[[], None] = lambda: None) -> Iterator[tuple[object, ExitStack]]:
        """Like `each`, but yields (item, claim) and the caller releases the claim (`claim.close()`) when the
        item is really finished: work that completes later (files still being written) keeps its claim.
        `before_waiting` runs before blocking on another process's claim: it must release every claim the caller
        still holds, or two processes waiting on each other's claims would wait forever."""
        deferred = []
        for wait, batch in ((False, items), (True, deferred)):
            if wait and deferred:
                before_waiting()
                log.warning("%d units are being made by other processes (e.g. %s by %s); doing the rest first, "
                            "then waiting for those", len(deferred), name(deferred[0]), self.holder(name(deferred[0])))
            for item in list(batch):
                held = ExitStack()
                if not held.enter_context(self.claim(name(item), wait=wait)):
                    held.close()
                    deferred.append(item)
                elif done(item):
                    held.close()
                else:
                    yield item, held

    def each(self, items: Iterable, name: Callable[[object], str], done: Callable[[object], bool]) -> Iterator:
        """Yield each item not `done`, holding its claim while the caller works on it. Items another process
        holds are yielded last, after waiting for their claim, and only if still not done."""
        deferred = []
        for item in items:
            with self.claim(name(item), wait=False) as mine:
                if not mine:
                    deferred.append(item)
                    continue
                if not done(item):
                    yield item
        if deferred:
            log.warning("%d units are being made by other processes (e.g. %s by %s); doing the rest first, then "
                        "waiting for those", len(deferred), name(deferred[0]), self.holder(name(deferred[0])))
        for item in deferred:
            with self.claim(name(item), wait=True):
                if not done(item):
                    yield item
