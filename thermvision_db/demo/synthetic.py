"""The demo's generator step: `load_dataset(..., "synthetic")` with the tiny preset on the CPU.

Tiny random FLUX stills, animated by tiny random LivePortrait networks, labelled by propagation from the
template prior, written as a generated corpus and read back as frame rows. Random weights make noise pictures,
but every file, record, label and row is the real one, so a newcomer sees the whole pipeline run before
downloading any weights.
"""

from __future__ import annotations

from pathlib import Path


def run(out: Path, identities: int = 2, motion: str = "head_pose=24,expression=12") -> str:
    from thermvision_db import load_dataset
    from thermvision_db.tools.label_names import label_names, named_frame_row
    from thermvision_db.tools.pictures import contact_sheet, draw_annotations, save_gif, with_legend

    corpus = out / "generated"
    # still_batch = identities: the tiny FLUX samples exactly the stills used (the default block of 8 would make 8)
    ds = load_dataset("thermvision_db", "synthetic", num_identities=identities, motion=motion, output_dir=str(corpus),
                      cache_dir=str(out / "hf_cache"), generator_options={"still_batch": identities})["train"]
    names = label_names(ds.features)
    head_pose = [i for i, v in enumerate(ds["video_id"]) if v.endswith("_head_pose") and v.startswith("S000000")]
    picks = head_pose[:: max(1, len(head_pose) // 8)][:8]
    pictures, captions = [], []
    for i in picks:
        row = named_frame_row(ds[i], names=names)
        pictures.append(draw_annotations(row["image"], row["faces"], row["qc"]))
        pose = row["head_pose"]
        captions.append(f"{row['frame_index']}: yaw {round(pose['yaw'])} pitch {round(pose['pitch'])} roll {round(pose['roll'])}")
    sheet = out / "demo_generated.png"
    with_legend(contact_sheet(pictures, captions, columns=4, tile=192), sources=["propagated"]).save(sheet)
    frames = [named_frame_row(ds[i], names=names) for i in head_pose]
    save_gif([draw_annotations(r["image"], r["faces"], r["qc"]) for r in frames], out / "demo_generated.gif",
             fps=12, size=192)
    return (f"{identities} identities (tiny FLUX + tiny LivePortrait, random weights: noise by design) in {corpus}, "
            f"{ds.num_rows} labelled frame rows via load_dataset('thermvision_db', 'synthetic'); "
            f"picture with propagated boxes, landmarks and head pose: {sheet}")
