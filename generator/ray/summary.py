"""The Ray run's summary: the single-process summary plus retries, failures with attempts, and the actors."""

from __future__ import annotations

from dataclasses import dataclass, field

from generator.corpus.summary import RunSummary


@dataclass
class RaySummary(RunSummary):
    """What a Ray run did; `retries` lists every retried attempt, `failures` the identities given up on."""

    retries: list[dict] = field(default_factory=list)
    actors: dict = field(default_factory=dict)
    nodes: int = 0

    def to_dict(self) -> dict:
        data = super().to_dict()
        data.update(engine="ray", worker="ray", retries=self.retries, retried=len(self.retries),
                    actors=self.actors, nodes=self.nodes)
        return data

    def describe(self) -> str:
        text = super().describe().replace("worker ray:", f"ray ({self.nodes} node(s), {self.actors}):", 1)
        if self.retries:
            text += f"\n  {len(self.retries)} retried attempt(s), e.g. {self.retries[0]['item']}: {self.retries[0]['error']}"
        return text
