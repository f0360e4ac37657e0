"""Spatial transforms applied jointly to a clip's frames and its boxes (tv_tensors + v2 functional).

Training (paper section 6.1): random short side in ``[256, 320]``, then a random ``224 x 224``
crop, optionally a horizontal flip. Testing (fully convolutional, section 6.1): short side 256 and
the full frame, or ``views`` square crops spread along the long side (left / centre / right for
3 views, PySlowFast's "uniform crop"). Then ImageNet normalisation. Sizes are settings.

Boxes follow every step through the same torchvision functional ops on ``tv_tensors.BoundingBoxes``,
so a box stays on its object. After the crop, boxes are clipped to the crop; a box that leaves it
(less than ``min_box_size`` pixels of width or height left) is masked. Boxes end in pixels of the
transformed clip (docs/DESIGN.md, "The batch").

The training resize + crop is done as one ``resized_crop`` of the matching region of the original
frame, which is the same geometry (up to rounding the region to whole pixels) for far less work
than resizing the whole frame first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from strg.data.options import IMAGENET_MEAN, IMAGENET_STD
from strg.errors import ConfigError


__all__ = ["ClipTransform", "IMAGENET_MEAN", "IMAGENET_STD", "TransformResult"]


@dataclass
class TransformResult:
    """clip (Tensor[3, T, H, W] float32, normalised), boxes (Tensor[T, k, 4]) in clip pixels,
    box_mask (Tensor[T, k] bool), flipped (whether a horizontal flip was applied)."""

    clip: torch.Tensor
    boxes: torch.Tensor
    box_mask: torch.Tensor
    flipped: bool


def _bounding_boxes(boxes: torch.Tensor, canvas: tuple[int, int]) -> tv_tensors.BoundingBoxes:
    """XYXY boxes (Tensor[N, 4]) on ``canvas`` (h, w), left unclamped where torchvision allows
    (``clamping_mode``, torchvision >= 0.23); we clip to the final clip ourselves either way."""
    try:
        return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas, clamping_mode=None)
    except TypeError:  # older torchvision: clamps inside crop/resize, the same result after our clip
        return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas)


class ClipTransform:
    """Joint frame + box transform.

    Args:
        training: random scale / crop / flip when True, deterministic test views otherwise.
        train_short_side: (lo, hi), the short side is drawn uniformly from lo..hi (inclusive).
        crop_size: side of the square training crop.
        test_short_side: short side at test time.
        test_views: 1 = the full frame; n > 1 = n square crops of side ``test_short_side``
            spread evenly along the long side.
        flip: random horizontal flip (probability 0.5) in training.
        mean, std: normalisation (RGB, on [0, 1] values): ImageNet's by default; Kinetics
            models of PySlowFast and Caffe2 (video-nonlocal-net) used 0.45 and 0.225 for all three.
        min_box_size: boxes narrower or lower than this (pixels, after clipping) are masked.
    """

    def __init__(
        self,
        *,
        training: bool,
        train_short_side: Sequence[int] = (256, 320),
        crop_size: int = 224,
        test_short_side: int = 256,
        test_views: int = 1,
        flip: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        min_box_size: float = 1.0,
    ) -> None:
        lo, hi = (int(x) for x in train_short_side)
        if not 0 < lo <= hi:
            raise ConfigError(f"train_short_side must be (lo, hi) with 0 < lo <= hi, got {tuple(train_short_side)}")
        if crop_size > lo:
            raise ConfigError(f"crop_size {crop_size} is larger than the smallest training short side {lo}")
        if test_views < 1 or test_short_side < 1:
            raise ConfigError("test_views and test_short_side must be positive")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"mean and std must be 3 values (R, G, B) with std > 0, "
                              f"got mean {tuple(mean)}, std {tuple(std)}")
        self.training = training
        self.train_short_side = (lo, hi)
        self.crop_size = int(crop_size)
        self.test_short_side = int(test_short_side)
        self.test_views = int(test_views)
        self.flip = flip
        mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t
        self.min_box_size = float(min_box_size)

    def __call__(
        self,
        frames: torch.Tensor,
        boxes: torch.Tensor,
        box_mask: torch.Tensor,
        *,
        view: int = 0,
        generator: np.random.Generator | None = None,
    ) -> TransformResult:
        """Transform one clip.

        Args:
            frames (Tensor[T, H, W, 3] uint8): RGB frames as decoded.
            boxes (Tensor[T, k, 4] float32): x1 y1 x2 y2 in pixels of ``frames``.
            box_mask (Tensor[T, k] bool): real boxes.
            view: test view index in ``[0, test_views)``.
            generator: random source for training (default: a fresh unseeded one).
        """
        t, h, w, _ = frames.shape
        k = boxes.shape[1]
        video = tv_tensors.Video(frames.permute(0, 3, 1, 2))  # (T, 3, H, W), channels-last memory
        bbox = _bounding_boxes(boxes.reshape(-1, 4).float(), (h, w))  # (T * k, 4): frames share one canvas
        flipped = False
        if self.training:
            rng = generator if generator is not None else np.random.default_rng()
            short = int(rng.integers(self.train_short_side[0], self.train_short_side[1] + 1))
            # the crop region of the resized frame, mapped back to the original frame
            side = min(h, w, max(1, int(round(self.crop_size * min(h, w) / short))))
            top = int(rng.integers(0, h - side + 1))
            left = int(rng.integers(0, w - side + 1))
            size = [self.crop_size, self.crop_size]
            video = F.resized_crop(video, top, left, side, side, size, antialias=True)
            bbox = F.resized_crop(bbox, top, left, side, side, size)
            if self.flip and rng.random() < 0.5:
                video, bbox, flipped = F.horizontal_flip(video), F.horizontal_flip(bbox), True
        else:
            if not 0 <= view < self.test_views:
                raise IndexError(f"view {view} out of range for {self.test_views} test views")
            video = F.resize(video, [self.test_short_side], antialias=True)
            bbox = F.resize(bbox, [self.test_short_side])
            if self.test_views > 1:
                nh, nw = video.shape[-2:]
                side = min(nh, nw)
                offset = int(round((max(nh, nw) - side) * view / (self.test_views - 1)))
                top, left = (offset, 0) if nh > nw else (0, offset)
                video = F.crop(video, top, left, side, side)
                bbox = F.crop(bbox, top, left, side, side)
        out_h, out_w = video.shape[-2:]
        b = bbox.as_subclass(torch.Tensor).reshape(t, k, 4)
        # clip to the clip's frame; mask boxes that left it (docs/data.md)
        hi = torch.tensor([out_w, out_h, out_w, out_h], dtype=b.dtype)
        b = torch.minimum(b.clamp(min=0), hi)
        keep = ((b[..., 2] - b[..., 0]) >= self.min_box_size) & ((b[..., 3] - b[..., 1]) >= self.min_box_size)
        mask = box_mask & keep
        b = b.masked_fill(~mask[..., None], 0.0)
        # (T, 3, H, W) -> (3, T, H, W): reorder as uint8 (4x less memory traffic), then one fused
        # scale-and-shift: (x / 255 - mean) / std = x * scale + shift
        clip = video.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous().float()
        # on the GPU when the frames were decoded there (decode_backend torchcodec-cuda)
        clip = torch.addcmul(self.shift.to(clip.device), clip, self.scale.to(clip.device))
        return TransformResult(clip=clip, boxes=b, box_mask=mask, flipped=flipped)
