"""Who does which identity: launcher ranks (torchrun/accelerate, mpirun, srun) x `--shard i/n`."""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass

from thermvision_db.errors import InputError


MAX_IDENTITIES = 10**7  # identity folders are S000000..; ten million is far beyond any corpus one folder holds


def check_identity_count(value) -> int:
    """An identity count as a plain integer in 1..MAX_IDENTITIES, or one InputError line (2.5, '3', True, 10**12)."""
    if isinstance(value, bool) or not isinstance(value, (int, numbers.Integral)):
        raise InputError(f"num_identities must be a whole number, got {value!r} ({type(value).__name__})")
    if not 1 <= int(value) <= MAX_IDENTITIES:
        raise InputError(f"num_identities must be between 1 and {MAX_IDENTITIES:,}, got {int(value):,}")
    return int(value)



# ------------------------------------------------------------------------------------------------ workers
@dataclass(frozen=True)
class Worker:
    """This process's share: worker `index` of `count` (torchrun/accelerate ranks x scheduler shards)."""

    index: int = 0
    count: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, shard: str | None = None, env: dict | None = None) -> "Worker":
        """The launcher's rank (see `launcher_rank`) combined with `--shard i/n`."""
        rank, world, local = launcher_rank(os.environ if env is None else env)
        shard_index, shard_count = parse_shard(shard) if shard else (0, 1)
        if not 0 <= rank < world:
            raise InputError(f"rank {rank} is outside world size {world}")
        return cls(shard_index * world + rank, shard_count * world, local)

    def owns(self, unit: int) -> bool:
        return unit % self.count == self.index

    def device(self, requested: str | None):
        import torch

        if requested:
            device = torch.device(requested)
            if device.type == "cuda" and device.index is None and self.count > 1:
                return torch.device("cuda", self.local_rank % torch.cuda.device_count())  # one GPU per rank
            return device
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")


# (rank, world size, local rank) variables of each launcher, first match wins: torchrun and `accelerate launch
# --multi_gpu` (torch elastic), mpirun (Open MPI; MPICH / Intel MPI, also accelerate's multi-CPU mode), srun.
LAUNCHER_VARIABLES = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)


def launcher_rank(env) -> tuple[int, int, int]:
    """(rank, world size, local rank) from whichever launcher started this process; (0, 1, 0) alone."""
    for rank, world, local in LAUNCHER_VARIABLES:
        if rank in env and world in env:
            return int(env[rank]), int(env[world]), int(env.get(local, 0))
    return 0, 1, 0


def parse_shard(spec: str) -> tuple[int, int]:
    """'3/8' -> (3, 8); Slurm arrays: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT."""
    try:
        index, count = (int(v) for v in str(spec).split("/"))
    except ValueError:
        raise InputError(f"--shard takes i/n (e.g. 0/4), got {spec!r}") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard {spec}: need 0 <= i < n")
    return index, count
