"""Region features alone (RoIAlign 7x7 + max-pool), forward + backward, in five forms.

    python benchmarks/bench_roi.py                    # CPU, paper configuration
    python benchmarks/bench_roi.py --device cuda --dtype bfloat16 --batch 8

Paper configuration: 16 feature frames of 14 x 14 x 512 (the reduced res5 map of a 32 x 224 x
224 clip), 50 boxes per frame. The forms, all giving the same values (checked here in float64):

* ``roi_align``: torchvision's kernel (``region_features(..., impl="roi_align")``).
* ``sparse``: the default on the CPU, the same weights as one CSR matrix (at most 3 x 3 cells
  per bin), one sparse product, the max-pool fused with a gather backward (``impl="sparse"``).
* ``matmul``: the default on other devices, one (K*49 x H*W) @ (H*W x C) product per frame
  (``impl="matmul"``).
* ``separable``: rows and columns as two products, (K*7 x H) @ (H x W*C) then per box
  (7 x W) @ (W x 7*C): 4.7x fewer FLOPs than ``matmul`` but a (K*7 x W*C) intermediate.
* ``embedding_bag``: bilinear sampling as a gather of at most 3 x 3 cells per bin with
  per-sample weights (``F.embedding_bag``), the FLOPs of RoIAlign itself.

``roi_align``, ``sparse`` and ``matmul`` are in the library; the other two are here to show why not.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from strg.models.region import _window, bilinear_weights, region_features


def separable(features, boxes):
    b, c, t, h, w = features.shape
    k = boxes.shape[2]
    rows, cols = bilinear_weights(boxes, (h, w), spatial_scale=1 / 16)
    n = b * t * k
    frames = features.permute(0, 2, 4, 3, 1).reshape(b * t, w, h * c)  # (B*T, W, H*C)
    by_cols = torch.bmm(cols.reshape(b * t, k * 7, w).to(features.dtype), frames).reshape(n * 7, h, c)
    rows = rows.reshape(n, 1, 7, h).expand(n, 7, 7, h).reshape(n * 7, 7, h).to(features.dtype)
    grid = torch.bmm(rows, by_cols).reshape(b, t, k, 49, c)
    return grid.max(dim=3).values  # (B, T, K, C)


def embedding_bag(features, boxes):
    b, c, t, h, w = features.shape
    k = boxes.shape[2]
    rows, cols = bilinear_weights(boxes, (h, w), spatial_scale=1 / 16)
    ri, rw = _window(rows)  # (B, T, K, 7, Sy): the cells of each bin that carry weight
    ci, cw = _window(cols)
    sy, sx = ri.shape[-1], ci.shape[-1]
    frame = torch.arange(b * t, device=features.device).reshape(b, t, 1, 1, 1, 1, 1) * (h * w)
    index = frame + ri[..., :, None, :, None] * w + ci[..., None, :, None, :]  # (B, T, K, 7, 7, sy, sx)
    weight = rw[..., :, None, :, None] * cw[..., None, :, None, :]
    table = features.permute(0, 2, 3, 4, 1).reshape(b * t * h * w, c)
    grid = F.embedding_bag(index.reshape(-1, sy * sx), table, mode="sum",
                           per_sample_weights=weight.reshape(-1, sy * sx).to(table.dtype))
    return grid.reshape(b, t, k, 49, c).max(dim=3).values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    b, t, k, s, c = args.batch, 16, 50, 224, 512
    features = torch.randn(b, c, t, 14, 14, device=device)
    xy = torch.rand(b, t, k, 2, device=device) * s * 0.7
    boxes = torch.cat([xy, xy + torch.rand(b, t, k, 2, device=device) * s * 0.3 + 8], dim=-1)
    mask = torch.ones(b, t, k, dtype=torch.bool, device=device)
    forms = {
        "roi_align": lambda f, bx: region_features(f, bx, mask, spatial_scale=1 / 16, impl="roi_align"),
        "sparse": lambda f, bx: region_features(f, bx, mask, spatial_scale=1 / 16, impl="sparse"),
        "matmul": lambda f, bx: region_features(f, bx, mask, spatial_scale=1 / 16, impl="matmul"),
        "separable": separable,
        "embedding_bag": embedding_bag,
    }
    reference = forms["roi_align"](features.double(), boxes.double())
    for name, fn in forms.items():  # the same values, in float64
        err = (fn(features.double(), boxes.double()) - reference).abs().max().item()
        assert err < 1e-4, f"{name} differs from torchvision by {err}"

    def run(fn):
        f = features.to(dtype).requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn(f, boxes).float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {name: [] for name in forms}
    for fn in forms.values():  # warm-up
        run(fn)
    for _ in range(args.repeats):  # interleaved
        for name, fn in forms.items():
            times[name].append(run(fn))
    med = {name: statistics.median(v) for name, v in times.items()}
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"region features, forward + backward: batch {b}, {t} frames of 14x14x{c}, {k} boxes/frame, "
          f"{args.dtype}, {machine}")
    for name, value in med.items():
        print(f"  {name:14s} {value * 1000:9.1f} ms (median of {args.repeats})")
    print(json.dumps({"bench": "roi", "device": machine, "batch": b, "dtype": args.dtype,
                      **{f"{name}_ms": round(v * 1000, 2) for name, v in med.items()}}))


if __name__ == "__main__":
    main()
