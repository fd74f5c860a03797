"""The `datasets` builder: configs `frames`, `videos`, `images` over the released corpus.

Shards are one video each (one category folder for `images`), so `num_proc`, DataLoader workers and
`split_dataset_by_node` receive disjoint work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets

from thermvision_db import features as schema
from thermvision_db.images2d import category_folders, image_rows
from thermvision_db.release import IDENTITIES, ReleaseSource, SourceError, resolve_data_dir
from thermvision_db.released_rows import frame_rows, video_row
from thermvision_db.splits import assign
from thermvision_db.video import BACKENDS

_DESCRIPTION = (
    "ThermVision-DB: synthetic long-wave infrared face videos (50 identities, 100 videos, 30,200 frames) "
    "with YOLO face boxes, made with FLUX.1-dev + a thermal LoRA and a thermal LivePortrait."
)
_CITATION = """@article{thermvisiondb2026,
  title   = {ThermVision-DB: a synthetic thermal face video dataset},
  journal = {Data in Brief},
  year    = {2026},
  doi     = {10.1016/j.dib.2026.112506}
}"""
_LICENSE = "Non-commercial research use (the corpus); FLUX.1-dev [dev] Non-Commercial License (the generator weights)."


@dataclass
class ThermVisionConfig(datasets.BuilderConfig):
    """Options shared by every configuration; `datasets` puts non-default values into the cache key."""

    split_by: str = "identity"  # "identity" (fixed, identity-disjoint) or "none" (everything in train)
    repair_boxes: bool = False  # interpolate missing boxes, resolve double boxes by temporal consistency
    identities: tuple[str, ...] | None = None  # restrict to these identity keys (F_01, M_07, ...)
    video_backend: str = "pyav"  # decoder used where a PNG frame is missing

    def validate(self) -> None:
        """Checked when the builder is made: `datasets` sets overrides on a copy without re-running __init__."""
        if self.split_by not in {"identity", "none"}:
            raise ValueError(f"split_by must be 'identity' or 'none', got {self.split_by!r}")
        if self.video_backend not in BACKENDS:
            raise ValueError(f"video_backend must be one of {BACKENDS}, got {self.video_backend!r}")
        if self.identities is not None:
            self.identities = tuple(self.identities)
            unknown = sorted(set(self.identities) - set(IDENTITIES))
            if unknown:
                raise ValueError(f"unknown identities {unknown}; identity keys look like 'F_01' or 'M_07'")


class ThermVisionDB(datasets.GeneratorBasedBuilder):
    """ThermVision-DB as typed `datasets` rows: frames, videos, 2D images."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = ThermVisionConfig
    BUILDER_CONFIGS = [
        ThermVisionConfig(name="frames", description="one row per frame: image, faces (COCO boxes, landmarks), QC"),
        ThermVisionConfig(name="videos", description="one row per video: the MP4 and per-frame boxes and QC"),
        ThermVisionConfig(name="images", description="the 2D still categories, one folder per category"),
    ]
    DEFAULT_CONFIG_NAME = "frames"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.validate()

    def _info(self) -> datasets.DatasetInfo:
        features = {
            "frames": lambda: schema.frame_features(IDENTITIES),
            "videos": lambda: schema.video_features(IDENTITIES),
            "images": schema.image_features,
        }[self.config.name]()
        return datasets.DatasetInfo(
            description=_DESCRIPTION, features=features, citation=_CITATION, license=_LICENSE,
            homepage="https://huggingface.co/datasets/MAli-Farooq/ThermVision-DB",
        )

    def _split_generators(self, dl_manager):
        data_dir = resolve_data_dir(self.config.data_dir)
        if self.config.name == "images":
            folders = category_folders(Path(data_dir))
            return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"folders": [[f] for f in folders]})]
        source = ReleaseSource(data_dir)
        members = source.present_members()
        if self.config.identities is not None:
            members = [m for m in members if m.identity in self.config.identities]
        if not members:
            raise SourceError(f"no videos of the member table were found in {data_dir}")
        groups = assign(sorted({m.identity for m in members}), self.config.split_by)
        generators = []
        for split, identities in groups.items():
            shard = [m for m in members if m.identity in identities]
            if shard:
                generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"members": shard, "source": source}))
        return generators

    def _generate_examples(self, members=None, source=None, folders=None):
        if self.config.name == "images":
            for group in folders:
                yield from image_rows(group)
        elif self.config.name == "frames":
            for member in members:
                yield from frame_rows(source, member, self.config.repair_boxes, self.config.video_backend)
        else:
            for member in members:
                yield video_row(source, member, self.config.repair_boxes)
