"""Training-time augmentation of the region proposals: random box shifts and dropped boxes.

Not in the paper, which trains on its detector's boxes as they are (section 3). A region head
that trains on a frozen backbone (stage ``graph``, section 6.1) sees the same map for a clip at
every epoch, more so when that map is cached (``train.cache_features``), and fits it: what still
varies from one epoch to the next is where its nodes are. Two perturbations, each a standard
one for region-based models, applied to the training batches only (``train.box_jitter``,
``train.box_drop``; both 0 by default, the paper's training):

* **jitter** (sigma): every real box (x1, y1, x2, y2) of width w and height h moves its centre
  by (e_x w, e_y h) and scales its width and height by exp(e_w), exp(e_h), the four e's drawn
  from N(0, sigma^2) for each box of each frame, independently; the box is then clipped to the
  frame and masked when less than ``min_size`` pixels of width or height are left (as
  :class:`strg.data.transforms.ClipTransform` does after a crop). It moves the RoIAlign sampling
  grid and the IoU graph's edges (Eq. 3) like a detector's localisation error.
* **drop** (p): every real box is masked with probability p (a missed detection); its node
  leaves the graphs and the mean.

The draws for sample i come from a generator seeded with its key (``batch["sample_keys"]``,
:mod:`strg.engine.sample_keys`), so they do not depend on the batch it is in, the number of
processes, or on whether the backbone's output was cached: the same clip with the same key gets
the same boxes on every path, and a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: added to a sample's key so that its box draws are not the draws of its dropout mask
_SALT = 0x5B0C_A06D


def augment_boxes(boxes: Tensor, mask: Tensor, keys: Tensor, *, frame_size: tuple[float, float],
                  jitter: float = 0.0, drop: float = 0.0, min_size: float = 1.0) -> tuple[Tensor, Tensor]:
    """Shift, scale and drop boxes at random (module docstring).

    Args:
        boxes (Tensor[B, T, K, 4]): x1 y1 x2 y2 in pixels of frames of ``frame_size`` (H, W).
        mask (Tensor[B, T, K] bool): real boxes.
        keys (Tensor[B] int64): one key per sample; sample i's draws depend on ``keys[i]`` alone.
        jitter: sigma of the centre shift (in box sizes) and of the log scale; 0: no shift.
        drop: probability of masking each real box; 0: none.
        min_size: boxes narrower or lower than this after clipping are masked.

    Returns:
        (boxes, mask) of the same shapes and devices; masked boxes are zeros.
    """
    if not 0.0 <= drop < 1.0 or jitter < 0.0:
        raise ValueError(f"box augmentation needs jitter >= 0 and 0 <= drop < 1, got jitter {jitter}, drop {drop}")
    if jitter == 0.0 and drop == 0.0:
        return boxes, mask
    b, t, k, _ = boxes.shape
    gen = torch.Generator()
    noise, keep = [], []
    for key in keys.tolist():  # drawn on the CPU, so the same on every device
        gen.manual_seed((int(key) + _SALT) % 2**63)
        noise.append(torch.randn(t, k, 4, generator=gen))
        keep.append(torch.rand(t, k, generator=gen) >= drop)
    noise = torch.stack(noise).to(boxes.device) * jitter  # (B, T, K, 4)
    keep = torch.stack(keep).to(boxes.device)  # (B, T, K)
    x = boxes.float()
    w, h = x[..., 2] - x[..., 0], x[..., 3] - x[..., 1]
    cx = (x[..., 0] + x[..., 2]) / 2 + noise[..., 0] * w
    cy = (x[..., 1] + x[..., 3]) / 2 + noise[..., 1] * h
    w, h = w * noise[..., 2].exp(), h * noise[..., 3].exp()
    fh, fw = frame_size
    hi = x.new_tensor([fw, fh, fw, fh])
    out = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    out = torch.minimum(out.clamp(min=0), hi)  # (B, T, K, 4), inside the frame
    big = ((out[..., 2] - out[..., 0]) >= min_size) & ((out[..., 3] - out[..., 1]) >= min_size)
    new_mask = mask & keep & big
    out = out.masked_fill(~new_mask[..., None], 0.0).to(boxes.dtype)
    return out, new_mask
