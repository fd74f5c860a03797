"""Export a corpus to the formats other tools read: COCO keypoints, YOLO / YOLO-pose, Parquet + dataset card.

The loader's rows are the single source: every exporter walks `load_dataset(..., "frames")` rows, so boxes and
landmarks leave the package exactly as the loader returns them. Files are written under a temporary name and
renamed, so an interrupted export never leaves a half-written file that looks complete; a manifest
(`export_manifest`) records what each export wrote, so a later one never replaces a file the user put there.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import datasets
import yaml
from PIL import Image
from tqdm.auto import tqdm

from thermvision_db.errors import ThermVisionError
from thermvision_db.io.atomic import atomic_write_bytes, atomic_write_text
from thermvision_db.io.offline import hub_offline
from thermvision_db.schema.labels import NUM_LANDMARKS, SFTL54_FLIP_PAIRS, SFTL54_NAMES
from thermvision_db.tools.export_manifest import ExportManifest
from thermvision_db.tools.export_parquet import export_parquet

FORMATS = ("coco", "yolo", "yolo-pose", "parquet")
FACE_CATEGORY_ID = 1
# COCO OKS sigmas of the 54 SF-TL54 points, written into the COCO category (`oks_sigmas`) and given to
# `COCOeval.params.kpt_oks_sigmas`. One value for every point: 0.025, COCO's sigma for the eyes (its smallest,
# for the most precisely placed points); no per-point calibration of SF-TL54 annotators exists yet.
SFTL54_OKS_SIGMAS = [0.025] * NUM_LANDMARKS


class ExportError(ThermVisionError, ValueError):
    """An export that cannot run: unknown format, missing input folder, unwritable target."""


# ---------------------------------------------------------------------------------------------- file writing
def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- SF-TL54 skeleton
def sftl54_skeleton() -> list[list[int]]:
    """Edges (0-based) joining consecutive points of each SF-TL54 contour: jaw, brows, nose, closed eyes, mouth."""
    chains = [range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36)]
    edges = [[a, a + 1] for chain in chains for a in list(chain)[:-1]]
    edges += [[30, 33]]  # nose bridge tip to the lower nose centre
    for start in (36, 42):  # eyes are closed loops
        edges += [[start + i, start + (i + 1) % 6] for i in range(6)]
    edges += [[48, 49], [49, 50], [50, 51], [51, 48], [52, 53]]  # outer mouth loop, inner lip pair
    return edges


def flip_index() -> list[int]:
    """For each point, the index of its mirror image under a horizontal flip (YOLO-pose `flip_idx`)."""
    index = list(range(NUM_LANDMARKS))
    for a, b in SFTL54_FLIP_PAIRS:
        index[a], index[b] = b, a
    return index


# ---------------------------------------------------------------------------------------------- rows
def is_generated_corpus(folder: str | os.PathLike) -> bool:
    """A folder written by the generator (run.json or identities/), as opposed to the released corpus."""
    from thermvision_db.schema.generated_corpus import IDENTITIES_DIR, RUN_FILE

    return (Path(folder) / RUN_FILE).is_file() or (Path(folder) / IDENTITIES_DIR).is_dir()


GENERATED_CONFIG = {"frames": "synthetic", "videos": "synthetic_videos", "synthetic": "synthetic",
                    "synthetic_videos": "synthetic_videos"}


def load_rows(data_dir: str | os.PathLike, config: str = "frames", split: str | None = None,
              cache_dir: str | None = None, **config_kwargs) -> datasets.DatasetDict:
    """The loader's rows for `config` as a DatasetDict (one split when `split` is given).

    A generated corpus folder is read through the `synthetic` configurations (same schema): `frames` means
    `synthetic`, `videos` means `synthetic_videos`.
    """
    from thermvision_db.sources.base import is_url, local_folder

    if not is_url(data_dir):
        data_dir = local_folder(data_dir)
    if not is_url(data_dir) and not Path(data_dir).exists():
        raise ExportError(f"data folder {data_dir} does not exist; give the folder holding the zips or their extracted folders")
    from thermvision_db.hf.api import load_dataset

    if is_generated_corpus(data_dir):
        if config not in GENERATED_CONFIG:
            raise ExportError(f"{data_dir} is a generated corpus: it has frames and videos, not {config!r}")
        config_kwargs.pop("repair_boxes", None)  # generated labels are complete: nothing to repair
        loaded = load_dataset("thermvision_db", GENERATED_CONFIG[config], output_dir=str(data_dir),
                              cache_dir=cache_dir, **config_kwargs)
    else:
        loaded = load_dataset("thermvision_db", config, data_dir=data_dir, cache_dir=cache_dir, **config_kwargs)
    if split is None:
        return loaded
    if split not in loaded:
        raise ExportError(f"split {split!r} is not in this corpus; it has {sorted(loaded)}")
    return datasets.DatasetDict({split: loaded[split]})


def frame_name(row: dict) -> str:
    """A stable, unique file stem per frame: `F_01_S1_0003`."""
    return f"{row['video_id']}_{int(row['frame_index']):04d}"


def _faces(row: dict) -> list[dict]:
    return list(row.get("faces") or [])


def _iter_rows(dataset: datasets.Dataset, desc: str, progress: bool) -> Iterable[dict]:
    return tqdm(dataset, desc=desc, total=len(dataset), disable=not progress)


# ---------------------------------------------------------------------------------------------- COCO
def coco_categories() -> list[dict]:
    return [{
        "id": FACE_CATEGORY_ID, "name": "face", "supercategory": "face",
        "keypoints": list(SFTL54_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in sftl54_skeleton()],  # COCO skeletons are 1-based
        "flip_pairs": [list(pair) for pair in SFTL54_FLIP_PAIRS],  # 0-based, an extra field
        "oks_sigmas": list(SFTL54_OKS_SIGMAS),  # an extra field: COCOeval.params.kpt_oks_sigmas
    }]


def box_polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    """The box as a COCO polygon (clockwise from the top-left): pycocotools' annToMask, `segm` evaluation and
    torchvision's `masks` need one per annotation."""
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _labelled(x, y) -> bool:
    return x is not None and y is not None and math.isfinite(x) and math.isfinite(y)


def coco_keypoints(landmarks: list[list[float]] | None) -> tuple[list[float], int]:
    """Flat [x, y, v] * 54 and the labelled count (COCO `num_keypoints`): v=2 for a labelled point, `0, 0, 0`
    for an unlabelled one (NaN in the rows) and for every point of a face without landmarks."""
    if landmarks is None:
        return [0.0] * (3 * NUM_LANDMARKS), 0
    flat = []
    for x, y in landmarks:
        flat += [float(x), float(y), 2] if _labelled(x, y) else [0.0, 0.0, 0]
    return flat, sum(1 for x, y in landmarks if _labelled(x, y))


def _frame_stems(dataset: datasets.Dataset) -> list[str]:
    keys = dataset.select_columns(["video_id", "frame_index"])
    return [frame_name(row) for row in keys]


def coco_files(rows: datasets.DatasetDict, out: Path) -> list[Path]:
    return [p for split, dataset in rows.items() for p in
            [*(out / "images" / split / f"{stem}.png" for stem in _frame_stems(dataset)), out / "annotations" / f"{split}.json"]]


def export_coco(rows: datasets.DatasetDict, out: Path, progress: bool = True,
                manifest: ExportManifest | None = None) -> list[Path]:
    """`annotations/<split>.json` (COCO keypoints) and `images/<split>/<frame>.png` per split."""
    manifest = manifest or ExportManifest(out, "coco", overwrite=True)
    written = []
    for split, dataset in rows.items():
        names = dataset.features["identity"].names
        images, annotations = [], []
        for image_id, row in enumerate(_iter_rows(dataset, f"coco {split}", progress), start=1):
            file_name = f"{split}/{frame_name(row)}.png"
            picture = row["image"]
            atomic_write_bytes(out / "images" / file_name, _png_bytes(picture))
            manifest.wrote(out / "images" / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": picture.width, "height": picture.height,
                           "video_id": row["video_id"], "frame_index": int(row["frame_index"]),
                           "identity": names[row["identity"]]})
            for face in _faces(row):
                x, y, w, h = (float(v) for v in face["bbox"])
                keypoints, visible = coco_keypoints(face["landmarks"])
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": FACE_CATEGORY_ID,
                                    "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0, "segmentation": box_polygon(x, y, w, h),
                                    "keypoints": keypoints, "num_keypoints": visible})
        document = {"info": {"description": "ThermVision-DB frames, SF-TL54 keypoints", "version": "1.0"},
                    "images": images, "annotations": annotations, "categories": coco_categories()}
        path = out / "annotations" / f"{split}.json"
        atomic_write_text(path, json.dumps(document))
        manifest.wrote(path)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------- YOLO
def yolo_line(face: dict, width: int, height: int, pose: bool) -> str:
    """`0 xc yc w h` normalised; YOLO-pose appends 54 `x y v` triples (v=2 labelled; `0 0 0` for an unlabelled
    point, as YOLO-pose writers do)."""
    x, y, w, h = (float(v) for v in face["bbox"])
    values = [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height]
    if pose:
        for px, py in face["landmarks"] or [(None, None)] * NUM_LANDMARKS:
            values += [px / width, py / height, 2] if _labelled(px, py) else [0.0, 0.0, 0]
    return "0 " + " ".join(f"{v:.6f}" if not isinstance(v, int) else str(v) for v in values)


def _yolo_split_name(split: str) -> str:
    return {"validation": "val"}.get(split, split)


def yolo_files(rows: datasets.DatasetDict, out: Path) -> list[Path]:
    return [out / "data.yaml"] + [p for split, dataset in rows.items() for stem in _frame_stems(dataset)
                                  for p in (out / "images" / split / f"{stem}.png", out / "labels" / split / f"{stem}.txt")]


def check_pose_labels(rows: datasets.DatasetDict) -> None:
    """YOLO-pose needs landmarks: none at all stops the export (54 `0 0 0` points per face train to zero loss,
    silently); some faces without them are counted in a warning."""
    faces = with_points = 0
    for dataset in rows.values():
        for row in dataset.select_columns(["faces"]):
            for face in _faces(row):
                faces += 1
                with_points += face.get("landmarks") is not None
    if faces and not with_points:
        raise ExportError("no face in this corpus has landmarks: a yolo-pose export would hold 54 unlabelled points "
                          "per face and a pose model would learn nothing from them; use --format yolo (boxes only)")
    if with_points < faces:
        warnings.warn(f"yolo-pose: {faces - with_points} of {faces} faces have no landmarks; their 54 points are "
                      f"written as unlabelled (0 0 0)", stacklevel=3)


def export_yolo(rows: datasets.DatasetDict, out: Path, pose: bool, progress: bool = True,
                manifest: ExportManifest | None = None) -> list[Path]:
    """`images/<split>/*.png`, `labels/<split>/*.txt` (an empty file for a frame without a face), `data.yaml`."""
    manifest = manifest or ExportManifest(out, "yolo-pose" if pose else "yolo", overwrite=True)
    if pose:
        check_pose_labels(rows)
    for split, dataset in rows.items():
        for row in _iter_rows(dataset, f"yolo {split}", progress):
            picture = row["image"]
            stem = frame_name(row)
            atomic_write_bytes(out / "images" / split / f"{stem}.png", _png_bytes(picture))
            lines = [yolo_line(face, picture.width, picture.height, pose) for face in _faces(row)]
            atomic_write_text(out / "labels" / split / f"{stem}.txt", "".join(line + "\n" for line in lines))
            manifest.wrote(out / "images" / split / f"{stem}.png")
            manifest.wrote(out / "labels" / split / f"{stem}.txt")
    splits = yolo_splits(list(rows))
    header = YOLO_YAML_HEADER
    if splits["val"] == splits["train"]:
        header += f"# WARNING: val is the training split ({splits['train']}): validation scores are training scores\n"
        warnings.warn(f"{out / 'data.yaml'}: the export has no validation or test split, so `val` is the training "
                      f"split ({splits['train']}) and ultralytics will validate on training images; export a "
                      f"corpus with a held-out split (every split: omit --split)", stacklevel=3)
    data = {"path": "", **splits, "names": {0: "face"}}
    if pose:
        data["kpt_shape"] = [NUM_LANDMARKS, 3]
        data["flip_idx"] = flip_index()
        data["kpt_names"] = {0: list(SFTL54_NAMES)}
    path = out / "data.yaml"
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))
    manifest.wrote(path)
    return [path]


YOLO_YAML_HEADER = (
    "# path is empty on purpose: ultralytics then resolves train/val/test against this file's folder, so the\n"
    "# export can be moved or copied. `val` is the validation split, else test, else train (ultralytics needs one).\n"
)


def yolo_splits(splits: list[str]) -> dict[str, str]:
    """`train`, `val` (always: ultralytics refuses a data.yaml without it) and `test` when exported."""
    folders = {_yolo_split_name(s): f"images/{s}" for s in splits}
    out = {"train": folders.get("train") or next(iter(folders.values()))}
    out["val"] = folders.get("val") or folders.get("test") or out["train"]
    if "test" in folders:
        out["test"] = folders["test"]
    return out


# ---------------------------------------------------------------------------------------------- Hub
def push_to_hub(folder: Path, repo_id: str, private: bool = True) -> str:
    """Upload an exported folder as a dataset repo; a clear error when the Hub cannot be reached."""
    try:
        from huggingface_hub import HfApi
    except ImportError as err:  # pragma: no cover - huggingface_hub ships with datasets
        raise ExportError("--push-to-hub needs huggingface_hub (pip install huggingface_hub)") from err
    if hub_offline():
        raise ExportError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set; the export is complete in {folder}, "
                          f"upload it later with `hf upload {repo_id} {folder} --repo-type dataset`")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset")
    except Exception as err:  # network, auth and permission errors all mean the same thing to the user
        raise ExportError(f"pushing {folder} to the Hub repo {repo_id} failed ({type(err).__name__}: {err}); "
                          "the local export is complete; check `hf auth login` (or HF_TOKEN) and the network") from err
    return str(getattr(commit, "commit_url", commit))


# ---------------------------------------------------------------------------------------------- entry point
EXPORTERS: dict[str, Callable[..., list[Path]]] = {
    "coco": lambda rows, out, config, progress, m: export_coco(rows, out, progress, m),
    "yolo": lambda rows, out, config, progress, m: export_yolo(rows, out, pose=False, progress=progress, manifest=m),
    "yolo-pose": lambda rows, out, config, progress, m: export_yolo(rows, out, pose=True, progress=progress, manifest=m),
    "parquet": lambda rows, out, config, progress, m: export_parquet(rows, out, config, progress, manifest=m),
}
PLANNED: dict[str, Callable[..., list[Path]]] = {
    "coco": lambda rows, out, config: coco_files(rows, out),
    "yolo": lambda rows, out, config: yolo_files(rows, out),
    "yolo-pose": lambda rows, out, config: yolo_files(rows, out),
    "parquet": lambda rows, out, config: [out / "README.md", *sorted((out / config).glob("*.parquet"))],
}


def export(data_dir: str | os.PathLike, fmt: str, out: str | os.PathLike, config: str = "frames",
           split: str | None = None, cache_dir: str | None = None, progress: bool = True,
           push_to_hub_repo: str | None = None, overwrite: bool = False, **config_kwargs) -> list[Path]:
    """Export `config` rows of the corpus in `data_dir` as `fmt` under `out`; returns the files written.

    Files in `out` that no earlier export wrote (see `export_manifest`) stop the export unless `overwrite`."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt != "parquet" and config not in ("frames", "synthetic"):
        raise ExportError(f"format {fmt!r} exports frame rows; use --config frames (or --format parquet for {config!r})")
    rows = load_rows(data_dir, config, split=split, cache_dir=cache_dir, **config_kwargs)
    out = Path(out)
    manifest = ExportManifest(out, fmt if fmt != "parquet" else f"parquet:{config}", overwrite)
    manifest.check(PLANNED[fmt](rows, out, config))
    out.mkdir(parents=True, exist_ok=True)
    written = EXPORTERS[fmt](rows, out, config, progress, manifest)
    manifest.finish()
    if push_to_hub_repo:
        push_to_hub(out, push_to_hub_repo)
    return written


# ---------------------------------------------------------------------------------------------- CLI
def add_export_parser(sub) -> None:
    """`thermvision-db export`: registered by `thermvision_db.cli.main`."""
    p = sub.add_parser("export", help="COCO keypoints, YOLO / YOLO-pose folders, or Parquet + dataset card")
    p.add_argument("data_dir", help="the corpus: zips or their extracted folders")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt", help="what to write")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", default="frames", choices=("frames", "videos", "images"), help="frames (all formats); videos or images (parquet only)")
    p.add_argument("--split", help="export one split only (train, validation, test)")
    p.add_argument("--cache-dir", help="datasets cache folder")
    p.add_argument("--repair-boxes", action="store_true", help="export interpolated boxes for missing frames")
    p.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder as a Hub dataset repo")
    p.add_argument("--overwrite", action="store_true", help="replace files in --out that no earlier export wrote")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    extra = {"repair_boxes": True} if args.repair_boxes else {}
    written = export(args.data_dir, args.fmt, args.out, config=args.config, split=args.split,
                     cache_dir=args.cache_dir, push_to_hub_repo=args.push_to_hub, overwrite=args.overwrite, **extra)
    print(f"wrote the {args.fmt} export to {args.out}: " + ", ".join(str(p.relative_to(args.out)) for p in written))
    return 0
