"""train.cache_features with augmentation: crops and flips taken on the cached full-frame map.

The reference is the dataset's own training transform (ClipTransform's random resized crop and
flip, with its random draws forced to a given position) followed by the backbone: for a backbone
that commutes with shifts of its stride (here an average pool of stride 16), the cached map's
crop must equal the backbone's output on the crop, and its boxes the transform's boxes.
"""

import copy
import itertools
import logging

import numpy as np
import pytest
import torch
from torch import nn

from strg.data.collate import make_collate
from strg.data.datasets import ClipDataset, VideoRecord
from strg.data.testing import write_video
from strg.data.transforms import ClipTransform
from strg.engine import train
from strg.engine.checkpoint import list_checkpoints, load_checkpoint
from strg.engine.feature_cache import AugmentedFeatures, build_feature_cache
from strg.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

FRAMES = 4


class BoxClips(ClipDataset):
    """A ClipDataset whose proposals are fixed boxes in pixels of the decoded frame."""

    def _boxes(self, rec, idx, fps, size):
        w = size[1]
        base = torch.tensor([[2.0, 3.0, 20.0, 30.0], [w - 25.0, 10.0, w - 3.0, 40.0], [20.0, 15.0, 45.0, 44.0]])
        boxes = torch.stack([base + torch.tensor([2.0 * t, 0.0, 2.0 * t, 0.0]) for t in range(len(idx))])
        return boxes, torch.ones(len(idx), 3, dtype=torch.bool)


def videos(tmp_path, n=4, height=48, width=64):
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        path = write_video(tmp_path / f"v{i}.mp4", rng.integers(0, 256, (FRAMES, height, width, 3), dtype=np.uint8))
        recs.append(VideoRecord(video_id=str(i), path=path, label=i % 2))
    return recs


def dataset(recs, *, short=48, crop=32, flip=True):
    transform = ClipTransform(training=True, train_short_side=(short, short), crop_size=crop, flip=flip)
    return BoxClips(recs, ["a", "b"], multi_label=False, training=True, transform=transform, num_frames=FRAMES,
                    stride=1.0, max_boxes=3)


class PoolBackbone(nn.Module):
    """Average pool of stride 16 over space: shifting the input by 16 px shifts the output by a cell."""

    spatial_stride = 16

    def forward(self, x):
        return nn.functional.avg_pool3d(x, (1, 16, 16))


class Scripted:
    """A numpy Generator stand-in that forces ClipTransform's draws: scale, top, left, flip."""

    def __init__(self, short, top, left, flip):
        self.ints = [short, top, left]
        self.flip = flip

    def integers(self, lo, hi):
        value = self.ints.pop(0)
        assert lo <= value < hi, (lo, value, hi)
        return value

    def random(self):
        return 0.0 if self.flip else 1.0


class Forced:
    """The dataset's transform with its random draws scripted."""

    def __init__(self, transform, generator):
        self.transform, self.generator = transform, generator

    def __call__(self, frames, boxes, mask, view=0, generator=None):
        return self.transform(frames, boxes, mask, generator=self.generator)


def real_boxes(boxes, mask):
    """The real boxes of each frame as a sorted list (the order of padded slots is irrelevant)."""
    return [sorted(map(tuple, b[m].tolist())) for b, m in zip(boxes, mask)]


def test_cached_crops_and_flips_equal_the_backbone_on_the_transformed_clip(tmp_path):
    """4:3 frames (48 x 64), crop 32, flip: every (view, position) of the cached map equals the
    backbone on ClipTransform's clip at that crop, with the same boxes and target."""
    ds = dataset(videos(tmp_path))
    model = nn.Module()
    model.backbone = PoolBackbone()
    collate = make_collate(3)
    cached = build_feature_cache(model, ds, collate_fn=collate, device=torch.device("cpu"), amp="none", batch_size=3,
                                 num_workers=0, settings={}, cache_dir=None, progress=False,
                                 log=logging.getLogger("test"), source="test")
    assert isinstance(cached, AugmentedFeatures) and len(cached) == len(ds)
    assert cached.features[0].shape == (2, 3, FRAMES, 3, 4)  # the frame and its mirror, the whole 48 x 64 frame
    w = 64
    for i, (v, oy, ox) in itertools.product(range(len(ds)), itertools.product((0, 1), (0, 1), (0, 1, 2))):
        draws = iter([v, oy, ox])
        cached._draw = lambda n, draws=draws: next(draws)
        item = cached[i]
        # the transform's crop: the mirrored view's position ox is the original's left = W - crop - 16 ox
        left = w - 32 - 16 * ox if v else 16 * ox
        ref_ds = copy.copy(ds)
        ref_ds.transform = Forced(ds.transform, Scripted(48, 16 * oy, left, v == 1))
        ref = collate([ref_ds[i]])
        expected = model.backbone(ref["clips"])[0]
        torch.testing.assert_close(item["features"], expected, rtol=1e-5, atol=1e-5)
        assert real_boxes(item["boxes"], item["box_mask"]) == real_boxes(ref["boxes"][0], ref["box_mask"][0])
        assert int(item["target"]) == int(ref["targets"][0])


def test_augmented_cache_draws_every_view_and_position(tmp_path):
    ds = dataset(videos(tmp_path, n=1))
    model = nn.Module()
    model.backbone = PoolBackbone()
    cached = build_feature_cache(model, ds, collate_fn=make_collate(3), device=torch.device("cpu"), amp="none",
                                 batch_size=1, num_workers=0, settings={}, cache_dir=None, progress=False,
                                 log=logging.getLogger("test"), source="test")
    torch.manual_seed(0)
    seen = {tuple(cached[0]["features"].flatten()[:4].tolist()) for _ in range(300)}
    assert len(seen) == 2 * 2 * 3  # 2 views x 2 rows x 3 columns of crop positions, all distinct here


def test_settings_the_cached_map_cannot_reproduce_are_refused(tmp_path):
    recs = videos(tmp_path, n=1)
    model = nn.Module()
    model.backbone = PoolBackbone()
    kw = {"collate_fn": make_collate(3), "device": torch.device("cpu"), "amp": "none", "batch_size": 1,
          "num_workers": 0, "settings": {}, "cache_dir": None, "progress": False, "log": logging.getLogger("test"),
          "source": "test"}
    ds = dataset(recs)
    ds.transform = ClipTransform(training=True, train_short_side=(48, 56), crop_size=32)
    with pytest.raises(ConfigError, match=r"train_short_side=\[S, S\]"):
        build_feature_cache(model, ds, **kw)
    with pytest.raises(ConfigError, match="multiple of the backbone's stride 16"):
        build_feature_cache(model, dataset(recs, crop=40), **kw)
    long = dataset(recs)
    long.num_frames = 2  # 2-frame clips of 4-frame videos: a random start
    with pytest.raises(ConfigError, match="drawn at random times") as err:
        build_feature_cache(model, long, **kw)
    assert "data.flip" not in str(err.value) and "crop_size" not in str(err.value)


def tiny_graph_config(init, **train_kw):
    return {
        "model": {"name": "joint_gcn_r50", "width": 4, "stage_blocks": [1, 1, 1, 1], "dim": 8, "gcn_layers": 1,
                  "frozen_bn": False, "dropout": 0.0},
        "data": {"kind": "random", "num_videos": 4, "num_classes": 2, "frames": FRAMES, "size": 32,
                 "boxes_per_frame": 3},
        "train": {"iterations": 3, "batch_size": 2, "batch_per_device": 2, "base_lr": 0.5, "base_batch": 2,
                  "checkpoint_period": 100, "log_period": 1, "num_workers": 0, "device": "cpu", "tensorboard": False,
                  "progress": False, "stage": "graph", "init": init, **train_kw},
        "eval": {"split": None},
    }


def test_engine_caches_4x3_video_and_square_video_trains_as_without(tmp_path):
    """Through train(): 4:3 video with a random crop and flip is cached (it used to be refused);
    square frames of side crop_size without flip train to the same weights with and without it."""
    backbone_cfg = tiny_graph_config(None)
    backbone_cfg["model"]["name"] = "i3d_r50"
    backbone_cfg["train"].update(stage="backbone", init=None)
    square = dataset(videos(tmp_path / "sq", height=32, width=32), short=32, crop=32, flip=False)
    train(backbone_cfg, run_dir=tmp_path / "i3d", train_set=square)

    wide = dataset(videos(tmp_path / "wide"))
    train(tiny_graph_config(str(tmp_path / "i3d"), cache_features=True), run_dir=tmp_path / "wide_run", train_set=wide)
    assert "crops and flips taken on it" in (tmp_path / "wide_run" / "log.txt").read_text()

    out = {}
    for cache in (False, True):
        train(tiny_graph_config(str(tmp_path / "i3d"), cache_features=cache), run_dir=tmp_path / f"sq_{cache}",
              train_set=square)
        out[cache] = load_checkpoint(list_checkpoints(tmp_path / f"sq_{cache}")[-1][1])["model"]
    assert any(out[False][k].abs().sum() > 0 for k in out[False] if k.startswith("graph_head.st.w_front"))
    for k in out[False]:
        # the same computation; the backbone ran on batches of another size (float sums in another order)
        torch.testing.assert_close(out[True][k], out[False][k], rtol=1e-4, atol=1e-5)
