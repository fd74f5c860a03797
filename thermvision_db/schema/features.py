"""One typed schema per row kind, shared by the released corpus and generated corpora.

Declared once here; `datasets.List` exists from 4.0 on and `Sequence` is its 3.x spelling.
"""

from __future__ import annotations

import datasets

from thermvision_db.schema.labels import NUM_LANDMARKS, QC_NAMES, SOURCE_NAMES

List = getattr(datasets, "List", None) or datasets.Sequence
GENDERS = ["female", "male"]
SETS = ["head_pose", "expression"]
CATEGORIES = ["frontal", "accessories", "beard", "mix", "head_poses"]


def _bbox():
    return List(datasets.Value("float32"), length=4)


def _landmarks():
    """(54, 2) pixel (x, y) points, null where the corpus has none; an unlabelled point is (NaN, NaN)."""
    return List(List(datasets.Value("float32"), length=2), length=NUM_LANDMARKS)


def _head_pose():
    return {"yaw": datasets.Value("float32"), "pitch": datasets.Value("float32"), "roll": datasets.Value("float32")}


def face_feature():
    """`score`: the detector's confidence where the label file carries one (YOLO `--save-conf`), else null."""
    return {"bbox": _bbox(), "landmarks": _landmarks(), "source": datasets.ClassLabel(names=SOURCE_NAMES),
            "score": datasets.Value("float32")}


def _identity_columns(identities: list[str]) -> dict:
    return {
        "video_id": datasets.Value("string"),
        "identity": datasets.ClassLabel(names=list(identities)),
        "gender": datasets.ClassLabel(names=GENDERS),
        "set": datasets.ClassLabel(names=SETS),
        "driving_template": datasets.Value("string"),
    }


def _motion_labels(per_frame) -> dict:
    """Labels of the generated motion: the expression segment's name and the eye/mouth opening driven
    (upstream LivePortrait's eye and lip ratios: eyes ~0.35 open, 0 closed; mouth 0 closed). Null for the
    released corpus, and where the motion program does not know them."""
    return {"expression": per_frame(datasets.Value("string")), "eye_open": per_frame(datasets.Value("float32")),
            "mouth_open": per_frame(datasets.Value("float32"))}


def frame_image_feature() -> datasets.Image:
    """The image of a frame row; also how clips decode PNG frames, so a clip's pixels equal the frame rows'."""
    return datasets.Image(mode="RGB")


def frame_features(identities: list[str]) -> datasets.Features:
    """One row per frame. `head_pose`, `seed`, `prompt`, `expression`, `eye_open` and `mouth_open` are null
    for the released corpus. Images are RGB whatever the file (generated gray frames are stored as 1-channel PNG)."""
    return datasets.Features(
        {
            "image": frame_image_feature(),
            **_identity_columns(identities),
            "frame_index": datasets.Value("int32"),
            "faces": [face_feature()],  # a Python list keeps list-of-dicts rows on datasets 3.x too
            "qc": datasets.ClassLabel(names=QC_NAMES),
            "head_pose": _head_pose(),
            "seed": datasets.Value("int64"),
            "prompt": datasets.Value("string"),
            **_motion_labels(lambda value: value),
        }
    )


def video_features(identities: list[str]) -> datasets.Features:
    """One row per video; `video` is stored undecoded and read by `thermvision_db.io.decode` (no torchcodec)."""
    return datasets.Features(
        {
            "video": datasets.Video(decode=False),
            **_identity_columns(identities),
            "num_frames": datasets.Value("int32"),
            "fps": datasets.Value("float32"),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "boxes": List(List(_bbox())),
            "landmarks": List(_landmarks()),
            "qc": List(datasets.ClassLabel(names=QC_NAMES)),
            "frame_files": List(datasets.Value("string")),  # per frame its local PNG, null where the MP4 is decoded
            "head_pose": List(_head_pose()),
            "seed": datasets.Value("int64"),
            "prompt": datasets.Value("string"),
            **_motion_labels(List),
        }
    )


def image_features() -> datasets.Features:
    """The 2D still categories: gender is null where the path does not say it."""
    return datasets.Features(
        {
            "image": datasets.Image(),
            "category": datasets.ClassLabel(names=CATEGORIES),
            "gender": datasets.ClassLabel(names=GENDERS),
            "path": datasets.Value("string"),
        }
    )
