"""Batching dataset items (docs/DESIGN.md, "The batch") with padded boxes and a box mask.

Items come from :mod:`strg.data.datasets`; ``None`` items are samples the dataset skipped under
``on_error="skip"``. They are dropped here and counted in ``batch["num_skipped"]``, so the engine
can report the count at the end of the epoch (docs/data.md "Bad input").
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from strg.errors import DataError

__all__ = ["collate_clips", "make_collate"]


def _pad_boxes(boxes: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the first ``k`` real boxes of each frame (items keep boxes in score order).

    Args:
        boxes (Tensor[T, k_in, 4]), mask (Tensor[T, k_in]).

    Returns:
        boxes (Tensor[T, k, 4]) with zeros in padded slots, mask (Tensor[T, k]).
    """
    t, k_in = mask.shape
    if k_in:
        # real boxes first, score order kept (stable sort); masked boxes (e.g. cropped away) last
        order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices  # (T, k_in)
        boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))
        mask = torch.gather(mask, 1, order)
    out_b = boxes.new_zeros((t, k, 4))
    out_m = mask.new_zeros((t, k))
    n = min(k, k_in)
    out_b[:, :n] = boxes[:, :n]
    out_m[:, :n] = mask[:, :n]
    out_b[~out_m] = 0.0
    return out_b, out_m


def collate_clips(items: Sequence[dict | None], max_boxes: int) -> dict:
    """Stack dataset items into a batch; boxes padded or cut to ``max_boxes`` per frame.

    Args:
        items: item dicts (``clip`` (Tensor[3, T, H, W]), ``boxes`` (Tensor[T, k, 4]),
            ``box_mask`` (Tensor[T, k]), ``target``, ``video_id``, ``video_index``,
            ``clip_index``); ``None`` for skipped samples.
        max_boxes: K, boxes kept per frame. Boxes beyond K are dropped in score order.

    Returns:
        dict with ``clips`` (Tensor[B, 3, T, H, W]), ``boxes`` (Tensor[B, T, K, 4]),
        ``box_mask`` (Tensor[B, T, K]), ``targets`` (Tensor[B] int64 or Tensor[B, C] float32),
        ``video_ids`` (list[str]), ``video_index`` (Tensor[B] int64), ``clip_index``
        (Tensor[B] int64) and ``num_skipped`` (int). When every item was skipped the batch is
        just ``{"num_skipped": n}``.
    """
    kept = [it for it in items if it is not None]
    # skipped: None items (evaluation) and the videos a training item replaced (its num_skipped)
    num_skipped = len(items) - len(kept) + sum(int(it.get("num_skipped", 0)) for it in kept)
    if not kept:
        return {"num_skipped": num_skipped}
    shapes = {tuple(it["clip"].shape) for it in kept}
    if len(shapes) > 1:
        raise DataError(
            f"clips of different sizes {sorted(shapes)} cannot be batched (videos {[it['video_id'] for it in kept]}); "
            "full-frame testing of videos with different aspect ratios needs batch size 1 or square test views"
        )
    padded = [_pad_boxes(it["boxes"], it["box_mask"], max_boxes) for it in kept]
    return {
        "clips": torch.stack([it["clip"] for it in kept]),  # (B, 3, T, H, W)
        "boxes": torch.stack([b for b, _ in padded]),  # (B, T, K, 4)
        "box_mask": torch.stack([m for _, m in padded]),  # (B, T, K)
        "targets": torch.stack([torch.as_tensor(it["target"]) for it in kept]),  # (B,) or (B, C)
        "video_ids": [it["video_id"] for it in kept],
        "video_index": torch.tensor([int(it["video_index"]) for it in kept], dtype=torch.int64),
        "clip_index": torch.tensor([int(it["clip_index"]) for it in kept], dtype=torch.int64),
        "num_skipped": num_skipped,
    }


def make_collate(max_boxes: int):
    """``collate_fn`` for a DataLoader (a picklable partial, works with spawn workers)."""
    return partial(collate_clips, max_boxes=max_boxes)
