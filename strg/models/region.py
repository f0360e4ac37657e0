"""Region features: RoIAlign on each feature frame, then max-pool (paper section 3 and 4.1).

Boxes come per input frame; the T' feature frames see the boxes of every (T / T')-th input frame
(frames 0, 2, 4, ... of 32 for the R50, REFERENCE.md "Region features"). Time is folded into the
batch: features (B, C, T', H, W) -> (B*T', C, H, W), and the box of video b, frame t, goes to
RoIAlign with batch index b * T' + t, so every box meets its own frame. No Python loop.
"""

from __future__ import annotations

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
) -> Tensor:
    """One feature vector per box: RoIAlign to output_size^2 then max-pool (paper section 3).

    Args:
        features (Tensor[B, C, T, H, W]): the video feature map.
        boxes (Tensor[B, T, K, 4]): x1, y1, x2, y2 in input pixels, one set per feature frame.
        mask (Tensor[B, T, K] bool): True for real boxes.
        spatial_scale: feature cells per input pixel (1/16 for the I3D ResNet).
        output_size: RoIAlign grid (7 in the paper).
        sampling_ratio: RoIAlign samples per bin (0: adaptive, as Detectron2).

    Returns:
        Tensor[B, T, K, C]: zero for padded boxes.

    RoIAlign uses ``aligned=True`` (pixel centres at +0.5, the Detectron2 convention).
    """
    b, c, t, h, w = features.shape
    k = boxes.shape[2]
    frames = features.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, C, H, W)
    index = torch.arange(b * t, device=boxes.device, dtype=boxes.dtype).repeat_interleave(k)  # (B*T*K,)
    rois = torch.cat([index[:, None], boxes.reshape(b * t * k, 4)], dim=1)  # (B*T*K, 5)
    # Padded boxes are computed too (they are zeros): this keeps every shape static (meta
    # tensors, torch.compile) at the cost of a few empty RoIs; they are masked below.
    pooled = roi_align(frames, rois.to(frames.dtype), output_size, spatial_scale, sampling_ratio, aligned=True)
    pooled = pooled.amax(dim=(-2, -1))  # (B*T*K, C): the 7x7 max-pool
    pooled = pooled.reshape(b, t, k, c)
    return pooled * mask[..., None].to(pooled.dtype)
