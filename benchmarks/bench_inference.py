"""Inference clips/s (eval mode, forward only) of the I3D baseline and Joint GCN, eager and compiled.

    python benchmarks/bench_inference.py --device cuda --batch 32 --dtype bfloat16 --compile
    python benchmarks/bench_inference.py --quick                # CPU, reduced sizes: a smoke run

Paper configuration on cuda (32 x 224 x 224 clips, 50 boxes per frame, 157 classes); the goal is
>= 800 clips/s for the baseline on one H100/H200 and Joint GCN within 5% of it. ``--compile``
also times ``torch.compile(model)`` (the whole model, Inductor; RoIAlign in its static matmul
form, as ``roi_impl="auto"`` takes it under compilation) after checking that its outputs match
eager's. ``torch.inference_mode`` and autocast in ``--dtype``. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from strg.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clips_per_s(fn, batch: int, device: torch.device, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times), batch / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="clips per forward (default cuda 32, cpu 1)")
    parser.add_argument("--frames", type=int, default=None, help="default 32 (cuda), 8 (cpu)")
    parser.add_argument("--size", type=int, default=None, help="default 224 (cuda), 112 (cpu)")
    parser.add_argument("--boxes", type=int, default=None, help="default 50 (cuda), 10 (cpu)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default bf16 on cuda")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also the whole model under torch.compile")
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    b = args.batch or (32 if cuda else 1)
    t = args.frames or (32 if cuda else 8)
    s = args.size or (224 if cuda else 112)
    k = args.boxes or (50 if cuda else 10)
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    repeats = 3 if args.quick else args.repeats
    if cuda:
        torch.backends.cudnn.benchmark = True
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    g = torch.Generator(device="cpu").manual_seed(0)
    clips = torch.randn(b, 3, t, s, s, generator=g).to(device)
    xy = torch.rand(b, t, k, 2, generator=g) * s * 0.7
    boxes = torch.cat([xy, xy + torch.rand(b, t, k, 2, generator=g) * s * 0.3 + 8], dim=-1).to(device)
    mask = torch.ones(b, t, k, dtype=torch.bool, device=device)

    rows, check = {}, {}
    for name in ("i3d_r50", "joint_gcn_r50"):
        torch.manual_seed(0)
        model = build_model(name, num_classes=157).to(device).eval()
        variants = {"eager": model}
        if args.compile:
            variants["compiled"] = torch.compile(model)
        outs = {}
        for label, fn in variants.items():
            def run(fn=fn):
                with torch.inference_mode(), autocast:
                    return fn(clips, boxes, mask)
            t0 = time.perf_counter()
            outs[label] = run().float()  # warm-up (compilation, cuDNN autotuning)
            run()
            warm = time.perf_counter() - t0
            med, best = _clips_per_s(run, b, device, repeats)
            rows[f"{name} {label}"] = {"clips_per_s": round(med, 2), "clips_per_s_best": round(best, 2),
                                       "warmup_s": round(warm, 1)}
        if "compiled" in outs:
            err = (outs["compiled"] - outs["eager"]).abs().max().item()
            scale = outs["eager"].abs().max().item()
            check[name] = {"max_abs_diff": err, "max_abs_output": scale}
        del model, variants
        if cuda:
            torch.cuda.empty_cache()
    cpu_name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    machine = torch.cuda.get_device_name(device) if cuda else cpu_name
    print(f"inference, batch {b}, {t}x{s}x{s}, {k} boxes/frame, {dtype}, {machine}, medians of {repeats}")
    for key, r in rows.items():
        print(f"  {key:26s} {r['clips_per_s']:9.1f} clips/s (best {r['clips_per_s_best']:.1f}; "
              f"warm-up {r['warmup_s']} s)")
    for label in ("eager", "compiled"):
        if f"i3d_r50 {label}" in rows:
            ratio = rows[f"joint_gcn_r50 {label}"]["clips_per_s"] / rows[f"i3d_r50 {label}"]["clips_per_s"]
            print(f"  joint_gcn / i3d, {label}: {ratio:.3f}")
    for name, c in check.items():
        print(f"  {name}: compiled vs eager output max |diff| {c['max_abs_diff']:.3g} "
              f"(outputs up to {c['max_abs_output']:.3g})")
    print(json.dumps({"bench": "inference", "device": machine, "batch": b, "frames": t, "size": s, "boxes": k,
                      "dtype": str(dtype), "results": rows, "compile_check": check}))


if __name__ == "__main__":
    main()
