"""``strg eval CONFIG --checkpoint PATH``: multi-clip evaluation of a trained model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from strg.threads import add_threads_argument, apply_thread_policy


def add_arguments(parser) -> None:
    parser.add_argument("config", help="the run's config (e.g. runs/NAME/config.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. eval.combine=mean")
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint file, or a run folder (its newest checkpoint)")
    parser.add_argument("--split", default=None, help="split to evaluate (default: eval.split of the config)")
    parser.add_argument("--predictions", default=None,
                        help="predictions file, Charades format (default: next to the checkpoint)")
    add_threads_argument(parser)


def run(args) -> int:
    from strg.config import load_config
    from strg.engine import evaluate
    from strg.engine.checkpoint import resolve_init

    workers = load_config(args.config, args.overrides).eval.num_workers
    apply_thread_policy(args.threads, workers=workers, say=lambda text: print(f"strg eval: {text}", file=sys.stderr))

    predictions = args.predictions
    if predictions is None:
        ckpt = resolve_init(args.checkpoint)
        suffix = f"_{args.split}" if args.split else ""
        predictions = ckpt.parent.parent / f"predictions_{ckpt.stem}{suffix}.txt"
    metrics = evaluate(args.config, checkpoint=args.checkpoint, overrides=args.overrides, split=args.split,
                       predictions=predictions)
    for key in ("mAP", "wAP", "top1", "top5"):
        if key in metrics:
            print(f"{key}: {100 * metrics[key]:.2f}")
    print(f"predictions: {Path(predictions)}")
    print(json.dumps(metrics))
    return 0
