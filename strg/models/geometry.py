"""Box geometry for region nodes: where a box is and how it moves (an option, not in the paper).

The paper's node feature is the RoIAlign feature of its box (section 3): it says what is in the
box, and only through the receptive field where the box is. Box-based successors of the paper
(STIN, ORViT) also give each object's coordinates and trajectory to the model. With
``build_model(..., box_geometry=True)`` every region variant adds to each node's RoIAlign feature
an embedding of its box geometry (Table 2a's rows are built without it):

    x_i <- x_i + LN(MLP(BN(geo_i))),   MLP = Linear(16, d) -> ReLU -> Linear(d, d)

BN standardises each of the 16 numbers over the real nodes of the batch (:class:`MaskedBatchNorm`)
and LN is a LayerNorm over the d channels of the embedding. Both are open choices, measured in
docs/model.md: without them the embedding stays near its small initial scale, far below the
RoIAlign feature's spread over the nodes, and adds nothing. ``geo_i`` holds 16 numbers for
box i = (x1, y1, x2, y2) of feature frame t, on a frame of W x H input pixels:

* position and size: x1 / W, y1 / H, x2 / W, y2 / H, w / W, h / H (w = x2 - x1, h = y2 - y1);
* motion to the next feature frame: the **matched box** j of box i is the box of frame t + 1 with
  the largest IoU with i, among the real boxes of that frame, the same IoU sigma_ij that weighs
  the edges of the spatial-temporal graph (Eq. 3, :func:`strg.models.graphs.frame_pair_graphs`);
  ties go to the first box in the frame's order. If no box of frame t + 1 overlaps i (IoU 0:
  i has no edge in G_front) or t is the last frame, there is no match. The displacement is the
  R-CNN box delta, scale free: ((cx_j - cx_i) / w_i, (cy_j - cy_i) / h_i, log(w_j / w_i),
  log(h_j / h_i)), then a 1 / 0 flag for "matched" (zeros without a match);
* motion from the previous feature frame: the same five numbers for the match of i in frame
  t - 1 (the box k of frame t - 1 with the largest IoU with i, delta from k to i).

W and H are the feature map's extent in input pixels (H' / spatial_scale, W' / spatial_scale):
the module sees the backbone's output, not the clip (cached features have no clip). Padded
nodes get zero geometry. Sizes are clamped to 1e-3 pixels inside the logarithms.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from strg.models.graphs import box_iou_batched

#: numbers per node: 6 for the box, 5 for the match in each neighbouring frame
GEOMETRY_FEATURES = 16


def _delta(a: Tensor, b: Tensor) -> Tensor:
    """R-CNN box deltas from boxes a to boxes b (Tensor[..., 4] each, x1 y1 x2 y2) -> Tensor[..., 4]."""
    wa, ha = (a[..., 2] - a[..., 0]).clamp(min=1e-3), (a[..., 3] - a[..., 1]).clamp(min=1e-3)
    wb, hb = (b[..., 2] - b[..., 0]).clamp(min=1e-3), (b[..., 3] - b[..., 1]).clamp(min=1e-3)
    dx = ((b[..., 0] + b[..., 2]) - (a[..., 0] + a[..., 2])) / (2 * wa)
    dy = ((b[..., 1] + b[..., 3]) - (a[..., 1] + a[..., 3])) / (2 * ha)
    return torch.stack([dx, dy, torch.log(wb / wa), torch.log(hb / ha)], dim=-1)


def matched_boxes(boxes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The matched box in the next frame of every box (module docstring).

    Args:
        boxes (Tensor[B, T, K, 4]), mask (Tensor[B, T, K] bool).

    Returns:
        index (Tensor[B, T - 1, K] long): for box i of frame t, the index in frame t + 1 of its
        match; found (Tensor[B, T - 1, K] bool): whether it has one (IoU > 0 with a real box).
    """
    iou = box_iou_batched(boxes[:, :-1], boxes[:, 1:])  # (B, T-1, K, K): [i in t, j in t+1]
    iou = iou * (mask[:, :-1, :, None] & mask[:, 1:, None, :]).to(iou.dtype)
    best, index = iou.max(dim=-1)  # first maximum on ties
    return index, best > 0


def _prev_matches(boxes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """For box i of frame t >= 1: its match in frame t - 1 (largest IoU), as (index, found)
    of shape (B, T - 1, K), row t - 1 for frame t."""
    iou = box_iou_batched(boxes[:, 1:], boxes[:, :-1])  # (B, T-1, K, K): [i in t, k in t-1]
    iou = iou * (mask[:, 1:, :, None] & mask[:, :-1, None, :]).to(iou.dtype)
    best, index = iou.max(dim=-1)
    return index, best > 0


def box_geometry(boxes: Tensor, mask: Tensor, frame_size: tuple[float, float]) -> Tensor:
    """The 16 geometry numbers of every node (module docstring).

    Args:
        boxes (Tensor[B, T, K, 4]): x1 y1 x2 y2 in input pixels, one set per feature frame.
        mask (Tensor[B, T, K] bool): real boxes.
        frame_size: (H, W) of the frame in input pixels.

    Returns:
        Tensor[B, T, K, 16] (zeros for padded boxes).
    """
    h, w = frame_size
    boxes = boxes.float()
    b, t, k, _ = boxes.shape
    scale = boxes.new_tensor([w, h, w, h])
    pos = boxes / scale
    size = torch.stack([pos[..., 2] - pos[..., 0], pos[..., 3] - pos[..., 1]], dim=-1)
    nxt = boxes.new_zeros(b, t, k, 5)
    prv = boxes.new_zeros(b, t, k, 5)
    if t > 1:
        index, found = matched_boxes(boxes, mask)  # (B, T-1, K)
        target = torch.gather(boxes[:, 1:], 2, index[..., None].expand(-1, -1, -1, 4))  # (B, T-1, K, 4)
        delta = _delta(boxes[:, :-1], target) * found[..., None]
        nxt[:, :-1] = torch.cat([delta, found[..., None].to(delta.dtype)], dim=-1)
        index, found = _prev_matches(boxes, mask)
        source = torch.gather(boxes[:, :-1], 2, index[..., None].expand(-1, -1, -1, 4))
        delta = _delta(source, boxes[:, 1:]) * found[..., None]
        prv[:, 1:] = torch.cat([delta, found[..., None].to(delta.dtype)], dim=-1)
    geo = torch.cat([pos, size, nxt, prv], dim=-1)  # (B, T, K, 16)
    return geo * mask[..., None].to(geo.dtype)


class MaskedBatchNorm(nn.Module):
    """BatchNorm of node features over the real nodes of a batch (padding left out).

    x (Tensor[..., C]), mask (Tensor[...] bool) -> Tensor[..., C]: in training, standardised with
    the mean and (biased) variance of the real nodes and an affine map, the running statistics
    updated with ``momentum`` (unbiased variance, as ``nn.BatchNorm1d``; not by a batch of fewer
    than two real nodes); in evaluation, with the running statistics. Statistics in fp32. Written
    with masked sums, not boolean indexing, so that shapes do not depend on the data
    (``torch.compile``, meta tensors).
    """

    def __init__(self, channels: int, *, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.training:
            xf, m = x.float(), mask[..., None].float()  # statistics in fp32 whatever the input's dtype
            dims = tuple(range(x.dim() - 1))
            count = m.sum(dims)  # (1,)
            n = count.clamp(min=1)
            mean = (xf * m).sum(dims) / n  # (C,)
            var = ((xf - mean) ** 2 * m).sum(dims) / n
            with torch.no_grad():  # a batch of fewer than two real nodes leaves the running statistics
                step = self.momentum * (count > 1).float()
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.lerp_(mean, step)
                self.running_var.lerp_(unbiased, step)
        else:
            mean, var = self.running_mean, self.running_var
        out = (x.float() - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        return out.to(x.dtype)


class BoxGeometryEmbedding(nn.Module):
    """MLP(geo) for every node, to be added to its RoIAlign feature (module docstring).

    Args:
        dim: d, the node feature size.
        hidden: the MLP's hidden size (default d).
        input_norm: standardise the 16 numbers with a BatchNorm over the real nodes of the batch
            (:class:`MaskedBatchNorm`) before the MLP. They have very different ranges
            (positions in [0, 1], deltas around 0, flags 0 / 1), and a default-initialised MLP
            on them gives an embedding whose spread over nodes is far smaller than the RoIAlign
            feature's (docs/model.md, "Box geometry").
        output_norm: a LayerNorm on the embedding (unit spread over its d channels, whatever
            the MLP's weights' scale), so that it enters the node at the scale of the RoIAlign
            feature instead of growing there slowly from a small initial one.

    forward: boxes (Tensor[B, T, K, 4]), mask (Tensor[B, T, K] bool), frame_size (H, W) in input
    pixels -> Tensor[B, T, K, d] (zeros for padded boxes).
    """

    def __init__(self, dim: int, *, hidden: int | None = None, input_norm: bool = True, output_norm: bool = True):
        super().__init__()
        hidden = hidden or dim
        self.norm = MaskedBatchNorm(GEOMETRY_FEATURES) if input_norm else None
        self.mlp = nn.Sequential(nn.Linear(GEOMETRY_FEATURES, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.out_norm = nn.LayerNorm(dim) if output_norm else None

    def forward(self, boxes: Tensor, mask: Tensor, frame_size: tuple[float, float]) -> Tensor:
        geo = box_geometry(boxes, mask, frame_size).to(self.mlp[0].weight.dtype)  # (B, T, K, 16)
        if self.norm is not None:
            geo = self.norm(geo, mask)
        out = self.mlp(geo)  # (B, T, K, d)
        if self.out_norm is not None:
            out = self.out_norm(out)
        return out * mask[..., None].to(out.dtype)
