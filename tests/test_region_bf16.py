"""Every RoIAlign form of strg/models/region.py under bfloat16 autocast, values and gradients.

On the CPU, and on CUDA too where there is a GPU.

The reference is torchvision's ``roi_align`` (aligned=True) followed by the 7x7 max, in float64 on
the same input values. Tolerances follow from bfloat16's precision: 8 significant bits, unit
roundoff u = 2^-8. A RoIAlign bin is a sum of nonnegative bilinear weights times feature values,
so rounding the weights, the features and the result to bfloat16 moves it by at most a few u
times the same sum taken over |features| (float32 accumulation in between, as the CPU's and the
GPU's bfloat16 matrix products do); the 7x7 max moves by no more than its largest bin. The
gradient of a cell is a sum of weights times upstream values: the same bound with |upstream|.

* ``"sparse"`` and ``"roi_align"`` compute in float32 under autocast: only the result's rounding
  to the input dtype (u), so 2u.
* ``"matmul"`` runs its matrix product in bfloat16 under autocast: weights, features and result
  rounded (3u), 4u with a margin.

The max-pool's gradient goes to the winning bin; a bfloat16 rounding may change the winner
where two bins are within its error of each other, sending the gradient to other cells, which is
no error. The gradient is compared on the (box, channel) pairs whose top two bins differ by more
than twice the value tolerance in the reference (all others get zero upstream gradient).
"""

import pytest
import torch
import torchvision

from strg.models.region import region_features

U = 2.0**-8  # bfloat16 unit roundoff
FORMS = {"sparse": 2 * U, "roi_align": 2 * U, "matmul": 4 * U}
SCALE = 1 / 16


def _inputs(seed=0, b=2, c=24, t=4, h=14, w=14, k=6):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, c, t, h, w, generator=g) * 3
    xy = torch.rand(b, t, k, 2, generator=g) * torch.tensor([w * 16.0, h * 16.0]) * 0.8
    boxes = torch.cat([xy, xy + torch.rand(b, t, k, 2, generator=g) * 120 + 4], dim=-1)
    boxes = torch.minimum(boxes, torch.tensor([w * 16.0, h * 16.0] * 2))  # clipped, as the data gives them
    mask = torch.rand(b, t, k, generator=g) > 0.2
    return feats, boxes, mask


def _grid64(feats: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """torchvision's RoIAlign in float64: (B, T, K, C, 49)."""
    b, c, t, h, w = feats.shape
    k = boxes.shape[2]
    frames = feats.double().transpose(1, 2).reshape(b * t, c, h, w)
    index = torch.arange(b * t, dtype=torch.float64).repeat_interleave(k)
    rois = torch.cat([index[:, None], boxes.double().reshape(-1, 4)], dim=1)
    grid = torchvision.ops.roi_align(frames, rois, 7, SCALE, 0, aligned=True)  # (BTK, C, 7, 7)
    return grid.reshape(b, t, k, c, 49)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # the GPU run: benchmarks/gpu_suite.sh


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", list(FORMS))
@pytest.mark.parametrize("feature_dtype", [torch.bfloat16, torch.float32])
def test_roi_align_forms_under_bf16_autocast(impl, feature_dtype, device):
    feats, boxes, mask = _inputs()
    x = feats.to(feature_dtype)  # bfloat16: what the reduction conv gives under autocast
    tol = FORMS[impl] + (U if feature_dtype == torch.float32 and impl == "matmul" else 0.0)  # features rounded too

    # reference on the same input values, float64
    x64 = x.double().requires_grad_(True)
    grid = _grid64(x64, boxes)
    ref = grid.amax(-1) * mask[..., None]  # (B, T, K, C)
    bound = _grid64(x.double().abs(), boxes).amax(-1)  # max over bins of sum(w |F|): the values' scale
    top2 = grid.detach().topk(2, dim=-1).values
    robust = (top2[..., 0] - top2[..., 1] > 2 * tol * bound) & mask[..., None]  # the winner cannot change
    upstream = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * robust
    (ref * upstream).sum().backward()
    ref_grad = x64.grad

    # the form under autocast
    xi = x.to(device, copy=True).requires_grad_(True)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = region_features(xi, boxes.to(device), mask.to(device), spatial_scale=SCALE, impl=impl)
    assert out.dtype in (torch.bfloat16, torch.float32)
    (out.double() * upstream.to(device)).sum().backward()
    out = out.cpu()
    err = (out.double() - ref.detach()).abs()
    worst = float((err.detach() / (bound + 1e-12)).max()) / U
    assert (err <= tol * bound + 1e-6).all(), f"{impl}: value error {worst:.2f} u"

    # the same form in float32 without autocast: the bf16 run stays within the same bound of it
    with torch.no_grad():
        out32 = region_features(x.float().to(device), boxes.to(device), mask.to(device), spatial_scale=SCALE,
                                impl=impl).cpu()
    assert ((out.double() - out32.double()).abs() <= tol * bound + 1e-5).all()

    # gradients: |error| <= tol x the gradient with |upstream| (weights are >= 0)
    x_abs = x.double().requires_grad_(True)
    winner = grid.detach().argmax(-1, keepdim=True)  # the reference's winning bins
    (_grid64(x_abs, boxes).gather(-1, winner).squeeze(-1) * upstream.abs()).sum().backward()
    gbound = x_abs.grad
    assert robust.sum() > 0.5 * mask.sum() * feats.shape[1]  # most pairs are compared
    gerr = (xi.grad.cpu().double() - ref_grad).abs()
    worst = float((gerr / (gbound + 1e-12)).max()) / U
    assert (gerr <= tol * gbound + 1e-6).all(), f"{impl}: gradient error {worst:.2f} u"
    assert ref_grad.abs().sum() > 0
