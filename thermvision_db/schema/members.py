"""The released corpus's facts: its member table (every video, frame and label path), archive names and checksums.

The archive's names are inconsistent (a double space, Face/Thermal folders, lower-case and `-n` file names)
and it holds other MP4 files too, so every path comes from the shipped member table: nothing is globbed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

HUB_REPO_ID = "MAli-Farooq/ThermVision-DB"
ARCHIVES = {
    "F": "Female Subjects.zip",
    "M": "Male Subjects.zip",
}
ARCHIVE_SHA256 = {
    "Male Subjects.zip": "24d59ed6b1559904089d9e0589c88e7b4945fe50d31ebf108a594f4fccb67318",
    "Female Subjects.zip": "45eccef45dffebd20ed422feb7be86caf6666c0a2dceadd47b28d72a0cddaeea",
}
GENDER_ROOT = {"F": "Female Subjects", "M": "Male Subjects"}
GENDER_NAME = {"F": "female", "M": "male"}


@dataclass(frozen=True)
class Member:
    """One released video and where its frames and labels live inside the archive."""

    video_id: str
    gender: str  # "F" / "M"
    subject: int
    set: int
    set_name: str
    driving_template: str
    num_frames: int
    video_member: str
    frames_dir: str
    labels_dir: str

    @property
    def identity(self) -> str:
        return f"{self.gender}_{self.subject:02d}"

    @property
    def gender_name(self) -> str:
        return GENDER_NAME[self.gender]

    def frame_png(self, index: int) -> str:
        return f"{self.frames_dir}/frame_{index:04d}.png"

    def label_txt(self, index: int) -> str:
        return f"{self.labels_dir}/frame_{index:04d}.txt"

    def landmark_candidates(self, index: int) -> list[str]:
        """Where landmark files would sit if an archive carries them (the release does not document it)."""
        detection = self.labels_dir.rsplit("/", 1)[0]
        return [f"{detection}/{folder}/frame_{index:04d}.txt" for folder in ("landmarks", "Landmarks", "landmark")]


def load_members() -> list[Member]:
    """The 100-video member table shipped with the package."""
    text = resources.files("thermvision_db").joinpath("data/members.tsv").read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO(text), delimiter="\t")
    return [
        Member(
            video_id=r["video_id"],
            gender=r["gender"],
            subject=int(r["subject"]),
            set=int(r["set"]),
            set_name=r["set_name"],
            driving_template=r["driving_template"],
            num_frames=int(r["num_frames"]),
            video_member=r["video_member"],
            frames_dir=r["frames_dir"],
            labels_dir=r["labels_dir"],
        )
        for r in rows
    ]


MEMBERS: list[Member] = load_members()
IDENTITIES: list[str] = sorted({m.identity for m in MEMBERS})

HUB_URL = f"hf://datasets/{HUB_REPO_ID}"
