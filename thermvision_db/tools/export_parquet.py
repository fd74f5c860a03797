"""Parquet export: shards of at most ~500 MB with the media embedded, and a card whose YAML changes with content.

`datasets.load_dataset(folder)` caches by the card's `dataset_info` and the declared data files, so both carry
the content: each shard's name holds the first 12 hex digits of its sha256 and the card records byte sizes.
A re-export into the same folder therefore never returns the previous rows. Every image gets a unique,
portable name (`F_01_S1_0003.png`), never an absolute path of the machine that exported it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import datasets
import pyarrow as pa
from tqdm.auto import tqdm

from thermvision_db.io.atomic import atomic_write_text

MAX_SHARD_BYTES = 500 * 1024**2
LICENSE_LINK = "https://huggingface.co/datasets/MAli-Farooq/ThermVision-DB"
TASKS = {"frames": ["object-detection", "keypoint-detection"], "videos": ["object-detection", "keypoint-detection"],
         "images": ["image-classification"]}
TAGS = ["thermal", "lwir", "infrared", "faces", "synthetic"]


def media_column(features: datasets.Features) -> str:
    return "video" if "video" in features else "image"


def _row_media_bytes(dataset: datasets.Dataset) -> list[int]:
    """Bytes each row's image or video will take once embedded (file size for a path, length for bytes).

    Read chunk by chunk with Arrow's own lengths: the memory-mapped bytes are never copied into Python.
    """
    import pyarrow.compute as pc

    column = dataset.data.column(media_column(dataset.features))
    if dataset._indices is not None:  # a selection: take the rows it points at
        column = column.take(dataset._indices.column(0))
    sizes = []
    for chunk in column.chunks:
        lengths = pc.binary_length(chunk.field("bytes")).to_pylist()
        for length, path, valid in zip(lengths, chunk.field("path").to_pylist(), chunk.is_valid().to_pylist()):
            if not valid:
                sizes.append(0)
            elif length is not None:
                sizes.append(length)
            else:
                try:
                    sizes.append(os.path.getsize(path))
                except (OSError, TypeError):
                    sizes.append(0)
    return sizes


def shard_ranges(sizes: list[int], max_bytes: int, overhead: int = 512) -> list[range]:
    """Contiguous row ranges whose media bytes (plus a small per-row overhead) stay under `max_bytes`."""
    ranges, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size + overhead > max_bytes:
            ranges.append(range(start, i))
            start, total = i, 0
        total += size + overhead
    ranges.append(range(start, len(sizes)))
    return ranges


def portable_names(table: pa.Table) -> list[str]:
    """One file name per row: `<video_id>_<frame>.png` for frames, `<video_id>.mp4` for videos, the relative
    `path` for 2D stills."""
    names = table.column_names
    if "frame_index" in names:
        return [f"{v}_{int(i):04d}.png" for v, i in zip(table["video_id"].to_pylist(), table["frame_index"].to_pylist())]
    if "video" in names:
        return [f"{v}.mp4" for v in table["video_id"].to_pylist()]
    return [str(p) for p in table["path"].to_pylist()]


def _embed_and_rename(table: pa.Table) -> pa.Table:
    from datasets.table import embed_table_storage

    table = embed_table_storage(table)
    column = "video" if "video" in table.column_names else "image"
    struct = table[column].combine_chunks()
    renamed = pa.StructArray.from_arrays([struct.field("bytes"), pa.array(portable_names(table), pa.string())],
                                         names=["bytes", "path"], mask=struct.is_null())
    return table.set_column(table.column_names.index(column), column, renamed)


def _write_shard(dataset: datasets.Dataset, folder: Path, split: str, index: int, count: int) -> Path:
    """Embed, write under a temporary name, then rename to a name holding the content's sha256."""
    embedded = dataset.with_format("arrow").map(_embed_and_rename, batched=True, batch_size=256,
                                                keep_in_memory=True).with_format(None)
    tmp = folder / f".{split}-{index:05d}.tmp"
    embedded.to_parquet(str(tmp))
    digest = hashlib.sha256()
    with open(tmp, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    target = folder / f"{split}-{index:05d}-of-{count:05d}-{digest.hexdigest()[:12]}.parquet"
    os.replace(tmp, target)
    return target


def size_category(rows: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < bound:
            return name
    return "n>1M"


def parquet_card(config: str, rows: datasets.DatasetDict, shards: dict[str, list[Path]], out: Path) -> str:
    """README.md: `configs` (the shard files), `dataset_info` (features, rows and bytes per split), licence
    fields, task and size categories, tags; the body lists each shard with its size and sha256 prefix."""
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    card_data = DatasetCardData()
    first = next(iter(rows.values()))
    splits = datasets.SplitDict()
    total_bytes = 0
    for name, dataset in rows.items():
        num_bytes = sum(p.stat().st_size for p in shards[name])
        total_bytes += num_bytes
        splits.add(datasets.SplitInfo(name=name, num_examples=len(dataset), num_bytes=num_bytes))
    info = datasets.DatasetInfo(features=first.features, splits=splits, download_size=total_bytes, dataset_size=total_bytes)
    datasets.info.DatasetInfosDict({config: info}).to_dataset_card_data(card_data)
    data_files = [{"split": s, "path": [str(p.relative_to(out)) for p in paths]} for s, paths in shards.items()]
    MetadataConfigs({config: {"data_files": data_files}}).to_dataset_card_data(card_data)
    card_data.license = "other"
    card_data.license_name = "non-commercial-research"
    card_data.license_link = LICENSE_LINK
    card_data.pretty_name = "ThermVision-DB (Parquet export)"
    card_data.task_categories = TASKS.get(config, TASKS["frames"])
    card_data.size_categories = [size_category(sum(len(d) for d in rows.values()))]
    card_data.tags = TAGS + (["video"] if config != "images" else [])
    listing = "".join(f"- `{p.relative_to(out)}`: {p.stat().st_size:,} bytes\n" for paths in shards.values() for p in paths)
    body = ("# ThermVision-DB, Parquet export\n\n"
            f"Exported by `thermvision-db export --format parquet` (configuration `{config}`). Load it without any "
            f"project code: `datasets.load_dataset(\"<this folder or repo>\", \"{config}\")`. Every field, its units and "
            "origin, the identity-disjoint splits, known issues and the licence stack (non-commercial) are described in "
            "the project's `dataset_card.md`. The licence is non-commercial research use: see the dataset page "
            f"{LICENSE_LINK}.\n\nShards (the name ends with the first 12 hex digits of the file's sha256):\n\n{listing}")
    return f"---\n{card_data.to_yaml()}\n---\n\n{body}"


def export_parquet(rows: datasets.DatasetDict, out: Path, config: str = "frames", progress: bool = True,
                   max_shard_bytes: int = MAX_SHARD_BYTES, manifest=None) -> list[Path]:
    """`<config>/<split>-NNNNN-of-NNNNN-<sha>.parquet` (media embedded, each <= max_shard_bytes of media) and the
    README.md card. Shards an earlier export wrote (its manifest) are removed once the new ones are written;
    a user's own files are never touched."""
    from thermvision_db.tools.export_manifest import ExportManifest

    manifest = manifest or ExportManifest(out, "parquet", overwrite=True)
    folder = out / config
    folder.mkdir(parents=True, exist_ok=True)
    shards: dict[str, list[Path]] = {}
    for split, dataset in tqdm(rows.items(), desc="parquet", disable=not progress):
        ranges = shard_ranges(_row_media_bytes(dataset), max_shard_bytes)
        shards[split] = [_write_shard(dataset.select(r), folder, split, i, len(ranges)) for i, r in enumerate(ranges)]
    readme = out / "README.md"
    atomic_write_text(readme, parquet_card(config, rows, shards, out))
    written = [p for paths in shards.values() for p in paths]
    for path in [*written, readme]:
        manifest.wrote(path)
    return written + [readme]

