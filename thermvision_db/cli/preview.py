"""`thermvision-db preview`: a contact sheet or a GIF of a released corpus, the miniature, or a generated corpus.

The released layout is read member by member (nothing else is opened); a generated corpus folder (it holds
`run.json` or `identities/`) through its own identity records, the same rows `load_dataset(..., "synthetic")`
yields, without preparing an Arrow cache.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

from thermvision_db.errors import InputError

Rows = Callable[[], Iterator[tuple[str, dict]]]


def _released_videos(data_dir: str, repair: bool) -> list[tuple[str, Rows]]:
    from thermvision_db.sources.released import frame_rows
    from thermvision_db.sources.remote import open_release

    source = open_release(data_dir)
    return [(m.video_id, lambda m=m: frame_rows(source, m, repair_boxes=repair)) for m in source.present_members()]


def _generated_videos(data_dir: str) -> list[tuple[str, Rows]]:
    from thermvision_db.schema.generated_corpus import GeneratedCorpus

    corpus = GeneratedCorpus(data_dir)
    videos = []
    for record in corpus.records():
        for video in record["videos"]:
            def rows(record=record, video_id=video["video_id"]):
                return ((k, r) for k, r in corpus.frame_rows(record) if r["video_id"] == video_id)

            videos.append((video["video_id"], rows))
    if not videos:
        raise InputError(f"{data_dir} is a generated corpus without finished identities; generate some first "
                         f"(thermvision-db generate --out {data_dir})")
    return videos


def _pick(videos: list[tuple[str, Rows]], wanted: str | None, count: int, data_dir: str, generated: bool):
    if wanted is None:
        return videos[: max(1, count)]
    chosen = [v for v in videos if v[0] == wanted]
    if chosen:
        return chosen
    if generated:
        raise InputError(f"video {wanted!r} is not in the generated corpus {data_dir}; its videos look like {videos[0][0]}")
    from thermvision_db.schema.members import MEMBERS

    known = {m.video_id for m in MEMBERS}
    if wanted in known:
        raise InputError(f"video {wanted!r} is in the member table but not in this copy ({data_dir} holds {len(videos)} "
                         f"of {len(known)} videos, e.g. {videos[0][0] if videos else 'none'})")
    raise InputError(f"video {wanted!r} is not a ThermVision-DB video; ids look like {sorted(known)[0]}")


def run_preview(args) -> int:
    from PIL import Image

    from thermvision_db.tools.export import is_generated_corpus
    from thermvision_db.tools.pictures import SOURCE_COLOURS, contact_sheet, draw_annotations, save_gif, with_legend

    generated = is_generated_corpus(args.data_dir)
    videos = _generated_videos(args.data_dir) if generated else _released_videos(args.data_dir, args.repair)
    chosen = _pick(videos, args.video, args.videos, args.data_dir, generated)
    gif = str(args.out).lower().endswith(".gif")
    pictures, captions, drawn = [], [], set()
    for _, rows in chosen:
        rows = list(rows())
        step = 1 if gif else max(1, len(rows) // args.frames)
        for key, row in rows[::step][: None if gif else args.frames]:
            image = row["image"]
            picture = Image.open(image["path"] if image["bytes"] is None else io.BytesIO(image["bytes"]))
            pictures.append(draw_annotations(picture, row["faces"], row["qc"]))
            captions.append(f"{key} {row['qc']}")
            drawn.update(face.get("source") or "detector" for face in row["faces"])
    sources = [s for s in SOURCE_COLOURS if s in drawn] or ["detector"]
    out = Path(args.out)
    if gif:
        save_gif(pictures, out, fps=args.fps)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        sheet = contact_sheet(pictures, captions, columns=args.frames if len(chosen) > 1 else None, tile=args.tile)
        with_legend(sheet, sources=sources).save(out)
    colours = {"detector": "cyan from the detector", "interpolated": "magenta interpolated", "propagated": "yellow propagated"}
    print(f"wrote {out} ({len(pictures)} frames; boxes {', '.join(colours[s] for s in sources)}, landmarks red; "
          "border green ok, red missing, orange multiple, gray out of bounds)")
    return 0
