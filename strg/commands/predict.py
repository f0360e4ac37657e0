"""``strg predict RUN_OR_CHECKPOINT VIDEO...``: a trained model on video files (docs/predict.md).

Writes ``OUT/predictions.jsonl`` (one record per video), a timeline CSV + PNG per long video and,
with ``--explain``, the region-graph picture of the top class; prints one line per video.

Exit code: 0 when every video got its prediction; 1 when some could not be read (they are
listed, the others are predicted and written); 2 for a bad run folder, checkpoint, option or
video list (nothing is predicted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from strg.errors import ConfigError
from strg.threads import add_threads_argument, apply_thread_policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_OR_CHECKPOINT",
                        help="a run folder (config.yaml + checkpoints/) or a checkpoint file")
    parser.add_argument("videos", nargs="+", metavar="VIDEO",
                        help="video files, frame folders, folders of them, glob patterns, or a manifest "
                             "(.csv with a path column, .jsonl with a path key, .txt one path a line)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change the run's config, e.g. --set data.test_clips=3 --set eval.combine=mean")
    parser.add_argument("--out", default="strg-predict",
                        help="folder for predictions.jsonl and the pictures (strg-predict)")
    parser.add_argument("--top-k", type=int, default=5, help="classes listed per video and per clip (5)")
    parser.add_argument("--long-after", type=float, default=60.0,
                        help="videos longer than this many seconds get a timeline instead of the test clips (60)")
    parser.add_argument("--timeline", choices=("auto", "always", "never"), default="auto",
                        help="auto: timelines for videos longer than --long-after; always; never")
    parser.add_argument("--window-stride", type=float, default=None,
                        help="seconds between timeline clips (default: half a clip's span)")
    parser.add_argument("--timeline-classes", type=int, default=5,
                        help="rows of the timeline picture: the top classes (5)")
    parser.add_argument("--explain", action="store_true",
                        help="draw the top class's region graph (Fig. 3, 4 of the paper) on its best clip")
    parser.add_argument("--proposals", metavar="STORE",
                        help="proposals store (strg proposals extract) to take the boxes from")
    parser.add_argument("--no-boxes", action="store_true", help="run without boxes (models without a graph head only)")
    parser.add_argument("--detector", choices=("v1", "v2"), default="v1",
                        help="detector for boxes computed on the fly (v1)")
    parser.add_argument("--detector-weights", metavar="PATH",
                        help="Faster R-CNN weights file (default: torchvision's COCO file in the torch hub "
                             "cache, if it is there)")
    parser.add_argument("--random-weights", action="store_true",
                        help="random detector: meaningless boxes (tests, speed)")
    parser.add_argument("--min-size", type=int, default=800,
                        help="short side the detector sees (800, as strg proposals extract)")
    parser.add_argument("--max-size", type=int, default=None, help="detector long side cap (default min-size * 5/3)")
    parser.add_argument("--nms-iou", type=float, default=0.7, help="IoU of the detector's final NMS (0.7)")
    parser.add_argument("--classes", metavar="FILE", help="class names, one a line (checkpoints that do not list them)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per forward pass, across videos (8)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on a GPU")
    parser.add_argument("--quiet", action="store_true", help="no per-video lines and no progress")
    add_threads_argument(parser)


def _proposer(args, top_k: int):
    """The detector of `strg proposals extract` with the same settings (``top_k``: the run's
    boxes per frame, the default of `strg proposals extract` with a config)."""
    import torch

    from strg.proposals.rpn import DETECTORS, build_rpn_proposer

    if args.random_weights and args.detector_weights:
        raise ConfigError("give either --detector-weights or --random-weights, not both")
    weights = None if args.random_weights else args.detector_weights
    if not args.random_weights and weights is None:
        file = DETECTORS[args.detector][1].url.rsplit("/", 1)[-1]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / file
        if not cached.is_file():
            raise ConfigError(
                f"{args.run}: the model needs region proposals and none are available: give --proposals STORE "
                f"(made by `strg proposals extract`), or the detector's weights with --detector-weights PATH "
                f"(download {DETECTORS[args.detector][1].url} on a machine with internet, or copy it to {cached})"
            )
        weights = cached
    return build_rpn_proposer(detector=args.detector, weights=weights, top_k=top_k, nms_iou=args.nms_iou,
                              min_size=args.min_size, max_size=args.max_size)


def _summary(res, classes_shown: int = 3) -> str:
    if res.error is not None:
        return f"{res.path}: FAILED: {res.error}"
    top = ", ".join(f"{c} {s:.2f}" for c, s in res.top[:classes_shown])
    extra = f", {len(res.starts)} clips" if res.mode == "timeline" else ""
    short = ", shorter than one clip (last frame repeated)" if res.short else ""
    files = f"  -> {', '.join(res.files)}" if res.files else ""
    return f"{res.path} ({res.duration:.1f} s{extra}{short}): {top}{files}"


class _Progress:
    """tqdm on a terminal; on a log (not a tty), a line every 5% of the videos or every minute."""

    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self.total, self.done, self.start, self.last = total, 0, time.time(), time.time()
        self.tty = sys.stderr.isatty()
        self.enabled = enabled
        self.bar = tqdm(total=total, unit="video", desc="predict", disable=not (enabled and self.tty),
                        dynamic_ncols=True)

    def write(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text) if self.tty else print(text, flush=True)

    def update(self, failed: int) -> None:
        self.done += 1
        self.bar.update(1)
        now = time.time()
        if self.enabled and not self.tty and self.total > 1 and (
                self.done % max(1, self.total // 20) == 0 or now - self.last > 60 or self.done == self.total):
            rate = (now - self.start) / self.done
            left = round(rate * (self.total - self.done))
            print(f"predict: {self.done}/{self.total} videos ({failed} failed), {now - self.start:.0f} s, "
                  f"about {left // 60}:{left % 60:02d} left", file=sys.stderr, flush=True)
            self.last = now

    def close(self) -> None:
        self.bar.close()


def run(args: argparse.Namespace) -> int:
    from strg.predict import (
        collect_videos,
        load_predictor,
        predict_videos,
        write_outputs,
    )

    if args.no_boxes and args.proposals:
        raise ConfigError("give either --proposals or --no-boxes, not both")
    if args.top_k < 1 or args.batch_size < 1 or args.timeline_classes < 1:
        raise ConfigError("--top-k, --batch-size and --timeline-classes must be at least 1")
    say = None if args.quiet else (lambda text: print(f"strg predict: {text}", file=sys.stderr))
    apply_thread_policy(args.threads, say=say)  # decoding runs in this process: no loader workers
    videos = collect_videos(args.videos)  # DataError for a folder without videos, a glob without match
    if not videos:
        raise ConfigError("no videos given")
    pred = load_predictor(args.run, args.set, proposals=args.proposals, no_boxes=args.no_boxes,
                          make_proposer=lambda top_k: _proposer(args, top_k),
                          classes_file=args.classes, device=args.device, amp=args.amp)
    if args.explain and not pred.uses_boxes:
        raise ConfigError(f"{pred.checkpoint}: --explain draws the region graph; the I3D baseline has none")
    if args.amp and pred.device.type != "cuda" and not args.quiet:
        print("predict: --amp applies on a GPU only; running in float32 on the CPU", file=sys.stderr)
    long_after = {"auto": args.long_after, "always": 0.0, "never": None}[args.timeline]
    entries = {v.video_id: v for v in videos}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "predictions.jsonl"
    tmp = out / f"predictions.jsonl.tmp{os.getpid()}"
    failed: list = []
    progress = _Progress(len(videos), not args.quiet)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for res in predict_videos(pred, videos, batch_size=args.batch_size, long_after=long_after,
                                      window_stride=args.window_stride, top_k=args.top_k):
                if res.error is None:
                    try:
                        write_outputs(pred, entries[res.video_id], res, out, explain=args.explain,
                                      timeline_rows=args.timeline_classes)
                    except Exception as e:  # noqa: BLE001 - e.g. a full disk: reported like a bad video
                        res.error = f"writing its files: {type(e).__name__}: {e}"
                if res.error is not None:
                    failed.append(res)
                f.write(json.dumps(res.record(pred.classes, args.top_k, pred.combine)) + "\n")
                f.flush()
                progress.write(_summary(res))
                progress.update(len(failed))
    finally:
        progress.close()
        if tmp.exists():
            os.replace(tmp, jsonl)  # whole records only, also after Ctrl-C
    print(f"{len(videos) - len(failed)} of {len(videos)} videos predicted; {jsonl}")
    if failed:
        print(f"{len(failed)} videos could not be read and have no prediction:", file=sys.stderr)
        for res in failed:
            print(f"  {res.path}: {res.error}", file=sys.stderr)
        return 1
    return 0
