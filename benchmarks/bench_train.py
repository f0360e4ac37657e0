"""Training throughput (clips/s) and peak memory of the real training loop: I3D vs Joint GCN.

    python benchmarks/bench_train.py --device cuda --quick     # paper config, bf16, < 90 s on a GPU
    python benchmarks/bench_train.py --device cpu --quick      # reduced sizes (CPU is slow)

Runs ``strg.engine.train`` (data loading, forward, backward, SGD, logging) on the synthetic
``random`` data, once per model, each in its own process so that peak memory is its own. On cuda:
the paper configuration (32 x 224 x 224 clips, 50 boxes per frame, global batch 8 as 4
accumulation steps of 2 clips, bf16 autocast). On cpu: batch 1, --frames/--size/--boxes reduced
by default. clips/s is measured over the iterations after the first log window (warm-up).
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(args) -> dict:
    import torch

    from strg.engine import train

    torch.manual_seed(0)
    cuda = args.device == "cuda"
    iters = args.iterations
    log_period = max(1, iters // 3)
    cfg = {
        "model": {"name": args.one},
        "data": {"kind": "random", "num_videos": 64, "num_classes": 157, "frames": args.frames, "size": args.size,
                 "boxes_per_frame": args.boxes, "multi_label": True},
        "train": {"iterations": iters, "batch_size": args.batch, "batch_per_device": args.batch_per_device,
                  "amp": args.amp, "device": args.device, "num_workers": args.workers, "log_period": log_period,
                  "checkpoint_period": 10**9, "keep_checkpoints": 1, "tensorboard": False, "progress": False,
                  "eval_period": 0},
        "eval": {"split": None},
    }
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(cfg, run_dir=Path(tmp) / "run")
        wall = time.perf_counter() - t0
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in records if r["iteration"] > log_period] or records
    clips_per_s = sum(r["clips_per_s"] for r in steady) / len(steady)
    if cuda:
        peak_gb = torch.cuda.max_memory_allocated() / 2**30
        machine = torch.cuda.get_device_name()
    else:
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GB (Linux)
        machine = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    return {"model": args.one, "clips_per_s": round(clips_per_s, 3), "peak_memory_gb": round(peak_gb, 3),
            "wall_s": round(wall, 1), "machine": machine}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="few iterations")
    parser.add_argument("--models", default="i3d_r50,joint_gcn_r50")
    parser.add_argument("--frames", type=int, default=None, help="default 32 (cuda), 8 (cpu)")
    parser.add_argument("--size", type=int, default=None, help="default 224 (cuda), 112 (cpu)")
    parser.add_argument("--boxes", type=int, default=None, help="default 50 (cuda), 10 (cpu)")
    parser.add_argument("--batch", type=int, default=None, help="global batch; default 8 (cuda), 1 (cpu)")
    parser.add_argument("--batch-per-device", type=int, default=None, help="default 2 (cuda), 1 (cpu)")
    parser.add_argument("--amp", default=None, help="default bf16 (cuda), none (cpu)")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one model per process
    args = parser.parse_args()
    cuda = args.device == "cuda"
    defaults = dict(frames=32 if cuda else 8, size=224 if cuda else 112, boxes=50 if cuda else 10,
                    batch=8 if cuda else 1, batch_per_device=2 if cuda else 1, amp="bf16" if cuda else "none",
                    iterations=(9 if cuda else 4) if args.quick else (30 if cuda else 10), workers=6 if cuda else 0)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.one:
        print(json.dumps(one_run(args)))
        return

    rows = []
    for name in args.models.split(","):
        cmd = [sys.executable, __file__, "--one", name] + [
            f"--{k.replace('_', '-')}={getattr(args, k)}" for k in defaults] + ["--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if proc.returncode:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    machine = rows[0]["machine"]
    print(f"training loop, {machine}: global batch {args.batch} ({args.batch_per_device} per step), "
          f"{args.frames}x{args.size}x{args.size}, {args.boxes} boxes/frame, amp {args.amp}, "
          f"{args.iterations} iterations")
    print(f"  {'model':16s} {'clips/s':>9s} {'peak mem GB':>12s} {'wall s':>8s}")
    for r in rows:
        print(f"  {r['model']:16s} {r['clips_per_s']:9.2f} {r['peak_memory_gb']:12.2f} {r['wall_s']:8.1f}")
    memory_kind = "cuda max_memory_allocated" if cuda else "process max RSS"
    print(json.dumps({"bench": "train", "device": machine, "frames": args.frames, "size": args.size,
                      "boxes": args.boxes,
                      "batch": args.batch, "batch_per_device": args.batch_per_device, "amp": args.amp,
                      "iterations": args.iterations, "memory": memory_kind, "results": rows}))


if __name__ == "__main__":
    main()
