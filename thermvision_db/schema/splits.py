"""Identity-disjoint, gender-balanced splits.

Both videos of an identity animate the same still, so background and hair identify a subject even with the
face masked: a frame-level or video-level split would leak identities between train and test.
"""

from __future__ import annotations

from thermvision_db.errors import InputError

SPLIT_NAMES = ("train", "validation", "test")

# Fixed once (seeded draw of 3 female + 3 male identities per held-out split), listed in the README.
RELEASED_SPLITS: dict[str, tuple[str, ...]] = {
    "validation": ("F_16", "F_29", "F_30", "M_07", "M_25", "M_28"),
    "test": ("F_08", "F_14", "F_28", "M_03", "M_05", "M_24"),
}


def released_split(identity: str) -> str:
    """The split of a released identity key such as `F_01`; every identity not held out trains."""
    for split, members in RELEASED_SPLITS.items():
        if identity in members:
            return split
    return "train"


def synthetic_split(identity_index: int) -> str:
    """Generated identities: 19 / 3 / 3 of every 25 consecutive indices (76 / 12 / 12 %).

    25 is odd, so with genders alternating by index each block of 50 identities is gender-balanced per split.
    """
    slot = identity_index % 25
    return "train" if slot < 19 else ("validation" if slot < 22 else "test")


def assign(identities: list[str], split_by: str = "identity", splitter=released_split) -> dict[str, list[str]]:
    """Group identities by split; `split_by="none"` puts everything in train."""
    if split_by not in {"identity", "none"}:
        raise InputError(f"split_by must be 'identity' or 'none', got {split_by!r}")
    groups: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES} if split_by == "identity" else {"train": []}
    for identity in identities:
        groups["train" if split_by == "none" else splitter(identity)].append(identity)
    return groups
