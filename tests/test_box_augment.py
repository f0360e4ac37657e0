"""Random box shifts and dropped boxes in training (train.box_jitter, train.box_drop)."""

import math

import pytest
import torch
from test_feature_cache_augment import dataset, tiny_graph_config, videos

from strg.config import load_config
from strg.data.box_augment import augment_boxes
from strg.engine import train
from strg.engine.checkpoint import list_checkpoints, load_checkpoint
from strg.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _boxes(b=3, t=4, k=5, size=64.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, t, k, 2, generator=g) * size * 0.6
    wh = 4 + torch.rand(b, t, k, 2, generator=g) * size * 0.3
    boxes = torch.cat([xy, xy + wh], dim=-1)
    mask = torch.rand(b, t, k, generator=g) > 0.2
    return boxes.masked_fill(~mask[..., None], 0.0), mask


def test_no_augmentation_returns_the_boxes():
    boxes, mask = _boxes()
    out, out_mask = augment_boxes(boxes, mask, torch.arange(3), frame_size=(64, 64))
    assert out is boxes and out_mask is mask


def test_draws_depend_on_the_sample_key_alone():
    boxes, mask = _boxes()
    keys = torch.tensor([11, 22, 33])
    out, out_mask = augment_boxes(boxes, mask, keys, frame_size=(64, 64), jitter=0.2, drop=0.3)
    for i in range(3):  # the same sample alone, or in another batch at another place
        one, one_mask = augment_boxes(boxes[i:i + 1], mask[i:i + 1], keys[i:i + 1], frame_size=(64, 64),
                                      jitter=0.2, drop=0.3)
        torch.testing.assert_close(one[0], out[i])
        assert torch.equal(one_mask[0], out_mask[i])
    other, _ = augment_boxes(boxes, mask, keys + 1, frame_size=(64, 64), jitter=0.2, drop=0.3)
    assert not torch.equal(other, out)


def test_jitter_shifts_and_scales_by_sigma_of_the_box_size():
    n, sigma = 20000, 0.1
    box = torch.tensor([100.0, 200.0, 140.0, 260.0])  # w 40, h 60, far from the frame's edges
    boxes = box.expand(1, 1, n, 4).clone()
    mask = torch.ones(1, 1, n, dtype=torch.bool)
    out, out_mask = augment_boxes(boxes, mask, torch.tensor([5]), frame_size=(1000, 1000), jitter=sigma)
    assert out_mask.all()
    w, h = out[..., 2] - out[..., 0], out[..., 3] - out[..., 1]
    cx, cy = (out[..., 0] + out[..., 2]) / 2, (out[..., 1] + out[..., 3]) / 2
    for value, scale, centre in ((cx, 40.0, 120.0), (cy, 60.0, 230.0)):
        shift = (value - centre) / scale
        assert abs(shift.mean()) < 0.005 and abs(shift.std() - sigma) < 0.005
    for value, size in ((w, 40.0), (h, 60.0)):
        log_scale = (value / size).log()
        assert abs(log_scale.mean()) < 0.005 and abs(log_scale.std() - sigma) < 0.005


def test_boxes_stay_in_the_frame_and_small_or_padded_ones_are_masked():
    boxes, mask = _boxes(b=4, t=8, k=8)
    out, out_mask = augment_boxes(boxes, mask, torch.arange(4), frame_size=(48, 64), jitter=1.0, min_size=2.0)
    real = out[out_mask]
    assert (real[:, 0] >= 0).all() and (real[:, 2] <= 64).all() and (real[:, 1] >= 0).all()
    assert (real[:, 3] <= 48).all()
    assert ((real[:, 2] - real[:, 0]) >= 2).all() and ((real[:, 3] - real[:, 1]) >= 2).all()
    assert not (out_mask & ~mask).any()  # a padded box stays padded
    assert (out[~out_mask] == 0).all()


def test_drop_masks_each_real_box_with_probability_p():
    boxes, mask = _boxes(b=64, t=8, k=8)
    _, out_mask = augment_boxes(boxes, mask, torch.arange(64), frame_size=(64, 64), drop=0.3)
    kept = out_mask.sum().item() / mask.sum().item()
    n = mask.sum().item()
    assert abs(kept - 0.7) < 4 * math.sqrt(0.21 / n)
    with pytest.raises(ValueError, match="drop"):
        augment_boxes(boxes, mask, torch.arange(64), frame_size=(64, 64), drop=1.0)


def test_config_refuses_bad_values():
    base = tiny_graph_config(None)
    for key, value in (("box_drop", 1.0), ("box_drop", -0.1), ("box_jitter", -1.0)):
        cfg = {**base, "train": {**base["train"], key: value}}
        with pytest.raises(ConfigError, match=f"train.{key}"):
            load_config(cfg)


def test_training_with_box_augmentation_is_the_same_with_and_without_the_cache(tmp_path):
    """The draws are keyed to the sample: a graph run on square clips trains to the same weights
    whether the frozen backbone's output is cached or not, and to other weights than without
    augmentation."""
    backbone_cfg = tiny_graph_config(None)
    backbone_cfg["model"]["name"] = "i3d_r50"
    backbone_cfg["train"].update(stage="backbone", init=None)
    square = dataset(videos(tmp_path / "sq", height=32, width=32), short=32, crop=32, flip=False)
    train(backbone_cfg, run_dir=tmp_path / "i3d", train_set=square)
    out = {}
    for name, cache, aug in (("plain", True, {}), ("aug", False, {"box_jitter": 0.3, "box_drop": 0.3}),
                             ("aug_cached", True, {"box_jitter": 0.3, "box_drop": 0.3})):
        cfg = tiny_graph_config(str(tmp_path / "i3d"), cache_features=cache, **aug)
        train(cfg, run_dir=tmp_path / name, train_set=square)
        out[name] = load_checkpoint(list_checkpoints(tmp_path / name)[-1][1])["model"]
    for k in out["aug"]:
        torch.testing.assert_close(out["aug_cached"][k], out["aug"][k], rtol=1e-4, atol=1e-5)
    moved = [k for k in out["aug"]
             if k.startswith("graph_head.") and not torch.allclose(out["aug"][k], out["plain"][k])]
    assert moved, "box augmentation changed nothing in training"
