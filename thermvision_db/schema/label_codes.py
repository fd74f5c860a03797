"""Frame rows' class names as the integers `datasets` stores, looked up once per name.

`datasets` turns every ClassLabel name into its integer per row (`ClassLabel.str2int`, with its checks), which is
about 40 % of `Features.encode_example` on a frame row and is paid on every streamed and every cached row. The
builder hands `datasets` the integers instead, from plain dictionaries: the encoded row is the same, and a name
that is not a class is left as it is, so `datasets` still refuses it with its own error. An image that is only a
file path goes as the path string, which `datasets.Image` encodes to the same value.
"""

from __future__ import annotations

import datasets


class FrameLabelCodes:
    """The ClassLabel columns of the frame schema (identity, gender, set, qc and each face's source)."""

    COLUMNS = ("identity", "gender", "set", "qc")

    def __init__(self, features: datasets.Features):
        self.columns = {name: _codes(features[name]) for name in self.COLUMNS
                        if isinstance(features.get(name), datasets.ClassLabel)}
        faces = features.get("faces")
        face = getattr(faces, "feature", None)
        source = face.get("source") if isinstance(face, dict) else None
        self.source = _codes(source) if isinstance(source, datasets.ClassLabel) else None

    def encode(self, row: dict) -> dict:
        """`row` with its class names replaced by their integers (in place; returned for chaining), and an image
        that is only a file path given as the path string (`datasets.Image` encodes both alike; the string skips
        its file check and one level of its row walk)."""
        image = row.get("image")
        if isinstance(image, dict) and image.get("bytes") is None and isinstance(image.get("path"), str) \
                and len(image) == 2:
            row["image"] = image["path"]
        for name, codes in self.columns.items():
            value = row.get(name)
            if isinstance(value, str):
                row[name] = codes.get(value, value)
        if self.source is not None and row.get("faces"):
            for face in row["faces"]:
                value = face.get("source") if isinstance(face, dict) else None
                if isinstance(value, str):
                    face["source"] = self.source.get(value, value)
        return row


def _codes(label: datasets.ClassLabel) -> dict[str, int]:
    return {name: index for index, name in enumerate(label.names)}
