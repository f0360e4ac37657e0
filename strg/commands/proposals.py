"""``strg proposals``: make the region proposals store that training and evaluation read.

    strg proposals extract CONFIG --out FILE          # the videos of a config's dataset
    strg proposals extract --videos DIR_OR_FILES --out FILE
    strg proposals import-something-else FILES... --out FILE

``extract`` runs the RPN of torchvision's COCO Faster R-CNN R50-FPN (paper section 4.1) on
every video once; see docs/proposals.md for the settings and their cost.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from strg.errors import ConfigError
from strg.threads import add_threads_argument, apply_thread_policy

# paper section 6.1: 50 proposals per frame on Charades, 10 on Something-Something. With a
# config, the default is the dataset's own `max_boxes` (the boxes training reads per frame).
FALLBACK_TOP_K = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    ex = sub.add_parser("extract", help="run the COCO region proposal network over videos",
                        description="Run the region proposal network of torchvision's COCO Faster R-CNN "
                                    "(ResNet-50 FPN) on the frames of every video, at a fixed rate, into a "
                                    "proposals store. Videos already in the store are skipped (resume).")
    ex.add_argument("config", nargs="?", help="YAML config whose `data` section names the dataset")
    ex.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.root=/data")
    ex.add_argument("--videos", nargs="+", metavar="PATH",
                    help="video files, frame folders, or folders of them (instead of / besides CONFIG)")
    ex.add_argument("--out", help="proposals store to create or extend (SQLite; default: the config's data.proposals)")
    ex.add_argument("--split", action="append", metavar="SPLIT",
                    help="dataset split(s) to process with CONFIG (repeatable; default: train and val)")
    ex.add_argument("--detector", choices=("v1", "v2"), default="v1",
                    help="torchvision fasterrcnn_resnet50_fpn (v1, default) or fasterrcnn_resnet50_fpn_v2 (v2)")
    ex.add_argument("--detector-weights", metavar="PATH",
                    help="Faster R-CNN weights file (default: torchvision's COCO weights, downloaded once)")
    ex.add_argument("--random-weights", action="store_true",
                    help="random detector weights: meaningless boxes, for tests and speed checks only")
    ex.add_argument("--fps", type=float, default=6.0,
                    help="extraction rate in frames per second (default 6: every frame of 6-fps clips)")
    ex.add_argument("--top-k", type=int, default=None,
                    help="proposals kept per frame (default: the dataset's max_boxes, 10 for "
                         "Something-Something, 50 for Charades and --videos)")
    ex.add_argument("--min-size", type=int, default=800,
                    help="short side the detector sees (default 800 as torchvision; smaller is faster)")
    ex.add_argument("--max-size", type=int, default=None, help="long side cap (default min-size * 5/3)")
    ex.add_argument("--nms-iou", type=float, default=0.7, help="IoU of the final class-agnostic NMS (0.7)")
    ex.add_argument("--batch-size", type=int, default=16, help="frames per detector call (16)")
    ex.add_argument("--workers", type=int, default=4, help="decoding workers (4; 0 decodes in the main process)")
    ex.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    ex.add_argument("--amp", action="store_true",
                    help="float16 autocast on CUDA (about 1.2x faster on an H200, docs/proposals.md)")
    ex.add_argument("--source-fps", type=float, default=None,
                    help="frame rate of frame folders (default: the config's frames_fps, else 24 as Charades)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_argument(ex)

    mg = sub.add_parser("merge", help="merge the shards of a multi-process extraction into its store",
                        description="Copy every shard STORE.rankN (written by `torchrun ... proposals extract`) "
                                    "into STORE and delete it. Extraction does this itself at its end; this is "
                                    "for shards copied from other machines or left by an interrupted run.")
    mg.add_argument("store", help="the proposals store (created if missing)")

    im = sub.add_parser("import-something-else", help="convert Something-Else box annotations into a store",
                        description="Convert the Something-Else JSON box files (for Something-Something v2) "
                                    "into a proposals store.")
    im.add_argument("files", nargs="+", help="Something-Else JSON files (bounding_box_smthsmth_part*.json)")
    im.add_argument("--out", required=True, help="proposals store to write (replaced unless --append)")
    im.add_argument("--append", action="store_true", help="add to an existing store instead of replacing it")
    im.add_argument("--video-root", help="folder of the <id>.webm videos, to record each frame's width")
    im.add_argument("--video-ext", default=".webm", help="video file extension under --video-root (.webm)")
    im.add_argument("--skip-bad", action="store_true", help="log and skip bad entries instead of stopping")
    im.add_argument("--no-clip", action="store_true",
                    help="reject boxes that stick out of the frame instead of clipping them")
    im.add_argument("--no-progress", action="store_true", help="no progress bar")


def _dataset_videos(config: str, overrides: list[str], splits: list[str] | None) -> tuple[list, dict]:
    """The videos of the dataset a config names (over ``splits``) and the extraction defaults it
    implies: ``out`` (data.proposals), ``top_k`` (the dataset's max_boxes), ``source_fps``."""
    import dataclasses

    from strg.config import read_config
    from strg.data import build_dataset, dataset_options
    from strg.proposals.extract import VideoEntry

    data = dict(read_config(config, overrides)[0].get("data") or {})
    kind = data.pop("kind", None)
    if not isinstance(kind, str):
        raise ConfigError(f"{config}: data.kind is required (charades, something_v2, something_v1, manifest)")
    if kind == "random":
        raise ConfigError(f"{config}: data.kind 'random' is synthetic and has no videos to extract from")
    data.pop("train_split", None)
    max_boxes = data.get("max_boxes")  # boxes per frame training reads
    builder_defaults = {f.name: f.default for f in dataclasses.fields(dataset_options(kind))}
    defaults = {
        "out": data.pop("proposals", None),  # the store being written: the dataset must not open it
        "top_k": max_boxes or builder_defaults.get("max_boxes"),
        "source_fps": data.get("frames_fps", builder_defaults.get("frames_fps")),
    }
    videos: dict[str, VideoEntry] = {}
    for split in splits or ["train", "val"]:
        try:
            ds = build_dataset(kind, split=split, training=False, **data)
        except TypeError as e:  # an option the builder does not take
            raise ConfigError(f"{config}: data: {e}") from e
        for v in ds.videos:
            videos.setdefault(v.video_id, VideoEntry(v.video_id, Path(v.path)))
    return list(videos.values()), defaults


def _extract(args) -> int:
    from strg.proposals.extract import find_videos
    from strg.proposals.rpn import build_rpn_proposer
    from strg.proposals.sharded import extract_proposals_sharded, init_from_torchrun, rank_device

    if not args.config and not args.videos:
        raise ConfigError("give a CONFIG, or --videos PATH... with your own videos")
    apply_thread_policy(args.threads, workers=args.workers,
                        say=lambda text: print(f"strg proposals extract: {text}", file=sys.stderr))
    videos, defaults = [], {}
    if args.config:
        videos, defaults = _dataset_videos(args.config, args.overrides, args.split)
    elif args.overrides:
        raise ConfigError(f"overrides {args.overrides} given without a CONFIG")
    if args.videos:
        known = {v.video_id for v in videos}
        videos += [v for v in find_videos(args.videos) if v.video_id not in known]
    out = args.out or defaults.get("out")
    if not out:
        raise ConfigError("give the proposals store to write with --out FILE (or data.proposals in the config)")
    if args.random_weights and args.detector_weights:
        raise ConfigError("give either --detector-weights or --random-weights, not both")
    if os.path.exists(out):  # refuse a file that is not a store before loading the detector
        from strg.data.proposals import ProposalStore

        ProposalStore(out, mode="r").close()
    weights = None if args.random_weights else (args.detector_weights or "coco")
    top_k = args.top_k or defaults.get("top_k") or FALLBACK_TOP_K
    source_fps = args.source_fps or defaults.get("source_fps")
    proposer = build_rpn_proposer(detector=args.detector, weights=weights, top_k=top_k, nms_iou=args.nms_iou,
                                  min_size=args.min_size, max_size=args.max_size)
    # under torchrun: each rank its share of the videos, into its own shard, merged at the end
    rank, world, local_rank = init_from_torchrun()
    result = extract_proposals_sharded(
        videos, out, proposer, rank=rank, world_size=world, rate=args.fps, batch_size=args.batch_size,
        num_workers=args.workers, device=rank_device(args.device, local_rank), amp=args.amp, source_fps=source_fps,
        progress=not args.no_progress and rank == 0,
    )
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    if rank != 0:  # rank 0 reports for all
        return 0
    print(f"{out}: {len(result.written)} videos written, {len(result.skipped)} already there, "
          f"{len(result.failed)} failed; {result.frames} frames in {result.seconds:.1f} s "
          f"({result.frames_per_second:.1f} frames/s)")
    if result.failed:
        print(f"{len(result.failed)} videos could not be read and were skipped:", file=sys.stderr)
        for vid, why in result.failed.items():
            print(f"  {vid}: {why}", file=sys.stderr)
    # Exit 1 only when nothing could be read (wrong paths, broken install); a few corrupt files
    # in a large dataset are listed above and leave the exit code at 0 (docs/proposals.md).
    attempted = len(result.written) + len(result.failed)
    return 1 if attempted and not result.written else 0


def _import_something_else(args) -> int:
    from strg.data.something_else import import_something_else

    counts = import_something_else(
        args.files, args.out, append=args.append, video_root=args.video_root, video_ext=args.video_ext,
        clip_boxes=not args.no_clip, on_error="skip" if args.skip_bad else "raise", progress=not args.no_progress,
    )
    print(f"{args.out}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


def _merge(args) -> int:
    from strg.proposals.sharded import find_shards, merge_shards

    shards = find_shards(args.store)
    merged = merge_shards(args.store)
    print(f"{args.store}: {len(merged)} videos merged from {len(shards)} shards")
    return 0


def run(args) -> int:
    if args.action == "extract":
        return _extract(args)
    if args.action == "merge":
        return _merge(args)
    return _import_something_else(args)
