"""The two graphs of a space-time region graph (paper sections 4.2 and 4.3).

Pure functions on batched, padded node sets: ``mask (Tensor[B, N] bool)`` is True for real nodes.
Padded nodes neither send nor receive: their rows and columns are 0 in every graph.

* :func:`similarity_graph`: G_sim, Eq. 1-2.
* :func:`spatial_temporal_graphs`: G_front and G_back, Eq. 3 and the backward graph, for nodes in
  any order (the reference form, dense N x N).
* :func:`frame_pair_graphs`: the same two graphs for nodes laid out frame by frame (N = T * K), as
  the T - 1 blocks of size K x K that can be non-zero. The model uses this form: it costs
  (T - 1) K^2 instead of (T K)^2 and gives the same messages (tested against the dense form).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def similarity_graph(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """Similarity graph G_sim (paper Eq. 1-2).

    F(x_i, x_j) = phi(x_i)^T phi'(x_j) (Eq. 1, no 1/sqrt(d) scaling in the paper), normalised by a
    softmax over each row across the real nodes j (Eq. 2).

    Args:
        a (Tensor[B, N, d]): phi(X).
        b (Tensor[B, N, d]): phi'(X).
        mask (Tensor[B, N] bool, optional): True for real nodes.

    Returns:
        Tensor[B, N, N]: row i holds softmax_j(a_i . b_j) over the real j; rows and columns of
        padded nodes are 0. A video without any real node gives all zeros (never NaN).
    """
    logits = a @ b.transpose(-1, -2)  # (B, N, N)
    if mask is None:
        return logits.softmax(dim=-1)
    # A finite fill (not -inf) keeps rows without any real column finite, forward and backward.
    col = mask[:, None, :]
    logits = logits.masked_fill(~col, torch.finfo(logits.dtype).min)
    graph = logits.softmax(dim=-1)
    return graph * (mask[:, :, None] & col).to(graph.dtype)


def box_iou_batched(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box of ``a`` with every box of ``b``, in continuous coordinates (no +1).

    a (Tensor[..., N, 4]), b (Tensor[..., M, 4]) as x1, y1, x2, y2 -> Tensor[..., N, M]. Empty
    boxes (zero area) have IoU 0 with everything.
    """
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def _normalise(x: Tensor, dim: int) -> Tensor:
    """x / x.sum(dim), with 0 (not NaN) where the sum is 0."""
    total = x.sum(dim=dim, keepdim=True)
    return x / torch.where(total > 0, total, torch.ones_like(total))


def spatial_temporal_graphs(boxes: Tensor, frames: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Spatial-temporal graphs G_front and G_back (paper section 4.3, Eq. 3), dense form.

    With sigma_ij = IoU(i, j) for node i in frame t and node j in frame t + 1 (edges only where
    sigma_ij > 0; no edges inside a frame, no self loops):

    * front[b, i, j] = sigma_ij / sum_j' sigma_ij'   (j' over the nodes of frame t + 1)
    * back[b, j, i]  = sigma_ij / sum_i' sigma_i'j   (i' over the nodes of frame t)

    A node with no overlapping box in the neighbouring frame has an all-zero row (never NaN).

    Args:
        boxes (Tensor[B, N, 4]): x1, y1, x2, y2.
        frames (Tensor[B, N] int): feature-frame index of each node.
        mask (Tensor[B, N] bool, optional): True for real nodes.

    Returns:
        (front, back), each Tensor[B, N, N].
    """
    sigma = box_iou_batched(boxes, boxes)  # (B, N, N)
    next_frame = frames[:, None, :] == frames[:, :, None] + 1  # [b, i, j]: frame(j) = frame(i) + 1
    valid = next_frame
    if mask is not None:
        valid = valid & mask[:, :, None] & mask[:, None, :]
    sigma = sigma * valid.to(sigma.dtype)
    front = _normalise(sigma, dim=-1)  # rows i: normalised over j in frame t + 1
    back = _normalise(sigma, dim=-2).transpose(-1, -2)  # back[j, i]: normalised over i in frame t
    return front, back


def frame_pair_graphs(boxes: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """G_front and G_back for nodes laid out frame by frame, as their non-zero blocks.

    For node n = t * K + k (frame t, box k), the dense graphs of :func:`spatial_temporal_graphs`
    are zero except the blocks between frames t and t + 1:

    * front[:, t] = G_front[t*K:(t+1)*K, (t+1)*K:(t+2)*K]   (messages from frame t+1 to frame t)
    * back[:, t]  = G_back[(t+1)*K:(t+2)*K, t*K:(t+1)*K]    (messages from frame t to frame t+1)

    Args:
        boxes (Tensor[B, T, K, 4]): x1, y1, x2, y2.
        mask (Tensor[B, T, K] bool, optional): True for real boxes.

    Returns:
        (front, back), each Tensor[B, T - 1, K, K].
    """
    sigma = box_iou_batched(boxes[:, :-1], boxes[:, 1:])  # (B, T-1, K, K): [i in t, j in t+1]
    if mask is not None:
        sigma = sigma * (mask[:, :-1, :, None] & mask[:, 1:, None, :]).to(sigma.dtype)
    front = _normalise(sigma, dim=-1)
    back = _normalise(sigma, dim=-2).transpose(-1, -2)
    return front, back


def frame_pair_messages(front: Tensor, back: Tensor, x_front: Tensor, x_back: Tensor) -> Tensor:
    """G_front X_front + G_back X_back for the block form of :func:`frame_pair_graphs`.

    Args:
        front, back (Tensor[B, T - 1, K, K]): the graph blocks.
        x_front, x_back (Tensor[B, T, K, d]): node features (already multiplied by W_front,
            W_back: (G X) W = G (X W)).

    Returns:
        Tensor[B, T, K, d]: frame t receives front[t] @ x_front[t + 1] (none for the last frame)
        and back[t - 1] @ x_back[t - 1] (none for the first frame).
    """
    # Pad by one frame at the end (front) or the start (back): (B, T-1, K, d) -> (B, T, K, d).
    from_next = F.pad(front @ x_front[:, 1:], (0, 0, 0, 0, 0, 1))
    from_prev = F.pad(back @ x_back[:, :-1], (0, 0, 0, 0, 1, 0))
    return from_next + from_prev
