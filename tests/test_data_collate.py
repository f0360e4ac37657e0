"""collate_clips: padding and cutting boxes to K in score order, masks, skipped items."""

import pytest
import torch

from strg.data.collate import collate_clips, make_collate
from strg.errors import DataError


def _item(k, t=2, c=5, multi=False, vid="v", masked=()):
    boxes = torch.arange(t * k * 4, dtype=torch.float32).reshape(t, k, 4) + 1
    mask = torch.ones(t, k, dtype=torch.bool)
    for j in masked:
        mask[:, j] = False
    target = torch.zeros(c).index_fill_(0, torch.tensor([1, 3]), 1.0) if multi else torch.tensor(2)
    return dict(clip=torch.randn(3, t, 8, 8), boxes=boxes, box_mask=mask, target=target, video_id=vid,
                video_index=7, clip_index=1)


def test_pad_and_cut():
    items = [_item(1, vid="a"), _item(4, vid="b", masked=(1,)), None]
    batch = collate_clips(items, max_boxes=2)
    assert batch["clips"].shape == (2, 3, 2, 8, 8)
    assert batch["boxes"].shape == (2, 2, 2, 4) and batch["box_mask"].shape == (2, 2, 2)
    assert batch["num_skipped"] == 1 and batch["video_ids"] == ["a", "b"]
    assert batch["targets"].dtype == torch.int64 and batch["targets"].tolist() == [2, 2]
    assert batch["video_index"].tolist() == [7, 7] and batch["clip_index"].tolist() == [1, 1]
    # item a: one real box then padding
    assert batch["box_mask"][0].tolist() == [[True, False]] * 2
    assert torch.equal(batch["boxes"][0, :, 0], items[0]["boxes"][:, 0]) and (batch["boxes"][0, :, 1] == 0).all()
    # item b: box 1 is masked (cropped away): the two best real boxes are 0 and 2
    assert batch["box_mask"][1].all()
    assert torch.equal(batch["boxes"][1], items[1]["boxes"][:, [0, 2]])


def test_multi_label_and_all_skipped():
    batch = make_collate(3)([_item(2, multi=True), _item(2, multi=True)])
    assert batch["targets"].shape == (2, 5) and batch["targets"].dtype == torch.float32
    assert batch["boxes"].shape == (2, 2, 3, 4) and batch["box_mask"][:, :, 2].sum() == 0
    assert collate_clips([None, None], max_boxes=3) == {"num_skipped": 2}


def test_no_boxes_and_size_mismatch():
    a = _item(0)
    batch = collate_clips([a], max_boxes=4)
    assert batch["boxes"].shape == (1, 2, 4, 4) and not batch["box_mask"].any()
    b = _item(1)
    b["clip"] = torch.zeros(3, 2, 8, 10)
    with pytest.raises(DataError, match="different sizes"):
        collate_clips([a, b], max_boxes=4)
