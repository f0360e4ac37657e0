"""``strg visualize CONFIG``: a PNG of one video's prediction and its region graph (Fig. 3, 4)."""

from __future__ import annotations

import argparse

from strg.errors import ConfigError, DataError
from strg.threads import add_threads_argument, apply_thread_policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a run's config.yaml (or any training config)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    parser.add_argument("--checkpoint", help="checkpoint file or run folder (default: untrained weights)")
    parser.add_argument("--video-id", help="video to show (default: the split's first video)")
    parser.add_argument("--split", help="split to take the video from (default: eval.split)")
    parser.add_argument("--clip", type=int, default=None, help="which test clip of the video (default: the middle one)")
    parser.add_argument("--query",
                        help="query node as FRAME,BOX on the feature frames (default: the middle frame's best box)")
    parser.add_argument("--frames", type=int, default=8, help="feature frames to draw (default 8)")
    parser.add_argument("--out", default="strg-visualize.png", help="PNG file to write")
    add_threads_argument(parser)


def _parse_query(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        frame, box = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--query {text!r}: expected FRAME,BOX, two integers, e.g. --query 3,0") from None
    return frame, box


def run(args: argparse.Namespace) -> int:
    from strg.config import load_config
    from strg.engine import checkpoint as ckpt_lib
    from strg.engine.backbone_source import apply_backbone_source
    from strg.engine.build import dataset_from_config, model_from_config
    from strg.visualize import draw, explain

    cfg = load_config(args.config, args.overrides)
    apply_thread_policy(args.threads)
    apply_backbone_source(cfg)  # the normalisation and backbone settings of the weights' source
    split = args.split or cfg.eval.split or cfg.data.train_split
    dataset = dataset_from_config(cfg.data, split, training=False)
    model = model_from_config(cfg, len(dataset.classes), starting_weights=not args.checkpoint)
    if args.checkpoint:
        path = ckpt_lib.resolve_init(args.checkpoint)
        ckpt_lib.load_model_state(model, ckpt_lib.load_checkpoint(path), path)
    ids = [v.video_id for v in dataset.videos]
    video = args.video_id if args.video_id is not None else ids[0]
    if video not in ids:
        raise DataError(f"{args.config}: no video {video!r} in split {split!r} ({len(ids)} videos)")
    per_video = len(dataset) // len(ids)
    clip = per_video // 2 if args.clip is None else args.clip
    item = dataset[ids.index(video) * per_video + clip]
    if item is None:
        raise DataError(f"video {video!r} could not be read (see the warning above)")
    query = _parse_query(args.query) if args.query else None
    ex = explain(model, item, list(dataset.classes), multi_label=bool(dataset.multi_label), query=query)
    path = draw(ex, args.out, max_frames=args.frames)
    print(f"{path}: video {video}, predicted {', '.join(f'{n} {s:.2f}' for n, s in ex.top5[:3])}")
    return 0
