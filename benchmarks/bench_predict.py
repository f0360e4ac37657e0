"""Videos/s of ``strg predict`` and the share of its time in decoding, proposals, transforms and the model.

Writes synthetic H.264 videos (moving gradients, 320 x 240, 24 fps), a proposals store for them
(50 random boxes per frame at 6 fps, as `strg proposals extract` stores them) and a run folder
(config + checkpoint of a randomly initialised model; speed does not depend on the weights), then
runs :func:`strg.predict.predict_videos` over the videos, as the command does, after one video of
warm-up. Boxes come from the store (``--boxes store``) or from the COCO RPN with random weights
computed on the clips' frames (``--boxes detector``, ``--min-size`` as `strg proposals extract`).

    python benchmarks/bench_predict.py --quick                   # small model, seconds
    python benchmarks/bench_predict.py                           # Joint GCN R50, paper test settings
    python benchmarks/bench_predict.py --boxes detector --min-size 480
    python benchmarks/bench_predict.py --seconds 120 --long-after 60   # timelines of 2-minute videos

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build(root: Path, args) -> tuple[Path, Path]:
    """Videos, a proposals store and a run folder in ``root``; returns (run folder, store)."""
    from strg.config import load_config
    from strg.data.proposals import ProposalStore
    from strg.data.testing import write_video
    from strg.engine.checkpoint import checkpoint_path, save_checkpoint
    from strg.models import build_model

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_loader import make_frames  # the same footage as the loader benchmark

    fps, h, w = 24, 240, 320
    n = int(args.seconds * fps)
    rng = np.random.default_rng(0)
    store = root / "proposals.db"
    with ProposalStore(store, mode="w") as st:
        for i in range(args.videos):
            write_video(root / "videos" / f"v{i}.mp4", make_frames(n, h, w, seed=i), fps=fps, gop=250)
            stored = np.arange(0, n, fps // 6)
            xy = rng.uniform(0, [w - 40, h - 40], size=(len(stored), 50, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(8, 40, size=xy.shape)], -1).astype(np.float32)
            st.put(f"v{i}", frames=stored, boxes=boxes, scores=rng.uniform(size=(len(stored), 50)),
                   num_boxes=np.full(len(stored), 50), frame_size=(h, w), fps=fps)
    classes = [f"class {c}" for c in range(args.classes)]
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    model = {"name": args.variant, "width": args.width, **({"stage_blocks": [1, 1, 1, 1]} if args.quick else {})}
    cfg = load_config({
        "model": model,
        "data": {"kind": "manifest", "manifest": str(root / "m.csv"), "classes_file": str(root / "classes.txt"),
                 "num_frames": args.frames, "stride": 1 / 6, "stride_unit": "seconds", "test_clips": args.clips,
                 "test_short_side": args.size, "train_short_side": [args.size, args.size], "crop_size": args.size,
                 "max_boxes": args.max_boxes},
        "train": {}, "eval": {},
    })
    net = build_model(args.variant, num_classes=len(classes), width=args.width,
                      **({"stage_blocks": (1, 1, 1, 1)} if args.quick else {}))
    save_checkpoint(checkpoint_path(root / "run", 1), {"iteration": 1, "model": net.state_dict(),
                                                       "config": cfg.to_dict(),
                                                       "classes": classes, "multi_label": False})
    return root / "run", store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small I3D (width 8, one block per stage), 16 frames at 112 px")
    p.add_argument("--variant", default="joint_gcn_r50")
    p.add_argument("--width", type=int, default=None, help="res2 width (64, the paper; 8 with --quick)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (32; 16 with --quick)")
    p.add_argument("--size", type=int, default=None, help="test short side (256; 112 with --quick)")
    p.add_argument("--clips", type=int, default=2, help="test clips per video (2, Something-Something)")
    p.add_argument("--max-boxes", type=int, default=10, help="boxes per frame (10, Something-Something)")
    p.add_argument("--classes", type=int, default=174)
    p.add_argument("--videos", type=int, default=None, help="videos (4; 8 with --quick), plus one of warm-up")
    p.add_argument("--seconds", type=float, default=6.0, help="video length")
    p.add_argument("--long-after", type=float, default=60.0, help="timelines for videos longer than this")
    p.add_argument("--boxes", choices=("store", "detector"), default="store")
    p.add_argument("--min-size", type=int, default=800, help="detector short side (--boxes detector)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args()
    args.width = args.width or (8 if args.quick else 64)
    args.frames = args.frames or (16 if args.quick else 32)
    args.size = args.size or (112 if args.quick else 256)
    args.videos = (args.videos or (8 if args.quick else 4)) + 1
    if args.threads:
        torch.set_num_threads(args.threads)

    from strg.predict import collect_videos, load_predictor, predict_videos
    from strg.proposals.rpn import build_rpn_proposer

    with tempfile.TemporaryDirectory() as tmp:
        run, store = build(Path(tmp), args)
        def make(top_k):  # random weights: the speed does not depend on them
            return build_rpn_proposer(weights=None, top_k=top_k, min_size=args.min_size)

        pred = load_predictor(run, proposals=str(store) if args.boxes == "store" else None,
                              make_proposer=make if args.boxes == "detector" else None,
                              device=args.device)
        videos = collect_videos([str(Path(tmp) / "videos")])
        list(predict_videos(pred, videos[:1], batch_size=args.batch_size, long_after=args.long_after))  # warm-up
        pred.stats = dict.fromkeys(pred.stats, 0.0)
        t0 = time.perf_counter()
        results = list(predict_videos(pred, videos[1:], batch_size=args.batch_size, long_after=args.long_after))
        total = time.perf_counter() - t0
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    clips = sum(int(np.prod(r.scores.shape[:2])) for r in results)
    shares = {k: v / total for k, v in pred.stats.items()}
    shares["other"] = 1.0 - sum(shares.values())
    out = {"variant": args.variant, "width": args.width, "frames": args.frames, "size": args.size, "boxes": args.boxes,
           "min_size": args.min_size if args.boxes == "detector" else None, "videos": len(results),
           "seconds_per_video": args.seconds, "clips": clips, "total_s": round(total, 2),
           "videos_per_s": round(len(results) / total, 3), "clips_per_s": round(clips / total, 3),
           "share": {k: round(v, 3) for k, v in shares.items()}, "device": args.device,
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count()}
    print(f"{args.variant} (width {args.width}, {args.frames} frames, short side {args.size}), boxes: {args.boxes}; "
          f"{len(results)} videos of {args.seconds:g} s, {clips} clips in {total:.1f} s")
    print(f"{out['videos_per_s']:.3f} videos/s, {out['clips_per_s']:.2f} clips/s")
    print("| part | share of the time |\n| --- | ---: |")
    for k, v in shares.items():
        print(f"| {k} | {100 * v:.1f}% |")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
