"""Region features: RoIAlign on each feature frame, then max-pool (paper section 3 and 4.1).

Boxes come per input frame; the T' feature frames see the boxes of every (T / T')-th input frame
(frames 0, 2, 4, ... of 32 for the R50, docs/model.md "Region features"). Time is folded into the
batch: features (B, C, T', H, W) -> (B*T', C, H, W), and the box of video b, frame t, goes to
RoIAlign with batch index b * T' + t, so every box meets its own frame. No Python loop over
frames or videos.

Three implementations of the same RoIAlign (``aligned=True``, torchvision's sampling rule):

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
* ``"sparse"``: the same weights kept sparse. A bin's bilinear weights are nonzero on a window
  of at most (ceil(H/7) + 1)^2 cells (3 x 3 on the 14 x 14 map), so the (K*49 x H*W) matrix of
  all frames is one CSR matrix and the grid is one sparse product (RoIAlign's own FLOPs). The 7x7
  max-pool is fused into the same autograd function, whose backward only visits the bin that
  won each (box, channel): it scatters 9 weighted values per output element instead of
  multiplying the whole 49-bin grid back. Paper configuration, CPU, forward + backward: 28 ms
  against 175 ms for ``"matmul"`` and 925 ms for torchvision (``benchmarks/bench_roi.py``,
  BENCHMARKS.md). It
  computes in float32 (the CPU sparse kernels have no bfloat16 / float16), as torchvision's
  kernel does under autocast, and it follows the boxes exactly (samples per bin and window size
  from the data: host syncs, free on the CPU, so it is not for ``torch.compile`` or CUDA graphs).
* ``"auto"`` (the model's default): ``"sparse"`` on the CPU, ``"matmul"`` elsewhere (the dense
  product runs on the GPU's tensor cores; neither is timed on a GPU yet, BENCHMARKS.md) and
  inside ``torch.compile`` (static shapes: a model compiled whole is one graph, tests/test_compile.py).
"""

from __future__ import annotations

import math
import warnings

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
        impl: ``"roi_align"`` (torchvision), ``"matmul"``, ``"sparse"`` or ``"auto"`` (see the
            module docstring).

    Returns:
        Tensor[B, T, K, C]: zero for padded boxes.

    RoIAlign uses ``aligned=True`` (pixel centres at +0.5, the Detectron2 convention).
    """
    b, c, t, h, w = features.shape
    k = boxes.shape[2]
    if impl == "auto":
        # the sparse form follows the data (host syncs: 13 graph breaks in a compiled Joint GCN), so
        # a model compiled whole takes the matmul form, static shapes, on the CPU too: one graph
        cpu = features.device.type == "cpu" and not torch.compiler.is_compiling()
        impl = "sparse" if cpu else "matmul"
    if impl == "sparse":
        pooled = roi_align_max_sparse(features, boxes, output_size=output_size, spatial_scale=spatial_scale,
                                      sampling_ratio=sampling_ratio)  # (B, T, K, C)
        return pooled * mask[..., None].to(pooled.dtype)
    if impl == "matmul":
        pooled = roi_align_matmul(features, boxes, output_size=output_size, spatial_scale=spatial_scale,
                                  sampling_ratio=sampling_ratio)
        # the 7x7 max-pool; max() keeps the argmax, so its backward is a scatter, where amax's
        # compares the whole (B, T, K, 49, C) grid with the maximum again (RoIAlign + max-pool forward +
        # backward at the paper configuration, CPU: 149 ms with max, 218 ms with amax; BENCHMARKS.md)
        pooled = pooled.max(dim=-2).values  # (B, T, K, C)
        return pooled * mask[..., None].to(pooled.dtype)
    if impl != "roi_align":
        raise ValueError(f"impl must be 'auto', 'sparse', 'matmul' or 'roi_align', got {impl!r}")
    frames = features.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, C, H, W)
    index = torch.arange(b * t, device=boxes.device, dtype=boxes.dtype).repeat_interleave(k)  # (B*T*K,)
    rois = torch.cat([index[:, None], boxes.reshape(b * t * k, 4)], dim=1)  # (B*T*K, 5)
    # Padded boxes are computed too (they are zeros): this keeps every shape static (meta
    # tensors, torch.compile) at the cost of a few empty RoIs; they are masked below.
    # float32 at least, boxes included: box coordinates rounded to bfloat16 move by up to 0.5 pixel at
    # 200 pixels (8 significant bits), which moved bins by hundreds of bfloat16 roundings (the
    # bf16 tests); autocast computes torchvision's kernel in float32 anyway
    compute = torch.promote_types(frames.dtype, torch.float32)
    pooled = roi_align(frames.to(compute), rois.to(compute), output_size, spatial_scale, sampling_ratio, aligned=True)
    pooled = pooled.to(frames.dtype)
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
    step = bin_size[..., None, None] / g.clamp(min=1)  # grid 0 (empty box): no sample is used
    pos = start[..., None, None] + p[:, None] * bin_size[..., None, None] + (i + 0.5) * step  # (..., out, G)
    used = (i < g) & (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0)
    low = pos.floor().clamp(max=length - 1)
    frac = torch.where(low >= length - 1, torch.zeros_like(pos), pos - low)
    high = (low + 1).clamp(max=length - 1)
    cells = torch.arange(length, device=start.device, dtype=start.dtype)
    # (..., out, G, L)
    weights = (1 - frac)[..., None] * (cells == low[..., None]) + frac[..., None] * (cells == high[..., None])
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
    boxes: Tensor, size: tuple[int, int], *, output_size: int = 7, spatial_scale: float, sampling_ratio: int = 0,
    exact_grid: bool = False,
) -> tuple[Tensor, Tensor]:
    """The separable RoIAlign weights (aligned=True) of every box on an H x W map.

    Args:
        boxes (Tensor[..., 4]): x1, y1, x2, y2 in input pixels.
        size: (H, W) of the feature map.

        exact_grid: with adaptive sampling, bound the samples per bin by the largest box (one
            host sync) instead of by the map size (static shapes, see :func:`roi_align_matmul`).

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
        # an empty box takes no sample and gives 0, as torchvision's kernel
        gy, gx = torch.ceil(height / output_size).long(), torch.ceil(width / output_size).long()
        if exact_grid and boxes.numel():
            max_gy, max_gx = max(1, int(gy.max())), max(1, int(gx.max()))
        gy, gx = gy.clamp(0, max_gy), gx.clamp(0, max_gx)
    rows = _axis_weights(y1, height, h, output_size, gy, max_gy)  # (..., 7, H)
    cols = _axis_weights(x1, width, w, output_size, gx, max_gx)  # (..., 7, W)
    rows = rows / (gy * gx).clamp(min=1).to(rows.dtype)[..., None, None]  # the average over the samples
    return rows, cols


def _window(weights: Tensor) -> tuple[Tensor, Tensor]:
    """The cells of each bin that carry weight along one axis, as a fixed-width window.

    Args:
        weights (Tensor[..., 7, L]): :func:`bilinear_weights` rows or columns.

    Returns:
        index (Tensor[..., 7, S] long), weights (Tensor[..., 7, S]): S consecutive cells from the
        first nonzero one (shifted left at the end of the axis), S the widest span of nonzero
        weights of any bin (at most ceil(L / 7) + 1 for boxes inside the map). Exact for any box.
    """
    length = weights.shape[-1]
    nonzero = weights != 0
    cells = torch.arange(length, device=weights.device)
    first = torch.where(nonzero, cells, length).amin(-1).clamp(max=length - 1)  # (..., 7)
    last = torch.where(nonzero, cells, -1).amax(-1)
    span = max(1, int((last - first + 1).max())) if weights.numel() else 1  # one host sync
    index = first.clamp(max=length - span)[..., None] + torch.arange(span, device=weights.device)
    return index, torch.gather(weights, -1, index)


class _SparseRoIAlignMax(torch.autograd.Function):
    """RoIAlign as a CSR product, then the max over each box's bins, with a gather backward.

    forward: table (Tensor[M, C], M = frames * H * W), index and weight (Tensor[N * P, S]: the S
    cells and weights of each of the P bins of N boxes, cells as rows of ``table``), P
    -> Tensor[N, C].
    """

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor, weight: Tensor, bins: int) -> Tensor:
        rows, taps = index.shape
        boxes, channels = rows // bins, table.shape[1]
        values = table.new_empty(boxes, channels)
        winner = torch.empty(boxes, channels, dtype=torch.long, device=table.device)
        # Blocks of boxes whose (boxes x bins x C) grid stays in the CPU's cache (~4 MB): the
        # whole grid at the paper configuration is 80 MB, and writing it (page faults on a new
        # allocation) then reading it for the max cost more than the product (CPU, forward +
        # backward, paper configuration: 65 ms in one block, 45 ms in blocks).
        # A loop over memory blocks, not over frames or videos: a block holds whatever boxes
        # come next, of any frame or video.
        block = max(1, (4 << 20) // (bins * channels * table.element_size()))
        grid = table.new_empty(min(block, boxes) * bins, channels)
        with torch.autocast(table.device.type, enabled=False):  # no bfloat16 / float16 CSR kernels on the CPU
            for start in range(0, boxes, block):
                stop = min(start + block, boxes)
                n = (stop - start) * bins
                cells = index[start * bins:stop * bins]
                # only the rows of the table (cells of the frames) that this block reads: the
                # sparse product copies its dense operand
                low, high = int(cells.min()), int(cells.max()) + 1
                crow = torch.arange(0, n * taps + 1, taps, device=table.device)
                with warnings.catch_warnings():  # "sparse CSR support is in beta": what we use is tested here
                    warnings.simplefilter("ignore", UserWarning)
                    taps_weight = weight[start * bins:stop * bins].reshape(-1)
                    matrix = torch.sparse_csr_tensor(crow, (cells - low).reshape(-1), taps_weight,
                                                     size=(n, high - low), check_invariants=False)
                out = grid[:n]
                # beta=0 into an existing tensor: ``matrix @ table`` would zero-fill a new output
                # and copy the product into it (on the whole grid, CPU: 57 ms, against 30 ms)
                torch.addmm(out, matrix, table[low:high], beta=0, out=out)
                # the max over the bins as a (bins x 1) max-pool of the block seen as a channels-last
                # (boxes, C, bins, 1) image: the CPU's channels-last pooling kernel runs along the
                # contiguous channels (41 boxes x 49 bins x 512: 0.07 ms, against 1.0 ms for
                # ``torch.max(dim=1)``, which walks the strided bins); the first maximum on ties,
                # like max (among several NaN bins the last: the value is NaN either way)
                best, arg = torch.nn.functional.max_pool2d_with_indices(
                    out.view(stop - start, bins, 1, channels).permute(0, 3, 1, 2), (bins, 1))  # (n, C, 1, 1)
                values[start:stop] = best.view(stop - start, channels)
                winner[start:stop] = arg.view(stop - start, channels)
        ctx.save_for_backward(index, weight, winner)  # winner (N, C): the bin that won the 7x7 max-pool
        ctx.bins, ctx.num_cells = bins, table.shape[0]
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        index, weight, winner = ctx.saved_tensors
        n, c = winner.shape
        taps = index.shape[1]
        row = torch.arange(n, device=grad.device)[:, None] * ctx.bins + winner  # (N, C): the winning bin
        row = row.reshape(1, n * c).expand(taps, -1)
        # gather along contiguous rows: 4x faster than advanced indexing of the transposed view
        cells = torch.gather(index.t().contiguous(), 1, row)  # (S, N*C)
        values = torch.gather(weight.t().contiguous(), 1, row).view(taps, n, c).mul_(grad)  # (S, N, C)
        out = torch.zeros(ctx.num_cells, c, dtype=grad.dtype, device=grad.device)
        out.scatter_add_(0, cells.view(taps * n, c), values.view(taps * n, c))
        return out, None, None, None


def roi_align_max_sparse(
    features: Tensor, boxes: Tensor, *, output_size: int = 7, spatial_scale: float, sampling_ratio: int = 0
) -> Tensor:
    """RoIAlign (aligned=True) + max over the output_size^2 bins, as one sparse product.

    Args:
        features (Tensor[B, C, T, H, W]).
        boxes (Tensor[B, T, K, 4]): x1, y1, x2, y2 in input pixels.

    Returns:
        Tensor[B, T, K, C] in the dtype of ``features`` (computed in float32 or float64): the same
        values and gradient as ``torchvision.ops.roi_align`` followed by the max over the bins,
        for any box (boxes larger than the map included: the window and the samples per bin
        follow the data, at the cost of host syncs: free on the CPU).
    """
    b, c, t, h, w = features.shape
    k = boxes.shape[2]
    dtype = features.dtype if features.dtype == torch.float64 else torch.float32
    rows, cols = bilinear_weights(boxes.to(dtype), (h, w), output_size=output_size, spatial_scale=spatial_scale,
                                  sampling_ratio=sampling_ratio, exact_grid=True)
    row_index, row_weight = _window(rows)  # (B, T, K, 7, Sy)
    col_index, col_weight = _window(cols)  # (B, T, K, 7, Sx)
    sy, sx = row_index.shape[-1], col_index.shape[-1]
    frame = torch.arange(b * t, device=features.device).reshape(b, t, 1, 1, 1, 1, 1) * (h * w)
    index = frame + row_index[..., :, None, :, None] * w + col_index[..., None, :, None, :]  # (B, T, K, 7, 7, Sy, Sx)
    weight = row_weight[..., :, None, :, None] * col_weight[..., None, :, None, :]
    table = features.permute(0, 2, 3, 4, 1).reshape(b * t * h * w, c).to(dtype)  # (B*T*H*W, C): a cell per row
    pooled = _SparseRoIAlignMax.apply(table, index.reshape(-1, sy * sx), weight.reshape(-1, sy * sx).to(dtype),
                                      output_size**2)  # (B*T*K, C)
    return pooled.reshape(b, t, k, c).to(features.dtype)
