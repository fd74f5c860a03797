"""What runs inside the Ray actors: one loads the stills generator once, one loads LivePortrait + labels once.

Both reuse the single-process pipeline's pieces (generator/corpus/): a still block is sampled exactly as
`GenerationPipeline._make_stills` samples it (the whole block in one batch), and an identity is made by
`GenerationPipeline.start_identity` / `finish_identity` (temporary folder, renamed when complete), so the files
are those of a single-process run. PNG/H.264 writing goes to the actor's own `WriterPool` (bounded queues, the
back-pressure of the single-process path); its processes are counted in the actor's `num_cpus`.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from generator.corpus.models import load_stills_generator
from generator.corpus.pipeline import GenerationPipeline
from generator.corpus.settings import GenerationSettings
from generator.corpus.summary import RunSummary
from generator.corpus.workers import Worker
from generator.corpus.writers import WriterPool
from generator.ray.storage import check_folder


def _prepare(root: str, token: str, threads: int | None) -> None:
    check_folder(root, token)
    if threads:
        import torch

        torch.set_num_threads(int(threads))  # CPU float sums depend on the thread count: match the driver's


class StillsWorker:
    """Makes whole still blocks; the FLUX (+ LoRA) generator is loaded once per actor."""

    def __init__(self, settings: dict, root: str, token: str, device: str | None, threads: int | None):
        _prepare(root, token, threads)
        self.settings = GenerationSettings.from_dict(settings)
        self.stills_dir = Path(root) / "stills"
        self.generator = load_stills_generator(self.settings, Worker().device(device))

    def make_block(self, block: int, wanted: list[int]) -> dict:
        """Sample the whole block (same batch as every other run), save the wanted stills (atomic files)."""
        from generator.stills.files import save_still, still_exists

        t0 = time.perf_counter()
        b = self.settings.still_batch
        stills = self.generator.generate_batch(self.generator.identities(range(block * b, (block + 1) * b),
                                                                         self.settings.seed))
        for still in stills:
            if still.index in wanted and not still_exists(self.stills_dir, still.index):
                self.stills_dir.mkdir(parents=True, exist_ok=True)
                save_still(still, self.stills_dir)
        return {"seconds": time.perf_counter() - t0, "host": socket.gethostname(), "pid": os.getpid()}

    def ready(self) -> bool:
        return True


class IdentityWorker:
    """Animates, labels and writes whole identities; LivePortrait and the label models are loaded once."""

    def __init__(self, settings: dict, root: str, token: str, device: str | None, threads: int | None,
                 fingerprint: str, writers: int):
        _prepare(root, token, threads)
        self.pipeline = GenerationPipeline(GenerationSettings.from_dict(settings), root, device=device,
                                           progress=False, writers=writers, fingerprint=fingerprint)
        self.pipeline.device = Worker().device(device)
        self.pipeline._pool = WriterPool(writers)

    def make(self, index: int, slot: int) -> dict:
        """One identity, complete or not at all (a failure or a kill leaves only its temporary folder)."""
        summary = RunSummary(Worker(), 1)
        pool = self.pipeline._pool
        cpu_before = pool.cpu_seconds
        pending = self.pipeline.start_identity(index, slot, summary)
        self.pipeline.finish_identity(pending, summary)
        return {"stage_seconds": dict(summary.stage_seconds), "writer_cpu_seconds": pool.cpu_seconds - cpu_before,
                "host": socket.gethostname(), "pid": os.getpid()}

    def ready(self) -> bool:
        return True
