"""Region features: RoIAlign on each feature frame, then max-pool (paper section 3 and 4.1).

Boxes come per input frame; the T' feature frames see the boxes of every (T / T')-th input frame
(frames 0, 2, 4, ... of 32 for the R50, REFERENCE.md "Region features"). Time is folded into the
batch: features (B, C, T', H, W) -> (B*T', C, H, W), and the box of video b, frame t, goes to
RoIAlign with batch index b * T' + t, so every box meets its own frame. No Python loop.

Two implementations of the same RoIAlign (``aligned=True``, torchvision's sampling rule):

* ``"roi_align"``: ``torchvision.ops.roi_align``.
* ``"matmul"``: RoIAlign written as a matrix product. Bilinear interpolation is separable, so
  the 7x7 grid of box k on frame f is ``R_k F C_k^T`` with R_k (7 x H) and C_k (7 x W) the summed
  bilinear weights of the sampling rows and columns; stacking the outer products gives one
  (K*49 x H*W) weight matrix per frame and one batched matmul with the (H*W x C) frame features.
  No atomics in the backward and tensor cores under autocast: on a GPU, torchvision's kernel
  and the 7x7 max-pool behind it are most of the graph head's time (BENCHMARKS.md). It computes
  dense products over the whole (small: 14x14) map, so its FLOPs are higher than RoIAlign's
  (3.9 GMAC per clip at 16 frames x 50 boxes x 512 channels). Doing the rows and the columns in
  two products (0.8 GMAC) was slower on the CPU (215 vs 164 ms forward + backward,
  ``benchmarks/bench_roi.py``): its (K*7 x H*C) intermediate per frame costs more memory traffic
  than the dense product's FLOPs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import roi_align


def boxes_to_feature_frames(boxes: Tensor, mask: Tensor, num_feature_frames: int) -> tuple[Tensor, Tensor]:
    """Keep the boxes of the input frames that the feature frames stand for.

    Args:
        boxes (Tensor[B, T, K, 4]), mask (Tensor[B, T, K] bool): per input frame (T = clip
            length) or already per feature frame (T = T').
        num_feature_frames: T'.

    Returns:
        boxes (Tensor[B, T', K, 4]), mask (Tensor[B, T', K]): input frame t' * (T / T').
    """
    t = boxes.shape[1]
    if t == num_feature_frames:
        return boxes, mask
    if t % num_feature_frames != 0:
        raise ValueError(
            f"boxes are given for {t} frames, which is neither the {num_feature_frames} feature "
            f"frames nor a multiple of them"
        )
    step = t // num_feature_frames
    return boxes[:, ::step], mask[:, ::step]


def region_features(
    features: Tensor,
    boxes: Tensor,
    mask: Tensor,
    *,
    spatial_scale: float,
    output_size: int = 7,
    sampling_ratio: int = 0,
    impl: str = "roi_align",
) -> Tensor:
    """One feature vector per box: RoIAlign to output_size^2 then max-pool (paper section 3).

    Args:
        features (Tensor[B, C, T, H, W]): the video feature map.
        boxes (Tensor[B, T, K, 4]): x1, y1, x2, y2 in input pixels, one set per feature frame.
        mask (Tensor[B, T, K] bool): True for real boxes.
        spatial_scale: feature cells per input pixel (1/16 for the I3D ResNet).
        output_size: RoIAlign grid (7 in the paper).
        sampling_ratio: RoIAlign samples per bin (0: adaptive, as Detectron2).
        impl: ``"roi_align"`` (torchvision) or ``"matmul"`` (see the module docstring).

    Returns:
        Tensor[B, T, K, C]: zero for padded boxes.

    RoIAlign uses ``aligned=True`` (pixel centres at +0.5, the Detectron2 convention).
    """
    b, c, t, h, w = features.shape
    k = boxes.shape[2]
    if impl == "matmul":
        pooled = roi_align_matmul(features, boxes, output_size=output_size, spatial_scale=spatial_scale, sampling_ratio=sampling_ratio)
        # the 7x7 max-pool; max() keeps the argmax, so its backward is a scatter, where amax's
        # compares the whole (B, T, K, 49, C) grid with the maximum again (RoIAlign + max-pool forward +
        # backward at the paper configuration, CPU: 149 ms with max, 218 ms with amax; BENCHMARKS.md)
        pooled = pooled.max(dim=-2).values  # (B, T, K, C)
        return pooled * mask[..., None].to(pooled.dtype)
    if impl != "roi_align":
        raise ValueError(f"impl must be 'roi_align' or 'matmul', got {impl!r}")
    frames = features.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, C, H, W)
    index = torch.arange(b * t, device=boxes.device, dtype=boxes.dtype).repeat_interleave(k)  # (B*T*K,)
    rois = torch.cat([index[:, None], boxes.reshape(b * t * k, 4)], dim=1)  # (B*T*K, 5)
    # Padded boxes are computed too (they are zeros): this keeps every shape static (meta
    # tensors, torch.compile) at the cost of a few empty RoIs; they are masked below.
    pooled = roi_align(frames, rois.to(frames.dtype), output_size, spatial_scale, sampling_ratio, aligned=True)
    pooled = pooled.flatten(-2).max(dim=-1).values  # (B*T*K, C): the 7x7 max-pool
    pooled = pooled.reshape(b, t, k, c)
    return pooled * mask[..., None].to(pooled.dtype)


def _axis_weights(start: Tensor, size: Tensor, length: int, out: int, grid: Tensor, max_grid: int) -> Tensor:
    """Summed bilinear weights of the sampling points of each bin along one axis.

    torchvision's rule (aligned=True): bin p samples at start + p*size/out + (i + 0.5)*size/(out*grid)
    for i < grid; a point outside [-1, length] counts 0; below 0 it is clamped to 0; at or past
    length - 1 it takes the last cell.

    Args:
        start, size (Tensor[...]): box start and extent along the axis, in feature cells.
        length: feature map size along the axis.
        out: bins along the axis (7).
        grid (Tensor[...] int): samples per bin along the axis.
        max_grid: static upper bound of ``grid``.

    Returns:
        Tensor[..., out, length]: row p sums the interpolation weights of bin p's samples.
    """
    bin_size = size / out
    p = torch.arange(out, device=start.device, dtype=start.dtype)
    i = torch.arange(max_grid, device=start.device, dtype=start.dtype)
    g = grid.to(start.dtype)[..., None, None]
    pos = start[..., None, None] + p[:, None] * bin_size[..., None, None] + (i + 0.5) * bin_size[..., None, None] / g  # (..., out, G)
    used = (i < g) & (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0)
    low = pos.floor().clamp(max=length - 1)
    frac = torch.where(low >= length - 1, torch.zeros_like(pos), pos - low)
    high = (low + 1).clamp(max=length - 1)
    cells = torch.arange(length, device=start.device, dtype=start.dtype)
    weights = (1 - frac)[..., None] * (cells == low[..., None]) + frac[..., None] * (cells == high[..., None])  # (..., out, G, L)
    return (weights * used[..., None]).sum(dim=-2)  # (..., out, L)


def roi_align_matmul(
    features: Tensor, boxes: Tensor, *, output_size: int = 7, spatial_scale: float, sampling_ratio: int = 0
) -> Tensor:
    """RoIAlign (aligned=True) on every feature frame as one batched matrix product.

    Args:
        features (Tensor[B, C, T, H, W]).
        boxes (Tensor[B, T, K, 4]): x1, y1, x2, y2 in input pixels.

    Returns:
        Tensor[B, T, K, output_size**2, C]: the same values as ``torchvision.ops.roi_align``.

    With adaptive sampling (``sampling_ratio`` 0) a box takes ceil(extent / output_size)
    samples per bin along each axis, capped at ceil(map size / output_size): the cap only binds
    for boxes larger than the whole frame, which the data pipeline never gives (it clips boxes).
    """
    b, c, t, h, w = features.shape
    k = boxes.shape[2]
    rows, cols = bilinear_weights(boxes, (h, w), output_size=output_size, spatial_scale=spatial_scale,
                                  sampling_ratio=sampling_ratio)
    weights = rows[..., :, None, :, None] * cols[..., None, :, None, :]  # (B, T, K, 7, 7, H, W)
    weights = weights.reshape(b * t, k * output_size**2, h * w).to(features.dtype)
    frames = features.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)  # (B*T, H*W, C)
    pooled = torch.bmm(weights, frames)  # (B*T, K*49, C)
    return pooled.reshape(b, t, k, output_size**2, c)


def bilinear_weights(
    boxes: Tensor, size: tuple[int, int], *, output_size: int = 7, spatial_scale: float, sampling_ratio: int = 0
) -> tuple[Tensor, Tensor]:
    """The separable RoIAlign weights (aligned=True) of every box on an H x W map.

    Args:
        boxes (Tensor[..., 4]): x1, y1, x2, y2 in input pixels.
        size: (H, W) of the feature map.

    Returns:
        rows (Tensor[..., 7, H]), cols (Tensor[..., 7, W]): bin (p, q) of a box is
        ``rows[p] @ F @ cols[q]`` for a map F (H x W); rows carry the 1 / (samples per bin).
    """
    h, w = size
    coords = boxes.to(torch.promote_types(boxes.dtype, torch.float32)) * spatial_scale - 0.5  # aligned: centres at +0.5
    x1, y1, x2, y2 = coords.unbind(-1)  # (...) each
    height, width = y2 - y1, x2 - x1
    max_gy, max_gx = max(1, math.ceil(h / output_size)), max(1, math.ceil(w / output_size))
    if sampling_ratio > 0:
        gy = torch.full_like(height, sampling_ratio, dtype=torch.long)
        gx = torch.full_like(width, sampling_ratio, dtype=torch.long)
        max_gy = max_gx = sampling_ratio
    else:
        gy = torch.ceil(height / output_size).long().clamp(1, max_gy)
        gx = torch.ceil(width / output_size).long().clamp(1, max_gx)
    rows = _axis_weights(y1, height, h, output_size, gy, max_gy)  # (..., 7, H)
    cols = _axis_weights(x1, width, w, output_size, gx, max_gx)  # (..., 7, W)
    rows = rows / (gy * gx).to(rows.dtype)[..., None, None]  # the average over the samples
    return rows, cols
