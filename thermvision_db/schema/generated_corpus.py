"""A generated corpus on disk: its layout, its manifest and its rows, read like any other source.

The generator writes; this module only reads (and rebuilds the manifest), so the loader knows nothing about
diffusion. Layout of an output folder:

    run.json                       the generation settings and their fingerprint (written once)
    stills/still_000000.png|.json  candidate stills with sidecars (seed, prompt, sampler, weight hashes)
    identities/S000000/            one folder per finished identity, renamed into place when complete
        identity.json              the identity's record (the manifest row), written last inside the folder
        head_pose.mp4              H.264 video; head_pose_frames/00000.png ... the same frames losslessly
                                   (1-channel PNG when gray; absent for a corpus generated with frames='none')
        head_pose.labels.json      per frame: faces (propagated [+ detector]), qc, head pose (degrees)
        head_pose.motion.npz|.json the driving motion applied (pose, scale, translation, keypoints)
        expression.*               the same for the expression video
    manifest.parquet               one row per finished identity (rebuilt atomically at the end of each run)
    summary.json                   the last run's throughput, stage shares and failures

An identity folder either exists complete or not at all (temporary `.partial-*` folders are removed on the
next run), so a killed run never leaves a half identity in the corpus.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from thermvision_db.errors import ThermVisionError
from thermvision_db.io.atomic import atomic_write_bytes
from thermvision_db.schema import rows
from thermvision_db.schema.rows import MOTION_LABELS
from thermvision_db.schema.splits import synthetic_split

RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.parquet"
SUMMARY_FILE = "summary.json"
IDENTITY_FILE = "identity.json"
IDENTITIES_DIR = "identities"
STILLS_DIR = "stills"
PARTIAL_PREFIX = ".partial-"
IDENTITY_SCHEMA = "thermvision-db/generated-identity/1"
RUN_SCHEMA = "thermvision-db/generated-run/1"


MAX_RECORD_BYTES = 64 * 2**20  # an identity record is a few kB to a few MB; a bigger one is not a record
_IDENTITY_RE = re.compile(r"S\d{6,}")


class CorpusError(ThermVisionError):
    """A generated corpus folder is missing, unreadable, or was made with other settings."""


def identity_name(index: int) -> str:
    return f"S{index:06d}"


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock (fcntl) shared by every process writing into one corpus folder."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class GeneratedCorpus:
    """Read access to one generated output folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    # -- paths
    @property
    def identities_dir(self) -> Path:
        return self.root / IDENTITIES_DIR

    @property
    def stills_dir(self) -> Path:
        return self.root / STILLS_DIR

    def identity_dir(self, name: str) -> Path:
        return self.identities_dir / name

    # -- settings
    def run_settings(self) -> dict | None:
        path = self.root / RUN_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CorpusError(f"{path} is unreadable ({err}); it is not a ThermVision generated corpus") from err

    # -- identities
    def record(self, folder: Path) -> dict | None:
        """The identity record of `folder`, or None when the folder is damaged: a link, no record, a record that
        is not valid JSON, not an identity record, or one for another identity. The folder itself is the input:
        whatever a killed copy, a user or another tool left there is never counted as finished."""
        if folder.is_symlink() or not folder.is_dir():
            return None
        path = folder / IDENTITY_FILE
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_RECORD_BYTES:
                return None
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        try:
            check_identity_record(record, path)  # the one definition of a usable record
        except CorpusError:
            return None
        if (record.get("identity") != folder.name or not isinstance(record.get("index"), int)
                or identity_name(record["index"]) != folder.name):
            return None
        return record

    def _identity_folders(self) -> list[Path]:
        if not self.identities_dir.is_dir():
            return []
        return sorted(p for p in self.identities_dir.iterdir() if _IDENTITY_RE.fullmatch(p.name))

    def records(self) -> list[dict]:
        """Every finished identity's record, ordered by identity index (damaged folders are left out: see
        `damaged`)."""
        records = [r for r in map(self.record, self._identity_folders()) if r is not None]
        return sorted(records, key=lambda r: r["index"])

    def damaged(self) -> list[Path]:
        """Identity folders without a valid record: never counted, replaced by the next run that owns them."""
        return [folder for folder in self._identity_folders() if self.record(folder) is None]

    def is_finished(self, index: int) -> bool:
        return self.record(self.identity_dir(identity_name(index))) is not None

    def finished(self) -> set[int]:
        """Indices of finished identities: folders holding a valid record (the barrier polls this)."""
        return {int(p.name[1:]) for p in self._identity_folders() if self.record(p) is not None}

    def partial_dirs(self) -> list[Path]:
        if not self.identities_dir.is_dir():
            return []
        return sorted(p for p in self.identities_dir.iterdir() if p.name.startswith(PARTIAL_PREFIX))

    # -- manifest
    def write_manifest(self) -> Path:
        """Rebuild manifest.parquet from the identity records, under the corpus lock (the last writer sees all)."""
        import pandas as pd

        with file_lock(self.root / ".lock"):
            rows = [manifest_row(r) for r in self.records()]
            frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            atomic_write_bytes(self.root / MANIFEST_FILE, buffer.getvalue())
        return self.root / MANIFEST_FILE

    def read_manifest(self):
        import pandas as pd

        path = self.root / MANIFEST_FILE
        if not path.is_file():
            raise CorpusError(f"{path} does not exist: no finished generation run in {self.root}")
        return pd.read_parquet(path)

    # -- rows in the shared schema
    def frame_rows(self, record: dict) -> Iterator[tuple[str, dict]]:
        """(key, row) for every frame of every video of one identity, images read from the PNG frames."""
        folder = self.identity_dir(record["identity"])
        for video in record["videos"]:
            labels = json.loads((folder / video["labels"]).read_text())["frames"]
            frames_dir = folder / (video.get("frames") or f"{video['set']}_frames")
            decoded = None
            for i, frame in enumerate(labels):
                png = frames_dir / f"{i:05d}.png"
                if png.is_file():
                    image = {"path": str(png), "bytes": None}
                else:  # a corpus generated with frames='none': decode the MP4 once
                    if decoded is None:
                        from thermvision_db.io.decode import iter_frames

                        decoded = iter_frames(folder / video["mp4"])
                    from thermvision_db.io.encode import encode_png

                    try:
                        image = {"path": png.name, "bytes": encode_png(next(decoded))}
                    except StopIteration:
                        raise CorpusError(f"{folder / video['mp4']} has fewer frames than its {len(labels)} "
                                          "labels") from None
                yield f"{video['video_id']}/{i:05d}", rows.frame_row(
                    image, identity_columns(record, video), i, [{"score": None, **face} for face in frame["faces"]],
                    frame["qc"], head_pose=frame["head_pose"], seed=record["seed"], prompt=record["prompt"],
                    **{k: frame.get(k) for k in MOTION_LABELS})  # motion labels: absent in older corpora

    def video_rows(self, record: dict) -> Iterator[tuple[str, dict]]:
        folder = self.identity_dir(record["identity"])
        for video in record["videos"]:
            labels = json.loads((folder / video["labels"]).read_text())["frames"]
            frames_dir = folder / (video.get("frames") or f"{video['set']}_frames")
            pngs = [frames_dir / f"{i:05d}.png" for i in range(len(labels))]
            yield video["video_id"], rows.video_row(
                {"path": str(folder / video["mp4"]), "bytes": None}, identity_columns(record, video),
                num_frames=video["num_frames"], fps=video["fps"], width=video["width"], height=video["height"],
                frame_files=_frame_files(pngs) if len(labels) == video["num_frames"] else None,
                boxes=[[face["bbox"] for face in f["faces"]] for f in labels],
                landmarks=[f["faces"][0]["landmarks"] if f["faces"] else None for f in labels],
                qc=[f["qc"] for f in labels], head_pose=[f["head_pose"] for f in labels], seed=record["seed"],
                prompt=record["prompt"], **{k: [f.get(k) for f in labels] for k in MOTION_LABELS})


def _frame_files(pngs: list[Path]) -> list[str | None] | None:
    """Per frame its PNG where it is a file (as the frame rows read it), None where they decode the MP4; None for
    a corpus generated with frames='none'."""
    files = [str(p) if p.is_file() else None for p in pngs]
    return files if any(files) else None


# The identity record (identity.json): written by the generator's corpus writer, read by every reader here.
IDENTITY_FIELDS = ("identity", "index", "slot", "split", "gender", "attributes", "seed", "run_seed", "prompt",
                   "still", "weights", "sampler", "motion", "labels", "settings_fingerprint", "videos")
VIDEO_FIELDS = ("set", "video_id", "driving_template", "num_frames", "fps", "width", "height", "mp4", "frames",
                "encoder", "gop", "labels", "motion", "disagreement")  # gop: absent in records made before it
# What the readers need (records of earlier versions may lack the rest)
_READ_FIELDS = ("identity", "index", "gender", "seed", "prompt", "videos")
_READ_VIDEO_FIELDS = ("set", "video_id", "driving_template", "num_frames", "fps", "width", "height", "mp4", "labels")


def identity_record(**fields) -> dict:
    """The record of one identity as the writer stores it: every field of `IDENTITY_FIELDS`, each video's of
    `VIDEO_FIELDS`, and the schema tag."""
    missing = [name for name in IDENTITY_FIELDS if name not in fields]
    missing += [f"videos[{i}].{name}" for i, video in enumerate(fields.get("videos") or [])
                for name in VIDEO_FIELDS if name not in video]
    extra = sorted(set(fields) - set(IDENTITY_FIELDS))
    if missing or extra:
        raise TypeError(f"identity record: missing {missing}, unknown {extra}")
    return {"schema": IDENTITY_SCHEMA, **fields}


def check_identity_record(record, path: Path) -> dict:
    """`record` read from `path`, if it is an identity record the readers can use; else a CorpusError naming it."""
    if not isinstance(record, dict) or record.get("schema") != IDENTITY_SCHEMA:
        schema = record.get("schema") if isinstance(record, dict) else type(record).__name__
        raise CorpusError(f"{path} is not a generated identity record (schema {schema!r})")
    missing = [name for name in _READ_FIELDS if name not in record]
    videos = record.get("videos")
    if not isinstance(videos, list) or not all(isinstance(v, dict) for v in videos):
        missing.append("videos (a list of video records)")
    else:
        missing += [f"videos[{i}].{name}" for i, video in enumerate(videos) for name in _READ_VIDEO_FIELDS
                    if name not in video]
    if missing:
        raise CorpusError(f"{path} is a damaged identity record: it lacks {', '.join(missing)}")
    return record


def identity_columns(record: dict, video: dict) -> dict:
    return rows.identity_columns(video["video_id"], record["identity"], record["gender"], video["set"],
                                 video["driving_template"])


MANIFEST_COLUMNS = [
    "identity", "index", "slot", "split", "gender", "attributes", "seed", "run_seed", "prompt", "weights",
    "sampler", "motion", "labels", "settings_fingerprint", "num_videos", "num_frames",
    *[f"attr_{name}" for name in ("age_band", "hairstyle", "facial_hair", "glasses", "face_mask", "expression",
                                  "category", "head_pose")],
]


def manifest_row(record: dict) -> dict:
    """One identity as a flat row: nested settings as JSON text, attributes also as their own columns."""
    def text(value) -> str:
        return json.dumps(value, sort_keys=True)

    row = {
        "identity": record["identity"], "index": record["index"], "slot": record["slot"],
        "split": record.get("split") or synthetic_split(record["index"]), "gender": record["gender"],
        "attributes": text(record["attributes"]), "seed": record["seed"], "run_seed": record["run_seed"],
        "prompt": record["prompt"], "weights": text(record["weights"]), "sampler": text(record["sampler"]),
        "motion": text(record["motion"]), "labels": text(record["labels"]),
        "settings_fingerprint": record["settings_fingerprint"], "num_videos": len(record["videos"]),
        "num_frames": sum(v["num_frames"] for v in record["videos"]),
    }
    for name, value in record["attributes"].items():
        if f"attr_{name}" in MANIFEST_COLUMNS:
            row[f"attr_{name}"] = value
    return row
