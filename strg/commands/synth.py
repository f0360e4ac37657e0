"""``strg synth OUT_DIR``: write a synthetic relational-action dataset in the real formats."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (reused if it holds the same settings)")
    parser.add_argument("--variant", choices=("something", "charades"), default="something",
                        help="Something-Something v2 + Something-Else boxes, or Charades v1 multi-label")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same files (default 0)")
    parser.add_argument("--num-videos", type=int, default=3000, help="videos in all, 80%% train / 20%% validation")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (16 something, 48 charades)")
    parser.add_argument("--size", type=int, default=96, help="frame height and width in pixels (default 96)")
    parser.add_argument("--fps", type=float, default=12.0, help="frame rate written in the videos (default 12)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset with other settings in OUT_DIR")


def run(args: argparse.Namespace) -> int:
    from strg.synth import generate_dataset

    m = generate_dataset(args.out_dir, seed=args.seed, num_videos=args.num_videos, frames=args.frames,
                         size=args.size, variant=args.variant, fps=args.fps, workers=args.workers,
                         overwrite=args.overwrite)
    s = m["settings"]
    print(f"{args.out_dir}: {s['variant']} dataset, {m['num_train']} train + {m['num_val']} validation videos "
          f"of {s['frames']} frames at {s['size']}x{s['size']}, {len(m['classes'])} classes "
          f"(generated in {m['seconds']} s; reused when the settings match)")
    return 0
