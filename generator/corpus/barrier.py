"""The file barrier between workers of one run, with a heartbeat so a peer that never started is named.

Workers meet only through the output folder (no process group is needed, so Slurm array shards meet too). Each
worker announces itself in `.workers/<i>-of-<n>.json` (host, PID, start time) when its run starts. A worker that
waits for others' stills or identities logs, every `log_every` seconds, what is missing and which workers own it,
split into workers that never announced themselves and workers that did but have not delivered; after `timeout`
seconds it fails with the same account.

Heartbeat files are input too: read without following links, at most a few kB, and used only when they hold
the expected object (worker, count, host, PID); anything else in `.workers/` is named as stale and ignored.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

from generator.corpus.claims import check_folder
from thermvision_db.io.atomic import atomic_write_json
from thermvision_db.schema.generated_corpus import CorpusError

log = logging.getLogger(__name__)

WORKERS_DIR = ".workers"
DEFAULT_TIMEOUT_MINUTES = 30.0
LOG_EVERY_SECONDS = 60.0


_HEARTBEAT_BYTES = 4096
_HEARTBEAT_NAME = re.compile(r"\d+-of-\d+\.json")


def announce(root: Path, index: int, count: int) -> Path:
    """Write this worker's heartbeat file (who and where), read by waiting peers. The write replaces whatever
    is there by rename (a link is replaced, never followed); a directory in its place stops the run naming it."""
    folder = Path(root) / WORKERS_DIR
    check_folder(folder)
    path = folder / f"{index}-of-{count}.json"
    if path.is_dir() and not path.is_symlink():
        raise CorpusError(f"{path} is a directory where this worker's heartbeat file belongs: the corpus folder is "
                          "damaged; remove it and run again")
    for stray in stray_heartbeats(root):
        log.warning("%s is not a worker heartbeat file (a link, folder or unknown name): ignored as stale", stray)
    return atomic_write_json(path, {"worker": index, "count": count, "host": socket.gethostname(),
                                    "pid": os.getpid(), "started": time.time()})


def stray_heartbeats(root: Path) -> list[Path]:
    folder = Path(root) / WORKERS_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(p for p in folder.iterdir() if p.is_symlink() or not p.is_file()
                  or not _HEARTBEAT_NAME.fullmatch(p.name))


def read_heartbeat(path: Path, index: int, count: int) -> dict | None:
    """The heartbeat at `path` when it is a regular file holding this worker's object, else None (stale)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = json.loads(os.read(fd, _HEARTBEAT_BYTES + 1)[:_HEARTBEAT_BYTES + 1])
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if (isinstance(data, dict) and data.get("worker") == index and data.get("count") == count
            and isinstance(data.get("host"), str) and data["host"].isprintable() and len(data["host"]) <= 255
            and isinstance(data.get("pid"), int) and not isinstance(data["pid"], bool)):
        return data
    return None


def _announced(root: Path, count: int) -> dict[int, dict]:
    found = {}
    for index in range(count):
        data = read_heartbeat(Path(root) / WORKERS_DIR / f"{index}-of-{count}.json", index, count)
        if data is not None:
            found[index] = data
    return found


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def account(root: Path, missing: list, what: str, name: Callable, owner: Callable[[object], int] | None,
            count: int) -> str:
    """'4 stills (first: still_000004); worker(s) 1 of 2 never started (no .workers/<i>-of-2.json ...)'."""
    text = f"{len(missing)} {what} (first: {name(missing[0])})"
    if owner is None or count <= 1:
        return text
    owners = sorted({owner(m) for m in missing})
    seen = _announced(root, count)
    silent = [w for w in owners if w not in seen]
    slow = [f"{w} ({seen[w].get('host')} PID {seen[w].get('pid')})" for w in owners if w in seen]
    if silent:
        text += (f"; worker(s) {', '.join(map(str, silent))} of {count} never started (no "
                 f"{WORKERS_DIR}/<i>-of-{count}.json in {root})")
    if slow:
        text += f"; worker(s) {', '.join(slow)} started but have not finished"
    return text


def wait_for(missing_now: Callable[[], list], *, root: Path, what: str, timeout: float, name: Callable = str,
             owner: Callable[[object], int] | None = None, count: int = 1, poll: float = 0.2,
             log_every: float = LOG_EVERY_SECONDS) -> None:
    """Poll until `missing_now()` is empty; log the missing workers every `log_every` s; fail after `timeout` s."""
    start = time.monotonic()
    next_log = start + log_every
    while missing := missing_now():
        now = time.monotonic()
        if now - start > timeout:
            raise CorpusError(
                f"waited {_duration(timeout)} for {account(root, missing, what, name, owner, count)} from other "
                "workers. Start every worker (each torchrun rank / "
                "every --shard i/n of the run), or raise --barrier-timeout MINUTES")
        if now >= next_log:
            log.warning("waited %s so far for %s from other workers", _duration(now - start),
                        account(root, missing, what, name, owner, count))
            next_log = now + log_every
        time.sleep(poll)
