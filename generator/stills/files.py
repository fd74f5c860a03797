"""A generated still and its files: `still_NNNNNN.png` + JSON sidecar, written atomically, read back checked."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from thermvision_db.errors import InputError
from thermvision_db.io.atomic import atomic_write

SIDECAR_SCHEMA = "thermvision-db/still/1"


# ----------------------------------------------------------------------------------------------- stills


@dataclass
class Still:
    """One generated identity still and everything needed to reproduce it."""

    index: int
    run_seed: int
    seed: int
    prompt: str
    attributes: dict
    image: Image.Image
    sidecar: dict = field(repr=False)




# ----------------------------------------------------------------------------------------------- files


def still_filename(index: int, suffix: str) -> str:
    return f"still_{index:06d}{suffix}"


def save_still(still: Still, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `still_NNNNNN.png` and its `.json` sidecar atomically (temp name, then rename)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, sidecar = out_dir / still_filename(still.index, ".png"), out_dir / still_filename(still.index, ".json")
    atomic_write(png, lambda f: still.image.save(f, format="PNG"), fsync=False)
    atomic_write(sidecar, lambda f: f.write(json.dumps(still.sidecar, indent=2, sort_keys=True).encode()), fsync=False)
    return png, sidecar


def load_still(path: str | os.PathLike) -> Still:
    """Read a still back from its PNG or JSON path; the sidecar must describe the PNG beside it."""
    path = Path(path)
    sidecar_path, png_path = path.with_suffix(".json"), path.with_suffix(".png")
    sidecar = json.loads(sidecar_path.read_text())
    if sidecar.get("schema") != SIDECAR_SCHEMA:
        raise InputError(f"{sidecar_path} is not a ThermVision still sidecar (schema {sidecar.get('schema')!r})")
    with Image.open(png_path) as handle:
        image = handle.convert("RGB")
    return Still(index=sidecar["identity_index"], run_seed=sidecar["run_seed"], seed=sidecar["seed"],
                 prompt=sidecar["prompt"], attributes=sidecar["attributes"], image=image, sidecar=sidecar)


def still_exists(out_dir: str | os.PathLike, index: int) -> bool:
    """True when both files of identity `index` are on disk (used to resume an interrupted run)."""
    out_dir = Path(out_dir)
    return all((out_dir / still_filename(index, s)).is_file() for s in (".png", ".json"))
