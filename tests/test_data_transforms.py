"""Joint frame + box transforms: painted rectangles stay under their boxes after scale, crop, flip."""

import numpy as np
import pytest
import torch

from strg.data import build_dataset
from strg.data.proposals import ProposalStore
from strg.data.testing import write_frame_folder
from strg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform
from strg.errors import ConfigError

H, W, T = 48, 64, 6
# two rectangles, one per colour channel: red well inside the frame, green at the right border
RECTS = np.array([[20, 10, 40, 30], [56, 30, 64, 44]], dtype=np.float32)


def _painted_frames():
    frames = np.zeros((T, H, W, 3), dtype=np.uint8)
    for c, (x1, y1, x2, y2) in enumerate(RECTS.astype(int)):
        frames[:, y1:y2, x1:x2, c] = 255
    return frames


def _unnormalise(clip):
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return clip * std + mean  # (3, T, H, W) in [0, 1]


def _check_alignment(clip, boxes, mask):
    img = _unnormalise(clip)
    hh, ww = img.shape[-2:]
    assert (boxes[..., [0, 2]] >= 0).all() and (boxes[..., [0, 2]] <= ww).all()
    assert (boxes[..., [1, 3]] >= 0).all() and (boxes[..., [1, 3]] <= hh).all()
    for t in range(img.shape[1]):
        for k in range(2):
            bright = img[k, t] > 0.5
            if not mask[t, k]:
                assert bright.sum() <= 2, "a masked box still has its rectangle in the clip"
                continue
            ys, xs = torch.nonzero(bright, as_tuple=True)
            painted = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            torch.testing.assert_close(boxes[t, k], painted, atol=1.5, rtol=0)


def test_transform_alignment_direct():
    frames = torch.from_numpy(_painted_frames())
    boxes = torch.from_numpy(np.broadcast_to(RECTS, (T, 2, 4)).copy())
    mask = torch.ones(T, 2, dtype=torch.bool)
    tr = ClipTransform(training=True, train_short_side=(40, 60), crop_size=32, flip=True)
    rng = np.random.default_rng(0)
    flips, masked = set(), 0
    for _ in range(25):
        out = tr(frames, boxes, mask, generator=rng)
        assert out.clip.shape == (3, T, 32, 32) and out.boxes.shape == (T, 2, 4)
        _check_alignment(out.clip, out.boxes, out.box_mask)
        flips.add(out.flipped)
        masked += int((~out.box_mask).any())
    assert flips == {True, False} and masked > 0  # both flips seen; the border box left some crops
    test = ClipTransform(training=False, test_short_side=36, test_views=3)
    for view in range(3):
        out = test(frames, boxes, mask, view=view)
        assert out.clip.shape == (3, T, 36, 36)
        _check_alignment(out.clip, out.boxes, out.box_mask)
    full = ClipTransform(training=False, test_short_side=36)(frames, boxes, mask)
    assert full.clip.shape == (3, T, 36, 48) and full.box_mask.all()
    torch.testing.assert_close(full.boxes[0], torch.from_numpy(RECTS) * 0.75)


def test_alignment_through_dataset_and_store(tmp_path):
    """Frames from a folder, boxes from the store every 2nd frame (nearest-frame fallback)."""
    write_frame_folder(tmp_path / "clips" / "v0", _painted_frames(), pattern="{:05d}.png")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    (tmp_path / "train.csv").write_text("path,labels\nclips/v0,a\n")
    with ProposalStore(tmp_path / "p.db", mode="w") as st:
        f = np.arange(0, T, 2)
        st.put("v0", frames=f, boxes=np.broadcast_to(RECTS, (len(f), 2, 4)), scores=np.tile([0.9, 0.8], (len(f), 1)),
               num_boxes=np.full(len(f), 2), frame_size=(H, W), fps=24.0)
    ds = build_dataset("manifest", split="train", training=True, manifest=str(tmp_path / "{split}.csv"),
                       classes_file=str(tmp_path / "classes.txt"), num_frames=T, stride=1, stride_unit="frames",
                       train_short_side=(40, 60), crop_size=32, flip=True, proposals=str(tmp_path / "p.db"),
                       max_boxes=2)
    torch.manual_seed(0)
    for _ in range(10):
        item = ds[0]
        assert item["target"].item() == 0
        _check_alignment(item["clip"], item["boxes"], item["box_mask"])


def test_flip_needs_label_map_for_something_something(tmp_path):
    with pytest.raises(ConfigError, match="crop_size 300"):
        ClipTransform(training=True, train_short_side=(256, 320), crop_size=300)
    from strg.data.datasets import read_flip_map

    (tmp_path / "flip.json").write_text('{"Pushing left": "Pushing right"}')
    perm = read_flip_map(str(tmp_path / "flip.json"), ["Pushing left", "Holding", "Pushing right"])
    assert perm.tolist() == [2, 1, 0]
    (tmp_path / "bad.json").write_text('{"Pushing left": "Pushing up"}')
    with pytest.raises(ConfigError, match="bad.json.*'Pushing up'"):
        read_flip_map(str(tmp_path / "bad.json"), ["Pushing left", "Pushing right"])


def test_normalisation_options(tmp_path):
    """data.mean / data.std (e.g. the Kinetics models' 0.45 / 0.225) reach the clips; bad values
    are refused."""
    frames = np.full((T, H, W, 3), 153, dtype=np.uint8)  # 0.6 on [0, 1]
    write_frame_folder(tmp_path / "clips" / "v0", frames, pattern="{:05d}.png")
    (tmp_path / "classes.txt").write_text("a\n")
    (tmp_path / "test.csv").write_text("path,labels\nclips/v0,a\n")
    options = dict(split="test", training=False, manifest=str(tmp_path / "{split}.csv"),
                   classes_file=str(tmp_path / "classes.txt"),
                   num_frames=T, stride=1, stride_unit="frames", test_clips=1, test_short_side=32)
    plain = build_dataset("manifest", **options)[0]["clip"]
    kinetics = build_dataset("manifest", mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225), **options)[0]["clip"]
    torch.testing.assert_close(plain[:, 0, 0, 0], (0.6 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    torch.testing.assert_close(kinetics, torch.full_like(kinetics, (0.6 - 0.45) / 0.225))
    with pytest.raises(ConfigError, match="std > 0"):
        build_dataset("manifest", std=(0.2, 0.0, 0.2), **options)
