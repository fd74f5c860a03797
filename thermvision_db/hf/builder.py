"""The `datasets` builder: `frames`, `videos`, `images` over the released corpus; `synthetic` and
`synthetic_videos` over a generated corpus (made on the spot by the generator when identities are missing).

Shards are one video each (one category folder for `images`, one identity for the synthetic configs), so
`num_proc`, DataLoader workers and `split_dataset_by_node` receive disjoint work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets

from thermvision_db.errors import InputError
from thermvision_db.hf import door
from thermvision_db.hf.per_call import memo
from thermvision_db.io.decode import BACKENDS, _check_backend
from thermvision_db.schema import features as schema
from thermvision_db.schema.label_codes import FrameLabelCodes
from thermvision_db.schema.generated_corpus import CorpusError, GeneratedCorpus, identity_name
from thermvision_db.schema.members import IDENTITIES, MEMBERS
from thermvision_db.schema.splits import assign
from thermvision_db.sources.base import SourceError, is_url, local_folder
from thermvision_db.sources.hub import resolve_data_dir
from thermvision_db.sources.images2d import category_folders, image_rows
from thermvision_db.sources.released import frame_rows, video_row

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
SYNTHETIC_CONFIGS = ("synthetic", "synthetic_videos")
_LICENSE = "Non-commercial research use (the corpus); FLUX.1-dev [dev] Non-Commercial License (the generator weights)."


def opened_source(data_dir):
    """The released corpus at `data_dir` (a folder or a URL), opened once per `load_dataset` call."""
    from thermvision_db.sources.remote import open_release

    key = data_dir if is_url(data_dir) else str(local_folder(data_dir).resolve())
    return memo(("source", key), lambda: open_release(data_dir))


@dataclass
class ThermVisionConfig(datasets.BuilderConfig):
    """Options shared by every configuration; `datasets` puts non-default values into the cache key."""

    split_by: str = "identity"  # "identity" (fixed, identity-disjoint) or "none" (everything in train)
    repair_boxes: bool = False  # interpolate missing boxes, resolve double boxes by temporal consistency
    identities: tuple[str, ...] | None = None  # restrict to these identity keys (F_01, M_07, ...)
    video_backend: str = "pyav"  # decoder used where a PNG frame is missing
    # synthetic configurations: what to generate (or, with only output_dir, which generated corpus to read)
    num_identities: int | None = None
    preset: str = "tiny"
    seed: int = 0
    motion: str | None = None  # program[:frames]: "varied" (default), "paper" (LivePortrait's clips), "procedural";
    # frames "paper" (354 + 250), "short" (12 + 12) or "head_pose=N,expression=M"; default by preset
    output_dir: str | None = None  # default: a folder per settings fingerprint beside the datasets cache
    device: str | None = None
    generator_options: dict | None = None  # more GenerationSettings fields: flux, lora, liveportrait_dir, ...

    @property
    def synthetic(self) -> bool:
        return self.name in SYNTHETIC_CONFIGS

    def generation_settings(self):
        """The generator's settings for this configuration (validated: unknown presets fail here)."""
        return door.generation_settings(self.preset, self.seed, self.motion, self.generator_options)

    def synthetic_output_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir).expanduser()
        if self.num_identities is None:
            raise InputError(f"configuration {self.name!r} needs num_identities=N (to generate) or output_dir= "
                             "(a generated corpus to read)")
        return door.default_output_dir(self.generation_settings())

    def validate(self) -> None:
        """Checked when the builder is made: `datasets` sets overrides on a copy without re-running __init__."""
        if self.synthetic:
            if self.num_identities is not None:
                door.check_identity_count(self.num_identities)
            if self.num_identities is not None:
                self.generation_settings()
            self.synthetic_output_dir()
        if self.split_by not in {"identity", "none"}:
            raise InputError(f"split_by must be 'identity' or 'none', got {self.split_by!r}")
        if self.video_backend not in BACKENDS:
            raise InputError(f"video_backend must be one of {BACKENDS}, got {self.video_backend!r}")
        _check_backend(self.video_backend)  # a missing decoder says which extra to install, before any generation
        if self.identities is not None:
            self.identities = tuple(self.identities)
            unknown = sorted(set(self.identities) - set(IDENTITIES))
            if unknown:
                raise InputError(f"unknown identities {unknown}; identity keys look like 'F_01' or 'M_07'")


class ThermVisionDB(datasets.GeneratorBasedBuilder):
    """ThermVision-DB as typed `datasets` rows: frames, videos, 2D images."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = ThermVisionConfig
    BUILDER_CONFIGS = [
        ThermVisionConfig(name="frames", description="one row per frame: image, faces (COCO boxes, landmarks), QC"),
        ThermVisionConfig(name="videos", description="one row per video: the MP4 and per-frame boxes and QC"),
        ThermVisionConfig(name="images", description="the 2D still categories, one folder per category"),
        ThermVisionConfig(name="synthetic", description="generated identities, one row per frame (frames schema)"),
        ThermVisionConfig(name="synthetic_videos", description="generated identities, one row per video"),
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
            "synthetic": lambda: schema.frame_features(self._synthetic_identities()),
            "synthetic_videos": lambda: schema.video_features(self._synthetic_identities()),
        }[self.config.name]()
        return datasets.DatasetInfo(
            description=_DESCRIPTION, features=features, citation=_CITATION, license=_LICENSE,
            homepage="https://huggingface.co/datasets/MAli-Farooq/ThermVision-DB",
        )

    def _synthetic_identities(self) -> list[str]:
        """Identity names are known before generating (S000000 ...), or read from the corpus being loaded."""
        if self.config.num_identities is not None:
            return [identity_name(i) for i in range(self.config.num_identities)]
        records = GeneratedCorpus(self.config.synthetic_output_dir()).records()
        if not records:
            raise CorpusError(f"no generated identities in {self.config.synthetic_output_dir()}; pass num_identities=N "
                              "to generate them")
        return [r["identity"] for r in records]

    def _synthetic_split_generators(self):
        out = self.config.synthetic_output_dir()
        wanted = self.config.num_identities
        if wanted is not None:
            summary = door.generate(self.config.generation_settings(), out, wanted, self.config.device,
                                    self.config.generator_options)
            if summary.failures:
                raise CorpusError(f"{len(summary.failures)} identities failed to generate: {summary.failures[0]}")
        corpus = GeneratedCorpus(out)
        records = {r["identity"]: r for r in corpus.records() if wanted is None or r["index"] < wanted}
        groups = assign(list(records), self.config.split_by, splitter=lambda name: records[name]["split"])
        return [datasets.SplitGenerator(name=split, gen_kwargs={"records": [records[n] for n in names], "corpus": corpus})
                for split, names in groups.items() if names]

    def _split_generators(self, dl_manager):
        if self.config.synthetic:
            return self._synthetic_split_generators()
        data_dir = resolve_data_dir(self.config.data_dir)
        if self.config.name == "images":
            if is_url(data_dir):
                raise SourceError(f"the images configuration reads a local folder, not {data_dir}")
            folders = category_folders(local_folder(data_dir))
            return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"folders": [[f] for f in folders]})]
        source = opened_source(data_dir)  # a folder, or a URL read in place
        wanted = None if self.config.identities is None else [m for m in MEMBERS if m.identity in self.config.identities]
        members = source.present_members(wanted)  # only the asked-for identities' archive is opened
        if not members:
            raise SourceError(f"no videos of the member table were found in {data_dir}")
        groups = assign(sorted({m.identity for m in members}), self.config.split_by)
        generators = []
        for split, identities in groups.items():
            shard = [m for m in members if m.identity in identities]
            if shard:
                generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"members": shard, "source": source}))
        return generators

    def _generate_examples(self, members=None, source=None, folders=None, records=None, corpus=None):
        if self.config.name in ("synthetic", "frames"):
            codes = FrameLabelCodes(self.info.features)  # class names as integers: the same encoded rows, cheaper
            for key, row in self._frame_rows(members, source, records, corpus):
                yield key, codes.encode(row)
        elif self.config.name == "synthetic_videos":
            for record in records:
                yield from corpus.video_rows(record)
        elif self.config.name == "images":
            for group in folders:
                yield from image_rows(group)
        else:
            for member in members:
                yield video_row(source, member, self.config.repair_boxes)

    def _frame_rows(self, members, source, records, corpus):
        if self.config.name == "synthetic":
            for record in records:
                yield from corpus.frame_rows(record)
        else:
            for member in members:
                yield from frame_rows(source, member, self.config.repair_boxes, self.config.video_backend)

