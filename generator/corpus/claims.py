"""Claims on units of work, so processes writing into one corpus folder share it without a launcher.

Two `thermvision-db generate` runs into the same folder (a second terminal, a re-submitted job) both own every
identity. Each still block and each identity is claimed with an exclusive advisory lock (fcntl) on its own file
under `.locks/`, holding the claimant's host and PID. A unit claimed by another process is put off and done last:
by then it is usually finished, and if its holder died (the kernel drops a dead process's locks) it is made here.
So both runs end with the whole corpus and nothing is made twice at once.

The `.locks/` folder is input too: claim files are opened without following links (O_NOFOLLOW) and without
blocking on a FIFO (O_NONBLOCK); a link in their place is removed (it was never a claim) and a directory or other
non-file there stops the run naming it. A holder line is read with a bounded read and never trusted beyond text.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

log = logging.getLogger(__name__)

LOCKS_DIR = ".locks"
_HOLDER_BYTES = 256  # 'host PID' is a short line; a claim file is never read further
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def remove_damaged(path: Path) -> None:
    """Remove a damaged entry of the corpus folder without following links out of it."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def move_into_place(corpus, partial: Path, final: Path) -> bool:
    """Rename a finished identity folder into place; False (and `partial` removed) when another process's valid
    one is there already. A damaged entry there (empty folder, link, no valid record) is replaced."""
    if corpus.record(final) is not None:
        shutil.rmtree(partial)
        return False
    if os.path.lexists(final):
        log.warning("replacing %s: it has no valid identity.json", final)
        remove_damaged(final)
    os.replace(partial, final)
    return True


def open_claim_file(path: Path) -> int:
    """A file descriptor on the regular file `path` (created if absent), never through a link.

    A link at `path` is removed and the file made anew (the link's target is never written); a directory, FIFO or
    device there is a CorpusError naming it."""
    from thermvision_db.schema.generated_corpus import CorpusError

    for _ in range(2):
        try:
            fd = os.open(path, _OPEN_FLAGS, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP or (err.errno in (errno.EMLINK, errno.ENOTDIR) and path.is_symlink()):
                log.warning("%s is a link, not a claim file: removing the link (its target is left alone)", path)
                path.unlink()
                continue
            if err.errno == errno.EISDIR:
                raise CorpusError(f"{path} is a directory where a claim file belongs: the corpus folder is "
                                  "damaged; remove it and run again") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CorpusError(f"{path} is not a regular file (a FIFO, socket or device) where a claim file "
                              "belongs: the corpus folder is damaged; remove it and run again")
        os.set_blocking(fd, True)
        return fd
    raise CorpusError(f"{path} keeps being replaced by a link: another program is tampering with the corpus folder")


def check_folder(folder: Path) -> None:
    """`.locks/` or `.workers/` must be a real folder inside the corpus, not a link to somewhere else."""
    from thermvision_db.schema.generated_corpus import CorpusError

    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise CorpusError(f"{folder} is a link or a file, not a folder: the corpus folder is damaged; remove it "
                          "and run again")


class Claims:
    """Exclusive claims on named units of work inside one corpus folder."""

    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root) / LOCKS_DIR

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.lock"

    def holder(self, name: str) -> str:
        """'host PID' of the process that claimed `name` last (it may have finished since)."""
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return "another process"
        try:
            text = os.read(fd, _HOLDER_BYTES).decode("utf-8", "replace") if stat.S_ISREG(os.fstat(fd).st_mode) else ""
        except OSError:
            text = ""
        finally:
            os.close(fd)
        line = text.strip().splitlines()[0] if text.strip() else ""
        return line if line.isprintable() and len(line.split()) == 2 else "another process"

    def name_damaged(self, corpus) -> None:
        """Warn, by name, about stray `.locks/` entries and identity folders without a valid record."""
        for stray in self.stray_entries():
            log.warning("%s is not a claim file (a link, folder or unknown name): ignored as stale", stray)
        for folder in corpus.damaged():
            log.warning("%s has no valid identity.json (damaged, or left by another tool): it is not counted, "
                        "and the worker that owns it makes it again", folder)

    def stray_entries(self) -> list[Path]:
        """Entries of `.locks/` that are not claim files (links, folders, other names): named, never used."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir()
                      if p.is_symlink() or not p.is_file() or not p.name.endswith(".lock"))

    @contextlib.contextmanager
    def claim(self, name: str, wait: bool) -> Iterator[bool]:
        """Yield True while holding `name`'s claim; False at once when another process holds it and not `wait`."""
        import fcntl

        check_folder(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        with os.fdopen(open_claim_file(self._path(name)), "r+") as handle:
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
