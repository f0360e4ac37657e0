"""Training clips/s end to end through ``strg train``: real video decoding, proposals store, model.

    python benchmarks/bench_train_e2e.py --device cuda              # the large-batch Joint GCN recipe
    python benchmarks/bench_train_e2e.py --device cuda --decode-backend torchcodec-cuda --workers 0
    python benchmarks/bench_train_e2e.py --quick                    # CPU smoke run, reduced sizes

Writes synthetic Charades-like media (320 x 240 H.264 at 24 fps with x264's default keyframe
interval, or the same frames as JPEG folders with ``--source jpg``, plus a proposals store with 50
boxes every 4th frame), then runs ``python -m strg.cli train`` on them with the ``train``
settings of ``--config`` (default the large-batch Joint GCN recipe: 64 clips per step on one GPU,
bf16) as a stage-1 run from random weights (the same computation per step as the joint stage,
without its checkpoint). clips/s is the mean of the ``metrics.jsonl`` records after the first
``--warmup`` iterations (cuDNN autotuning, worker start-up). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


def make_config(args, root: str) -> dict:
    from strg.config import load_config

    base = load_config(args.config)
    t = base["train"]
    batch = args.batch or t["batch_size"]
    return {
        "model": {**base["model"], "num_classes": None},
        "data": {"kind": "manifest", "manifest": os.path.join(root, f"{args.source}.csv"),
                 "classes_file": os.path.join(root, "classes.txt"), "root": root, "frames_fps": 24,
                 "num_frames": args.frames, "stride": 4, "stride_unit": "frames", "crop_size": args.size,
                 "train_short_side": [round(args.size * 256 / 224), round(args.size * 320 / 224)], "flip": True,
                 "proposals": os.path.join(root, "proposals.db"), "max_boxes": args.boxes,
                 "decode_backend": args.decode_backend},
        "train": {**t, "stage": "backbone", "init": None, "init_2d": None, "iterations": args.iterations,
                  "batch_size": batch, "batch_per_device": args.batch_per_device or min(batch, t["batch_per_device"]),
                  "num_workers": t["num_workers"] if args.workers is None else args.workers,
                  "device": args.device, "amp": "bf16" if args.device == "cuda" else "none",
                  "log_period": 1, "checkpoint_period": 10**9, "keep_checkpoints": 1, "tensorboard": False,
                  "progress": False, "eval_period": 0, "warmup_iters": 0},
        "eval": {"split": None},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--config", default=str(REPO / "configs/charades/large_batch/charades_joint_gcn_r50_b64.yaml"))
    parser.add_argument("--source", default="mp4", choices=["mp4", "jpg"])
    parser.add_argument("--decode-backend", default="auto", help="auto, pyav, torchcodec, torchcodec-cuda, auto-cuda")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the config's)")
    parser.add_argument("--batch-per-device", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None, help="default 8 (cuda), 3 (cpu)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="iterations left out of clips/s (default 3 cuda, 1 cpu)")
    parser.add_argument("--videos", type=int, default=None, help="synthetic videos (default 32 cuda, 2 cpu)")
    parser.add_argument("--seconds", type=float, default=None, help="video length (default 10 s cuda, 4 s cpu)")
    parser.add_argument("--frames", type=int, default=None, help="clip length (default 32 cuda, 8 cpu)")
    parser.add_argument("--size", type=int, default=None, help="crop (default 224 cuda, 112 cpu)")
    parser.add_argument("--boxes", type=int, default=None, help="boxes per frame (default 50 cuda, 10 cpu)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke sizes: batch 2, 0 workers")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    for key, on_gpu, on_cpu in [("iterations", 8, 3), ("warmup", 3, 1), ("videos", 32, 2), ("seconds", 10, 4),
                                ("frames", 32, 8), ("size", 224, 112), ("boxes", 50, 10)]:
        if getattr(args, key) is None:
            setattr(args, key, on_gpu if cuda else on_cpu)
    if args.quick and not cuda:
        args.batch, args.batch_per_device = args.batch or 2, args.batch_per_device or 1
        args.workers = 0 if args.workers is None else args.workers
    from bench_loader import build_data

    with tempfile.TemporaryDirectory(prefix="strg_bench_e2e_") as root:
        t0 = time.perf_counter()
        build_data(root, num_videos=args.videos, seconds=args.seconds)
        media_s = time.perf_counter() - t0
        cfg = make_config(args, root)
        cfg_path = Path(root) / "cfg.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "strg.cli", "train", str(cfg_path), "--run-dir", os.path.join(root, "run")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"strg train failed:\n{proc.stderr[-4000:]}")
        records = [json.loads(x) for x in (Path(root) / "run" / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in records if r.get("split") == "train"]
    steady = [r for r in train_recs if r["iteration"] > args.warmup] or train_recs
    clips_per_s = sum(r["clips_per_s"] for r in steady) / len(steady)
    memory = max((r.get("max_memory_gb") or 0.0) for r in train_recs)
    t = cfg["train"]
    print(f"strg train end to end, {args.device}: {cfg['model']['name']}, {args.source} decoded by "
          f"{args.decode_backend}, {t['num_workers']} workers, batch {t['batch_size']} ({t['batch_per_device']} per "
          f"forward), {args.frames}x{args.size}x{args.size}, {args.boxes} boxes/frame, amp {t['amp']}")
    print(f"  clips/s {clips_per_s:.2f} over iterations {args.warmup + 1}-{args.iterations}; peak GPU memory "
          f"{memory:.1f} GB; media written in {media_s:.0f} s, run {wall:.0f} s")
    print(json.dumps({"bench": "train_e2e", "device": args.device, "config": os.path.relpath(args.config, REPO),
                      "source": args.source, "decode_backend": args.decode_backend, "workers": t["num_workers"],
                      "batch": t["batch_size"], "batch_per_device": t["batch_per_device"], "frames": args.frames,
                      "size": args.size, "boxes": args.boxes, "clips_per_s": round(clips_per_s, 3),
                      "max_memory_gb": memory, "iterations": args.iterations, "warmup": args.warmup}))


if __name__ == "__main__":
    main()
