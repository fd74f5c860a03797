"""Decoded frame rows with names instead of ClassLabel ids, so reports and pictures never index label lists by hand.

`datasets` returns ClassLabel columns (identity, gender, set, qc, faces[].source) as integers. Every consumer
that prints, draws or groups rows needs the names; this one helper does the mapping for released rows, rows of
a generated corpus and rows that already carry names (strings pass through unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from thermvision_db.features import GENDERS, SETS
from thermvision_db.labels import QC_NAMES, SOURCE_NAMES

# the fixed vocabularies of the shared schema; identity names depend on the corpus and come from its features
DEFAULT_NAMES: dict[str, list[str]] = {"gender": GENDERS, "set": SETS, "qc": QC_NAMES, "source": SOURCE_NAMES}


def label_names(features: Mapping | None = None) -> dict[str, list[str]]:
    """ClassLabel names per column (`source` for the faces' source), from `features` where given."""
    names = {key: list(values) for key, values in DEFAULT_NAMES.items()}
    if features is None:
        return names
    for column in ("identity", "gender", "set", "qc"):
        feature = features.get(column)
        if hasattr(feature, "names"):
            names[column] = list(feature.names)
    faces = features.get("faces")
    face = faces[0] if isinstance(faces, list) and faces else getattr(faces, "feature", None)
    if isinstance(face, Mapping) and hasattr(face.get("source"), "names"):
        names["source"] = list(face["source"].names)
    return names


def _name(value: Any, names: list[str] | None) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or names is None:
        return value  # already a name, null, or a corpus whose identity names are unknown
    if not 0 <= value < len(names):
        raise ValueError(f"class id {value} is outside the {len(names)} names {names[:5]}...")
    return names[value]


def named_frame_row(row: Mapping[str, Any], features: Mapping | None = None,
                    names: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """A copy of a frame row with identity, gender, set, qc and every face's source as names.

    Pass `names` (from `label_names`) when mapping many rows, to build the tables once. Without `features`
    an integer identity stays an integer: its names belong to the corpus, not the schema.
    """
    names = names if names is not None else label_names(features)
    out = dict(row)
    for column in ("identity", "gender", "set", "qc"):
        if column in out:
            out[column] = _name(out[column], names.get(column))
    if out.get("faces") is not None:
        out["faces"] = [{**face, "source": _name(face.get("source"), names["source"])} for face in out["faces"]]
    return out
