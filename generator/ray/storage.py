"""The output folder must be one shared folder seen at the same path by every Ray node; checked at start.

The driver writes a token file into the folder; every node (one task pinned to each) and every actor reads it
back. A node that cannot see it stops the run with one line naming the node and the folder.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

from generator.ray.errors import SharedStorageError

TOKEN_DIR = ".ray"


def write_token(root: str | Path) -> str:
    """Write a fresh token file under `root/.ray/`; returns its content (which names the file too)."""
    token = secrets.token_hex(8)
    folder = Path(root) / TOKEN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"storage-{token}").write_text(token)
    return token


def remove_token(root: str | Path, token: str) -> None:
    (Path(root) / TOKEN_DIR / f"storage-{token}").unlink(missing_ok=True)


def check_folder(root: str | Path, token: str) -> None:
    """Raise `SharedStorageError` (one line) unless this process sees the driver's token in `root`."""
    path = Path(root) / TOKEN_DIR / f"storage-{token}"
    try:
        seen = path.read_text(encoding="utf-8", errors="replace")[:64]
    except OSError as err:
        raise SharedStorageError(
            f"Ray node {socket.gethostname()} cannot see the output folder {root} ({err.strerror or err}): "
            "it must be a shared filesystem mounted at the same path on every node (docs/ray.md)") from None
    if seen != token:
        raise SharedStorageError(f"Ray node {socket.gethostname()} sees another {root} than the driver (its token "
                                 "differs): mount the same shared folder at the same path on every node")


def check_every_node(root: str | Path, token: str, timeout: float = 300.0) -> None:
    """One task pinned to each alive node reads the token; the first node that cannot fails the run."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
            .remote(str(root), token) for node in ray.nodes() if node.get("Alive")]
    for line in ray.get(refs, timeout=timeout):
        if line:
            raise SharedStorageError(line)


def _probe(root: str, token: str) -> str | None:
    try:
        check_folder(root, token)
    except SharedStorageError as err:
        return str(err)
    return None
