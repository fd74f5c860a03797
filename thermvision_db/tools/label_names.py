"""Decoded frame rows with names instead of ClassLabel ids, so reports and pictures never index label lists by hand.

`datasets` returns ClassLabel columns (identity, gender, set, qc, faces[].source) as integers. Every consumer
that prints, draws or groups rows needs the names; this one helper does the mapping for released rows, rows of
a generated corpus and rows that already carry names (strings pass through unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from thermvision_db.errors import InputError
from thermvision_db.schema.features import GENDERS, SETS
from thermvision_db.schema.labels import QC_NAMES, SOURCE_NAMES

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
        raise InputError(f"class id {value} is outside the {len(names)} names {names[:5]}...")
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


# ---------------------------------------------------------------------------------------------- whole datasets
def _has_class_label(feature: Any) -> bool:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return True
    if isinstance(feature, Mapping):
        return any(_has_class_label(f) for f in feature.values())
    if isinstance(feature, (list, tuple)):
        return bool(feature) and _has_class_label(feature[0])
    inner = getattr(feature, "feature", None)  # datasets.List / LargeList / Sequence
    return inner is not None and _has_class_label(inner)


def _named_feature(feature: Any) -> Any:
    """The same feature tree with every ClassLabel replaced by a string Value."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return datasets.Value("string")
    if isinstance(feature, datasets.Features):
        return datasets.Features({k: _named_feature(f) for k, f in feature.items()})
    if isinstance(feature, Mapping):
        return {k: _named_feature(f) for k, f in feature.items()}
    if isinstance(feature, list):
        return [_named_feature(feature[0])]
    if isinstance(feature, datasets.LargeList):
        return datasets.LargeList(_named_feature(feature.feature))
    if getattr(feature, "feature", None) is not None:  # datasets.List (datasets >= 4) / Sequence
        return type(feature)(_named_feature(feature.feature), length=feature.length)
    return feature


def _named_array(array, feature: Any):
    """Arrow version of `_named_value`: only the parts holding a ClassLabel are rebuilt, images stay untouched."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        chunks = [_named_array(chunk, feature) for chunk in array.chunks]
        return pa.chunked_array(chunks, type=chunks[0].type if chunks else _named_arrow_type(feature))
    if not _has_class_label(feature):
        return array
    if isinstance(feature, datasets.ClassLabel):
        ids = pc.if_else(pc.less(array, 0), pa.scalar(None, array.type), array)  # -1: no label
        if len(array) and pc.max(ids).as_py() is not None and pc.max(ids).as_py() >= len(feature.names):
            raise InputError(f"class id {pc.max(ids).as_py()} is outside the {len(feature.names)} names {feature.names[:5]}...")
        return pc.take(pa.array(feature.names, pa.string()), ids)
    if isinstance(feature, Mapping):
        children = [_named_array(array.field(name), feature[name]) for name in (f.name for f in array.type)]
        fields = [pa.field(f.name, c.type) for f, c in zip(array.type, children)]
        return pa.StructArray.from_arrays(children, fields=fields, mask=array.is_null() if array.null_count else None)
    if pa.types.is_fixed_size_list(array.type):  # not in the project's schemas: the plain, slower way
        return pa.array([_named_value(v, feature) for v in array.to_pylist()], type=_named_arrow_type(feature))
    inner = feature[0] if isinstance(feature, list) else feature.feature
    values = _named_array(array.values, inner)  # `values` ignores a slice; `offsets` keep it
    cls = pa.LargeListArray if pa.types.is_large_list(array.type) else pa.ListArray
    return cls.from_arrays(array.offsets, values, mask=array.is_null() if array.null_count else None)


def _named_arrow_type(feature: Any):
    import datasets

    return datasets.Features({"x": _named_feature(feature)}).arrow_schema.field("x").type


def _named_value(value: Any, feature: Any) -> Any:
    """Python version for streamed rows: ClassLabel ids -> names, recursing through dicts and lists."""
    import datasets

    if value is None or not _has_class_label(feature):
        return value
    if isinstance(feature, datasets.ClassLabel):
        return None if isinstance(value, int) and value < 0 else _name(value, list(feature.names))
    if isinstance(feature, Mapping):
        return {k: _named_value(v, feature.get(k)) for k, v in value.items()}
    inner = feature[0] if isinstance(feature, list) else feature.feature
    if isinstance(value, Mapping):  # datasets 3.x Sequence of dicts: a dict of lists
        return {k: [_named_value(v, inner.get(k)) for v in vs] for k, vs in value.items()}
    return [_named_value(v, inner) for v in value]


def with_label_names(dataset):
    """The dataset with every ClassLabel column (identity, gender, set, qc, faces[].source, ...) as its names.

    `datasets` stores ClassLabel columns as integers, so `row["qc"] == "ok"` is never true on a loaded row.
    This returns the same rows with strings instead: for a `Dataset` by swapping only the label columns in the
    Arrow table (no copy of the images), for an `IterableDataset` lazily per row; a `DatasetDict` or
    `IterableDatasetDict` is mapped split by split. `dataset.features[column].names` keeps working on the
    original for the integer <-> name mapping.
    """
    import hashlib

    import datasets
    from datasets.table import InMemoryTable, MemoryMappedTable

    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return type(dataset)({split: with_label_names(part) for split, part in dataset.items()})
    features = dataset.features
    if features is None:
        raise InputError("with_label_names needs the dataset's features (they hold the label names); "
                         "this IterableDataset has none: load it with thermvision_db.load_dataset or call "
                         "._resolve_features() first")
    columns = [c for c, f in features.items() if _has_class_label(f)]
    if not columns:
        return dataset
    named = _named_feature(features)
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(lambda row: {c: _named_value(row[c], features[c]) for c in columns}, features=named)
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"with_label_names takes a datasets Dataset, IterableDataset or their dicts, not {type(dataset).__name__}")
    table = dataset.data
    if not isinstance(table, (MemoryMappedTable, InMemoryTable)):  # concatenated datasets: no set_column
        table = InMemoryTable(table.table)  # the same Arrow buffers (memory-mapped ones stay mapped), no copy
    for column in columns:
        index = table.column_names.index(column)
        new = _named_array(table.column(column), features[column])
        table = table.set_column(index, named.arrow_schema.field(column), new)
    info = dataset.info.copy()
    info.features = named
    fingerprint = hashlib.sha256(f"{dataset._fingerprint}:with_label_names".encode()).hexdigest()[:16]
    result = datasets.Dataset(table, info=info, split=dataset.split, indices_table=dataset._indices,
                              fingerprint=fingerprint)
    fmt = dataset.format
    if fmt["type"] is not None or fmt["columns"] is not None:
        result = result.with_format(fmt["type"], columns=fmt["columns"], output_all_columns=fmt["output_all_columns"],
                                    **fmt["format_kwargs"])
    return result
