"""What one process did: identities made, skipped, failed, and time per stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from generator.corpus.workers import Worker

STAGES = ("stills", "animate", "encode", "labels")

# ------------------------------------------------------------------------------------------------ summary
@dataclass
class RunSummary:
    """What one process did: identities made, skipped, failed; time per stage."""

    worker: Worker
    requested: int
    generated: list[str] = field(default_factory=list)
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall_seconds: float = 0.0
    writer_cpu_seconds: float = 0.0  # PNG + H.264 writing, summed over the writer processes (off the GPU's path)
    output_dir: str = ""

    @property
    def identities_per_hour(self) -> float:
        return len(self.generated) * 3600.0 / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        total = sum(self.stage_seconds.values()) or 1.0
        return {
            "worker": f"{self.worker.index}/{self.worker.count}", "requested": self.requested,
            "generated": len(self.generated), "skipped_finished": self.skipped, "failed": len(self.failures),
            "failures": self.failures, "wall_seconds": round(self.wall_seconds, 3),
            "identities_per_hour": round(self.identities_per_hour, 1),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "stage_share": {k: round(v / total, 4) for k, v in self.stage_seconds.items()},
            "writer_cpu_seconds": round(self.writer_cpu_seconds, 3),
            "output_dir": self.output_dir,
        }

    def describe(self) -> str:
        d = self.to_dict()
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in d["stage_share"].items())
        text = (f"worker {d['worker']}: {d['generated']} identities generated, {d['skipped_finished']} already "
                f"finished, {d['failed']} failed in {d['wall_seconds']:.1f} s "
                f"({d['identities_per_hour']:.0f} identities/hour; {shares}) -> {self.output_dir}")
        for failure in self.failures:
            text += f"\n  failed {failure['identity']}: {failure['error']}"
        return text
