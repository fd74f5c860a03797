import functools

import numpy as np
import pytest
import torch

from thermvision_db import load_dataset
from thermvision_db.tools.pytorch import ClipSampler, clip_dataset, collate_clips, collate_faces
from thermvision_db.io.decode import read_frames


def test_collate_faces_keeps_variable_boxes(mini, hf_cache):
    ds = load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=hf_cache, split_by="none", split="train")
    rows = {(r["video_id"], r["frame_index"]): r for r in ds}
    (double_video, (double_frame,)), = mini.multiple.items()
    (missing_video, missing_frames), = [(k, v) for k, v in mini.missing.items()][:1]
    batch = [rows[(double_video, double_frame)], rows[(missing_video, missing_frames[0])], rows[(double_video, 0)]]
    out = collate_faces(batch)
    assert out["image"].shape == (3, 3, mini.size, mini.size) and out["image"].dtype == torch.uint8
    assert [b.shape[0] for b in out["boxes"]] == [2, 0, 1]
    assert torch.allclose(out["boxes"][2][0], torch.tensor(mini.boxes[double_video][0]))
    assert out["landmarks"][2].shape == (1, 54, 2) and not torch.isnan(out["landmarks"][2]).any()
    assert out["frame_index"].tolist() == [double_frame, missing_frames[0], 0]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_faces)
    assert sum(len(b["boxes"]) for b in loader) == ds.num_rows


def test_collate_faces_torchvision_targets(mini, hf_cache):
    ds = load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=hf_cache, split_by="none", split="train")
    rows = {(r["video_id"], r["frame_index"]): r for r in ds}
    (double_video, (double_frame,)), = mini.multiple.items()
    (missing_video, missing_frames), = [(k, v) for k, v in mini.missing.items()][:1]
    batch = [rows[(double_video, 0)], rows[(missing_video, missing_frames[0])], rows[(double_video, double_frame)]]
    images, targets = collate_faces(batch, target_format="torchvision")
    coco = collate_faces(batch)
    assert len(images) == 3 and all(i.dtype == torch.float32 and i.shape == (3, mini.size, mini.size) for i in images)
    assert torch.equal(images[0], coco["image"][0].float() / 255)
    x, y, w, h = mini.boxes[double_video][0]  # the box the miniature placed, COCO pixels
    assert torch.allclose(targets[0]["boxes"], torch.tensor([[x, y, x + w, y + h]]))
    assert targets[0]["boxes"].dtype == torch.float32 and targets[0]["labels"].tolist() == [1]
    assert targets[0]["labels"].dtype == torch.int64
    assert targets[1]["boxes"].shape == (0, 4) and targets[1]["labels"].shape == (0,)  # a detector miss: a negative
    assert targets[2]["labels"].tolist() == [1, 1]  # the double detection keeps both boxes
    assert (targets[2]["boxes"][:, 2:] > targets[2]["boxes"][:, :2]).all()
    points = targets[0]["keypoints"]
    assert points.shape == (1, 54, 3) and torch.allclose(points[..., :2], coco["landmarks"][0]) and (points[..., 2] == 1).all()
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1,
                                         collate_fn=functools.partial(collate_faces, target_format="torchvision"))
    assert sum(len(t["boxes"]) for _, targets in loader for t in targets) == sum(len(r["faces"]) for r in ds)
    with pytest.raises(ValueError, match="target_format"):
        collate_faces(batch, target_format="xyxy")


def test_collate_faces_torchvision_drops_degenerate_boxes_and_marks_unlabelled_points():
    face = {"bbox": [4.0, 5.0, 0.0, 3.0], "landmarks": None}
    good = {"bbox": [1.0, 2.0, 3.0, 4.0], "landmarks": [[float("nan"), float("nan")]] + [[1.0, 1.0]] * 53}
    (image,), (target,) = collate_faces([{"image": np.zeros((8, 8, 3), np.uint8), "faces": [face, good]}], "torchvision")
    assert target["boxes"].tolist() == [[1.0, 2.0, 4.0, 6.0]] and target["labels"].tolist() == [1]
    assert target["keypoints"][0, 0].tolist() == [0.0, 0.0, 0.0] and target["keypoints"][0, 1].tolist() == [1.0, 1.0, 1.0]


def test_clip_sampler_indices():
    uniform = ClipSampler(4)
    assert uniform.indices(10).tolist() == [0, 3, 6, 9]
    rand = ClipSampler(3, mode="random", seed=1)
    a, b = rand.indices(50, "F_01_S1"), rand.indices(50, "F_01_S1")
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0) and len(a) == 3
    assert not np.array_equal(a, rand.indices(50, "M_07_S2")) or not np.array_equal(a, ClipSampler(3, "random", 2).indices(50, "F_01_S1"))
    with pytest.raises(ValueError):
        ClipSampler(0)


def test_clips_match_the_frame_rows_and_the_video(mini, hf_cache):
    """An extracted copy has every PNG: clips read them (the frame rows' pixels); `source="mp4"` decodes the video."""
    videos = load_dataset("thermvision_db", "videos", data_dir=mini.root, cache_dir=hf_cache, split_by="none", split="train")
    frames = load_dataset("thermvision_db", "frames", data_dir=mini.root, cache_dir=hf_cache, split_by="none", split="train")
    pixels = {(r["video_id"], r["frame_index"]): np.asarray(r["image"]) for r in frames}
    assert all(len(v["frame_files"]) == v["num_frames"] for v in videos)
    assert any(None in v["frame_files"] for v in videos)  # the miniature's missing and broken PNGs: the MP4 there
    clips = clip_dataset(videos, num_frames=3)
    for k in range(videos.num_rows):
        clip, row = clips[k], videos[k]
        picks = clip["frame_indices"].tolist()
        assert picks == [0, 4, 7]
        expected = np.stack([pixels[row["video_id"], i] for i in picks])
        assert torch.equal(clip["frames"], torch.from_numpy(expected).permute(0, 3, 1, 2)), row["video_id"]
    first = clips[0]
    assert np.allclose(first["clip_boxes"].numpy(), [mini.boxes[first["video_id"]][i] for i in [0, 4, 7]])
    from_mp4 = clip_dataset(videos, num_frames=3, source="mp4")[0]
    assert torch.equal(from_mp4["frames"], torch.from_numpy(read_frames(videos[0]["video"]["path"], [0, 4, 7])).permute(0, 3, 1, 2))
    batch = next(iter(torch.utils.data.DataLoader(clips, batch_size=2, collate_fn=collate_clips)))
    assert batch["frames"].shape == (2, 3, 3, mini.size, mini.size)
    with pytest.raises(ValueError, match="source must be one of"):
        ClipSampler(3, source="pngs")


def test_clips_from_zips_seek_in_the_video(mini_zips, hf_cache):
    """Frames inside a zip are not local files: `frame_files` is null and clips come from the MP4, which
    `source="png"` refuses by name."""
    videos = load_dataset("thermvision_db", "videos", data_dir=mini_zips.root, cache_dir=hf_cache, split_by="none", split="train")
    row = videos[0]
    assert row["frame_files"] is None and row["video"]["bytes"]
    clip = ClipSampler(3)(row)
    assert np.array_equal(clip["frames"], read_frames(row["video"]["bytes"], [0, 4, 7]).transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match=rf"{row['video_id']}.*no local PNG for frame\(s\) \[0, 4, 7\]"):
        ClipSampler(3, source="png")(row)


def test_streaming_clips_with_workers(mini):
    it = load_dataset("thermvision_db", "videos", data_dir=mini.root, split="train", split_by="none", streaming=True)
    loader = torch.utils.data.DataLoader(clip_dataset(it, 2), batch_size=2, num_workers=2, collate_fn=collate_clips)
    ids = [v for b in loader for v in b["video_id"]]
    assert sorted(ids) == sorted(m.video_id for m in mini.members)
    missing_video = next(iter(mini.missing))
    # a clip that contains a frame without a box carries NaN there
    clip = ClipSampler(mini.frames_per_video)
    row = next(r for r in load_dataset("thermvision_db", "videos", data_dir=mini.root, split="train", split_by="none", streaming=True)
               if r["video_id"] == missing_video)
    boxes = clip(row)["clip_boxes"]
    assert np.isnan(boxes[list(mini.missing[missing_video])]).all()
