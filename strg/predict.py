"""A trained model on any video file: top-k classes, a timeline for long videos, the graph behind it.

``strg predict RUN_OR_CHECKPOINT VIDEO...`` (docs/predict.md). Everything about the model comes
from the run: the variant and its settings, the weights, the class names, the clip sampling
(``num_frames``, ``stride``, ``test_clips``, ``test_views``), the test-time resize and the
normalisation (the ``data`` section of the run's config), and how clip scores are combined
(``eval.combine``, ``eval.scores``). A clip is made exactly as the evaluation makes it
(:class:`strg.data.datasets.ClipDataset`, section 6.1 "Inference"): the same frame indices, the
same decoder, the same boxes from a proposals store, the same transform and collate; so
``strg predict`` on a dataset's videos gives the scores ``strg eval`` gives (tested).

Two kinds of output per video (:func:`plan_windows`):

* **clips** (videos up to ``long_after`` seconds): the ``test_clips`` uniformly spaced clips x
  ``test_views`` views of the evaluation, combined by ``eval.combine`` (max in the paper).
* **timeline** (longer videos): clips slid over the whole video every ``window_stride`` seconds
  (default half a clip), each scored on its views; the per-class scores over time (a CSV and a
  picture) and the video's scores: all windows combined by ``eval.combine``.

Frames are decoded in one pass per video (:class:`strg.data.stream.WindowStream`), holding only
the frames of the windows in flight, so memory does not grow with the video's length. Clips of
several videos share batches.

Boxes (the graph nodes, section 4.1): from a proposals store when one is given (looked up by the
video's id, its file name without extension, as `strg proposals extract` writes it); else from
the detector of `strg proposals extract` (torchvision's COCO RPN, the same code and settings)
run on exactly the frames the clips use. The I3D baseline needs none.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from strg.errors import CheckpointError, ConfigError, DataError, StrgError

#: the manifest formats ``strg predict`` reads as lists of videos (a ``path`` column / key)
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".txt")

__all__ = ["Predictor", "VideoResult", "collect_videos", "load_predictor", "plan_windows", "predict_videos"]


# ----------------------------------------------------------------------------------------------
# The model and its settings, from a run


@dataclass
class Predictor:
    """A model with everything needed to apply it to a video file (:func:`load_predictor`)."""

    model: torch.nn.Module
    classes: list[str]
    multi_label: bool
    combine: str  # eval.combine: "max" (paper) or "mean" over a video's clips x views
    scores: str  # eval.scores: "prob" (softmax / sigmoid) or "logit"
    clips: object  # a ClipDataset without videos: clip sampling, boxes from a store, transform
    max_boxes: int  # boxes per frame in a batch (0: a model without boxes)
    checkpoint: Path
    config_source: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: str = "none"
    proposer: object = None  # frames -> boxes, when boxes come from the detector
    stats: dict = field(default_factory=lambda: {"decode": 0.0, "proposals": 0.0, "transform": 0.0, "model": 0.0})

    @property
    def uses_boxes(self) -> bool:
        return self.max_boxes > 0


def _find_run(path: Path, overrides: list[str]) -> tuple[Path, dict, object, str]:
    """(checkpoint path, checkpoint, the run's :class:`strg.config.RunConfig`, where it came from)."""
    from strg.config import load_config
    from strg.engine.backbone_source import apply_backbone_source
    from strg.engine import checkpoint as ckpt_lib

    if not path.exists():
        raise CheckpointError(f"{path}: no such run folder or checkpoint file")
    ckpt_path = ckpt_lib.resolve_init(path)  # a run folder without checkpoints: CheckpointError
    ckpt = ckpt_lib.load_checkpoint(ckpt_path)
    if path.is_dir():
        run_dir = path
    else:  # RUN/checkpoints/ckpt_N.pt, or a file anywhere
        run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    yaml_path = run_dir / "config.yaml"
    if path.is_dir() and yaml_path.is_file():
        config, source = str(yaml_path), str(yaml_path)
    elif isinstance(ckpt.get("config"), dict):
        config, source = ckpt["config"], f"{ckpt_path} (its saved config)"
    elif yaml_path.is_file():
        config, source = str(yaml_path), str(yaml_path)
    else:
        raise ConfigError(
            f"{ckpt_path}: the checkpoint carries no config and there is no {yaml_path}: the model's variant, "
            "clip sampling and normalisation are unknown (give a run folder made by `strg train`)"
        )
    cfg = load_config(config, overrides)
    apply_backbone_source(cfg)  # as training does: null pool2 kernel, mean, std from the backbone's source
    return ckpt_path, ckpt, cfg, source


def _classes(ckpt: dict, cfg, ckpt_path: Path, classes_file: str | None) -> list[str]:
    """Class names: ``--classes`` file, else the checkpoint's, else the config's dataset's."""
    if classes_file:
        try:
            names = [c.strip() for c in Path(classes_file).read_text(encoding="utf-8-sig").splitlines() if c.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{classes_file}: cannot read the class names ({e})") from None
        if not names:
            raise DataError(f"{classes_file}: no class names in it")
        return names
    if ckpt.get("classes"):
        return [str(c) for c in ckpt["classes"]]
    from strg.engine.build import dataset_from_config

    try:  # an older checkpoint: the names are in the dataset's annotation files
        return list(dataset_from_config(cfg.data, cfg.data.train_split, training=True).classes)
    except StrgError as e:
        raise ConfigError(
            f"{ckpt_path}: the checkpoint does not list its class names and the dataset of its config cannot be "
            f"read to find them ({e}); pass --classes FILE (one name per line, in training order)"
        ) from None


def _clip_dataset(cfg, classes: list[str], multi_label: bool, proposals: str | None, source: str):
    """A :class:`ClipDataset` with no videos, made by the datasets' own constructor in test mode:
    the evaluation's clip sampling, transform and proposals lookup."""
    from strg.data.datasets import _clip_dataset as make

    if cfg.data.kind == "random":
        raise ConfigError(f"{source}: data.kind 'random' is made of generated clips, not videos: there is no clip "
                          "sampling or normalisation to apply to a video file")
    options = dataclasses.replace(cfg.data.options, proposals=proposals, on_error="raise")
    return make(cfg.data.kind, [], classes, options, multi_label=multi_label, training=False, needs_flip_map=False,
                frames_fps=getattr(options, "frames_fps", 24.0))


def load_predictor(
    run: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    proposals: str | None = None,
    no_boxes: bool = False,
    make_proposer=None,
    classes_file: str | None = None,
    device: str = "auto",
    amp: bool = False,
) -> Predictor:
    """The model of a run folder (config.yaml + checkpoints/) or of a checkpoint file with its config.

    Args:
        run: a run folder (its newest checkpoint) or a checkpoint file.
        overrides: ``section.key=value`` changes to the run's config (e.g. ``data.test_clips=3``).
        proposals: a proposals store to take the boxes from.
        no_boxes: run without boxes: only for models that take none (the I3D baseline).
        make_proposer: ``top_k -> proposer``, a proposer being ``frames -> (boxes, scores,
            num_boxes)`` (:func:`strg.proposals.build_rpn_proposer`), called with the run's boxes
            per frame when a region model has no ``proposals``: boxes computed on the fly.
        classes_file: class names, one per line (for checkpoints that do not list them).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
        amp: bf16 autocast on a GPU (ignored on the CPU).
    """
    from strg.engine import checkpoint as ckpt_lib
    from strg.models import build_model

    ckpt_path, ckpt, cfg, source = _find_run(Path(run), list(overrides))
    options = cfg.data.options
    multi_label = bool(ckpt.get("multi_label", cfg.data.kind == "charades" or getattr(options, "multi_label", False)))
    classes = _classes(ckpt, cfg, ckpt_path, classes_file)
    name = cfg.model.name  # the weights come from the checkpoint, the boxes from --proposals or the detector
    model = build_model(name, num_classes=len(classes), **cfg.model.build_kwargs(starting_weights=False))
    ckpt_lib.load_model_state(model, ckpt, ckpt_path)
    if model.uses_boxes and no_boxes:
        raise ConfigError(f"{ckpt_path}: model {name!r} was trained with region proposals and cannot run without "
                          "boxes (--no-boxes is for the I3D baseline); give --proposals STORE or detector weights")
    uses = model.uses_boxes
    proposer = None
    if uses and proposals is None:
        if make_proposer is None:
            raise ConfigError(f"{ckpt_path}: model {name!r} needs region proposals: give --proposals STORE (made by "
                              "`strg proposals extract`) or the detector's weights (--detector-weights PATH)")
        proposer = make_proposer(int(options.max_boxes))
    try:
        dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as e:
        raise ConfigError(f"device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: no CUDA GPU is available here (use --device cpu)")
    model.eval().to(dev)
    if isinstance(proposer, torch.nn.Module):
        proposer = proposer.to(dev)
    return Predictor(
        model=model, classes=classes, multi_label=multi_label, combine=cfg.eval.combine, scores=cfg.eval.scores,
        clips=_clip_dataset(cfg, classes, multi_label, proposals if uses else None, source),
        max_boxes=int(options.max_boxes) if uses else 0, checkpoint=ckpt_path, config_source=source, device=dev,
        amp="bf16" if amp and dev.type == "cuda" else "none", proposer=proposer,
    )


# ----------------------------------------------------------------------------------------------
# Which videos


def _from_manifest(path: Path) -> list[Path]:
    """Video paths of a .csv (``path`` column, else the first), .jsonl (``path`` key) or .txt file."""
    import csv

    text = path.read_text(encoding="utf-8-sig")
    base = path.parent
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(str(json.loads(line)["path"]))
                except (ValueError, KeyError, TypeError) as e:
                    why = f"{type(e).__name__}: {e}"
                    raise DataError(f"{path}:{n}: expected a JSON object with a 'path' ({why})") from None
    elif path.suffix == ".csv":
        table = list(csv.reader(text.splitlines()))
        col = table[0].index("path") if table and "path" in table[0] else 0
        rows = [r[col] for r in table[1 if table and "path" in table[0] else 0:] if r and r[col].strip()]
    else:
        rows = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not rows:
        raise DataError(f"{path}: a manifest without videos")
    return [p if p.is_absolute() else base / p for p in map(Path, rows)]


def collect_videos(inputs: list[str]) -> list:
    """Video files, frame folders, folders of them (one level), globs and manifests.

    Returns :class:`strg.proposals.extract.VideoEntry` (id = file name without extension, the
    proposals store's key). A folder with no videos, a glob that matches nothing, a manifest
    without rows or an id given twice raise DataError naming it: nothing to run. A video path
    that does not exist is kept: it fails on its own, like a file that cannot be decoded, and the
    other videos go on.
    """
    from strg.proposals.extract import VideoEntry, check_unique_ids, find_videos

    paths: list[str] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists() and any(c in raw for c in "*?["):
            found = sorted(glob.glob(raw, recursive=True))
            if not found:
                raise DataError(f"{raw}: no file matches this pattern")
            paths += found
        elif p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            paths += [str(v) for v in _from_manifest(p)]
        else:
            paths.append(raw)
    entries = []
    for p in paths:
        entries += find_videos([p]) if Path(p).exists() else [VideoEntry(Path(p).stem, Path(p))]
    return check_unique_ids(entries)


# ----------------------------------------------------------------------------------------------
# Which clips of a video


def plan_windows(num_frames: int, fps: float, *, num_clip_frames: int, stride: float, stride_unit: str,
                 test_clips: int, long_after: float | None, window_stride: float | None) -> dict:
    """The clips of one video, as frame indices.

    A video of at most ``long_after`` seconds (or any, when it is None) takes the evaluation's
    ``test_clips`` uniformly spaced clips (:func:`strg.data.sampling.uniform_clip_starts`). A
    longer one takes clips starting every ``window_stride`` seconds (default: half a clip's
    span), the last one ending at the video's last frame, so every frame is in some clip. A video
    shorter than one clip repeats its last frame, as in the evaluation (``short`` is then True).

    Returns ``{"mode": "clips" | "timeline", "windows": [int64[T]], "starts": int64[W] (frames),
    "span": frames one clip covers, "short": bool}``.
    """
    from strg.data.sampling import (
        clip_indices,
        clip_span,
        stride_in_frames,
        uniform_clip_starts,
    )

    step = stride_in_frames(stride, stride_unit, fps)
    span = clip_span(num_clip_frames, step)
    room = max(num_frames - span, 0)
    timeline = long_after is not None and num_frames / fps > long_after
    if timeline:
        every = max(1, round((window_stride if window_stride else 0.5 * span / fps) * fps))
        starts = np.arange(0, room + 1, every, dtype=np.int64)
        if starts[-1] != room:
            starts = np.append(starts, room)  # the last clip ends at the last frame
    else:
        starts = uniform_clip_starts(num_frames, span, test_clips)
    windows = [clip_indices(int(s), num_clip_frames, step, 0, num_frames - 1) for s in starts]
    return {"mode": "timeline" if timeline else "clips", "windows": windows, "starts": starts, "span": span,
            "short": num_frames < span}


# ----------------------------------------------------------------------------------------------
# Running


@dataclass
class VideoResult:
    """What :func:`predict_videos` found for one video (the JSON Lines record: :meth:`record`)."""

    video_id: str
    path: str
    error: str | None = None
    fps: float = 0.0
    num_frames: int = 0
    mode: str = "clips"
    short: bool = False
    starts: np.ndarray | None = None  # int64[W] first frame of each clip
    span: int = 0  # frames one clip covers
    scores: np.ndarray | None = None  # float64[W, V, C] score of every clip x view
    video_scores: np.ndarray | None = None  # float64[C] combined
    files: list[str] = field(default_factory=list)
    top: list[tuple[str, float]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps else 0.0

    def window_times(self) -> np.ndarray:
        """float64[W, 2]: start and end (seconds) of each clip, clipped to the video."""
        start = self.starts / self.fps
        end = np.minimum(self.starts + self.span, self.num_frames) / self.fps
        return np.stack([start, end], 1)

    def record(self, classes: list[str], top_k: int, combine: str) -> dict:
        rec: dict = {"path": self.path, "video_id": self.video_id}
        if self.error is not None:
            return {**rec, "error": self.error}
        rec.update(duration=round(self.duration, 3), fps=round(self.fps, 3), frames=self.num_frames, mode=self.mode,
                   clips=int(self.scores.shape[0]), views=int(self.scores.shape[1]),
                   top_k=[{"class": c, "score": round(s, 6)} for c, s in self.top])
        if self.short:
            rec["shorter_than_clip"] = True
        if self.mode == "timeline":
            per_window = _combine(self.scores, combine, axis=1)  # (W, C)
            rec["windows"] = [
                {"start": round(float(t0), 3), "end": round(float(t1), 3),
                 "top_k": [{"class": classes[c], "score": round(float(row[c]), 6)}
                           for c in np.argsort(-row, kind="stable")[:top_k]]}
                for (t0, t1), row in zip(self.window_times(), per_window)
            ]
        rec["files"] = list(self.files)
        return rec


def _combine(scores: np.ndarray, how: str, axis) -> np.ndarray:
    """max (paper section 6.1) or mean of clip scores over ``axis``."""
    return scores.max(axis=axis) if how == "max" else scores.mean(axis=axis)


def _video_boxes(pred: Predictor, entry, idx: np.ndarray, frames: torch.Tensor, fps: float, size, cache: dict):
    """Boxes (Tensor[T, k, 4]) in pixels of ``frames`` and mask (Tensor[T, k]) of one clip.

    From the store as the evaluation reads them, or from the detector run on the clip's frames
    (each frame once per video: ``cache`` maps frame index -> (boxes, mask))."""
    from strg.data.datasets import VideoRecord

    t = len(idx)
    if not pred.uses_boxes:
        return torch.zeros(t, 0, 4), torch.zeros(t, 0, dtype=torch.bool)
    if pred.proposer is None:  # the dataset's own lookup: nearest stored frame, rescaled to the frames
        return pred.clips._boxes(VideoRecord(entry.video_id, str(entry.path)), idx, fps, size)
    new = sorted({int(i) for i in idx} - set(cache))
    if new:
        pos = {int(i): n for n, i in reversed(list(enumerate(idx)))}
        sel = frames[[pos[i] for i in new]].to(pred.device)
        with torch.inference_mode():
            boxes, _, num = pred.proposer(sel)  # (N, K, 4) original pixels, (N,)
        k = boxes.shape[1]
        mask = torch.arange(k, device=num.device)[None, :] < num[:, None]
        for i, b, m in zip(new, boxes.float().cpu(), mask.cpu()):
            cache[i] = (b, m)
    return torch.stack([cache[int(i)][0] for i in idx]), torch.stack([cache[int(i)][1] for i in idx])


def _video_items(pred: Predictor, entry, res: VideoResult, *, long_after, window_stride):
    """Items (dicts as the datasets make them, plus ``slot`` = (window, view)) of one video."""
    from strg.data.decode import open_video
    from strg.data.stream import WindowStream

    cl = pred.clips
    with open_video(entry.path, backend=cl.decode_backend, fps=cl.frames_fps, threads=cl.decode_threads) as src:
        res.fps, res.num_frames = float(src.fps), int(src.num_frames)
        plan = plan_windows(src.num_frames, src.fps, num_clip_frames=cl.num_frames, stride=cl.stride,
                            stride_unit=cl.stride_unit, test_clips=cl.test_clips, long_after=long_after,
                            window_stride=window_stride)
        res.mode, res.short, res.starts, res.span = plan["mode"], plan["short"], plan["starts"], plan["span"]
        res.scores = np.full((len(plan["windows"]), cl.test_views, len(pred.classes)), np.nan)
        cache: dict = {}
        stream = iter(WindowStream(src, plan["windows"]))
        while True:
            t0 = time.perf_counter()
            got = next(stream, None)
            pred.stats["decode"] += time.perf_counter() - t0
            if got is None:
                break
            w, frames = got
            idx = plan["windows"][w]
            t0 = time.perf_counter()
            boxes, mask = _video_boxes(pred, entry, idx, frames, src.fps, (src.height, src.width), cache)
            for j in [j for j in cache if j < idx[0]]:
                del cache[j]
            t1 = time.perf_counter()
            pred.stats["proposals"] += t1 - t0
            views = [cl.transform(frames, boxes, mask, view=v) for v in range(cl.test_views)]
            pred.stats["transform"] += time.perf_counter() - t1
            for v, out in enumerate(views):
                yield {"clip": out.clip, "boxes": out.boxes, "box_mask": out.box_mask, "target": torch.tensor(-1),
                       "video_id": entry.video_id, "video_index": 0, "clip_index": w * cl.test_views + v,
                       "slot": (w, v)}


def _run_batch(pred: Predictor, pending: list) -> None:
    """Score the pending (result, item) pairs, clips of one size at a time, as the evaluation does."""
    from strg.data.collate import collate_clips
    from strg.engine.evaluator import autocast_context, forward, to_device

    groups: dict[tuple, list] = {}
    for res, item in pending:
        if res.error is None:  # a video that failed midway: its clips are dropped
            groups.setdefault(tuple(item["clip"].shape), []).append((res, item))
    for group in groups.values():
        t0 = time.perf_counter()
        batch = to_device(collate_clips([it for _, it in group], pred.max_boxes), pred.device)
        with torch.inference_mode(), autocast_context(pred.device, pred.amp):
            logits = forward(pred.model, batch, pred.uses_boxes)
        logits = logits.double()  # as strg eval: float64 before softmax / sigmoid
        if pred.scores == "prob":
            logits = torch.sigmoid(logits) if pred.multi_label else torch.softmax(logits, dim=1)
        for (res, item), row in zip(group, logits.cpu().numpy()):
            res.scores[item["slot"]] = row
        pred.stats["model"] += time.perf_counter() - t0


def _finish(pred: Predictor, res: VideoResult, top_k: int) -> VideoResult:
    if res.error is None:
        c = len(pred.classes)
        res.video_scores = _combine(res.scores.reshape(-1, c), pred.combine, axis=0)  # all clips x views
        order = np.argsort(-res.video_scores, kind="stable")[:top_k]
        res.top = [(pred.classes[i], float(res.video_scores[i])) for i in order]
    return res


def predict_videos(pred: Predictor, videos, *, batch_size: int = 8, long_after: float | None = 60.0,
                   window_stride: float | None = None, top_k: int = 5):
    """Yield a :class:`VideoResult` for every video (in the given order) as soon as it is scored.

    Args:
        pred: :func:`load_predictor`.
        videos: :class:`strg.proposals.extract.VideoEntry` items (:func:`collect_videos`).
        batch_size: clips per forward pass; clips of consecutive videos share batches.
        long_after: videos longer than this (seconds) get a timeline (None: never).
        window_stride: seconds between timeline clips (default half a clip).
        top_k: classes kept in ``top``.

    A video that cannot be read (missing, corrupt, truncated, no frames, no proposals in the
    store) gets a result with ``error`` set; the others go on.
    """
    from collections import deque

    pending: list = []  # (result, item) waiting for a batch
    waiting: deque = deque()  # [result, all items made], input order

    def finished():
        while waiting and waiting[0][1] and not any(r is waiting[0][0] for r, _ in pending):
            yield _finish(pred, waiting.popleft()[0], top_k)

    for entry in videos:
        res = VideoResult(entry.video_id, str(entry.path))
        state = [res, False]
        waiting.append(state)
        items = _video_items(pred, entry, res, long_after=long_after, window_stride=window_stride)
        while True:
            try:  # only reading the video is the video's fault; a failing model stops the run
                item = next(items, None)
            except Exception as e:  # noqa: BLE001 - a bad video must not end the run: report it, go on
                res.error = f"{type(e).__name__}: {e}" if not isinstance(e, StrgError) else str(e)
                pending[:] = [(r, it) for r, it in pending if r is not res]
                break
            if item is None:
                break
            pending.append((res, item))
            if len(pending) >= batch_size:
                _run_batch(pred, pending)
                pending.clear()
                yield from finished()
        state[1] = True
        yield from finished()
    _run_batch(pred, pending)
    pending.clear()
    yield from finished()


# ----------------------------------------------------------------------------------------------
# Files


def write_outputs(pred: Predictor, entry, res: VideoResult, out_dir: str | os.PathLike, *, explain: bool = False,
                  timeline_rows: int = 5) -> list[str]:
    """The timeline CSV + PNG of a long video, the ``--explain`` picture; returns the paths."""
    from strg.timeline import draw_timeline, write_timeline_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if res.mode == "timeline":
        per_window = _combine(res.scores, pred.combine, axis=1)  # (W, C): the views of each clip
        times = res.window_times()
        res.files.append(write_timeline_csv(out / f"{res.video_id}.timeline.csv", times, per_window, pred.classes))
        rows = [int(i) for i in np.argsort(-res.video_scores, kind="stable")[:timeline_rows]]
        label = "probability" if pred.scores == "prob" else "logit"
        res.files.append(draw_timeline(out / f"{res.video_id}.timeline.png", times, per_window, pred.classes, rows,
                                       title=f"{res.path} ({res.duration:.1f} s, {len(times)} clips)",
                                       score_label=label, limits=(0.0, 1.0) if pred.scores == "prob" else None))
    if explain:
        res.files.append(explain_video(pred, entry, res, out / f"{res.video_id}.explain.png"))
    return res.files


def explain_video(pred: Predictor, entry, res: VideoResult, path: str | os.PathLike, *, max_frames: int = 8) -> str:
    """:func:`strg.visualize.draw` of the clip x view that scored highest for the top class.

    That clip is decoded again (one clip, so the scoring pass need not keep any), made exactly as
    for scoring, and run once more through the model with ``return_graphs=True``.
    """
    from strg.data.collate import collate_clips
    from strg.data.decode import open_video
    from strg.data.sampling import clip_indices, stride_in_frames
    from strg.visualize import draw, explain

    cl = pred.clips
    top = pred.classes.index(res.top[0][0])
    w, v = np.unravel_index(int(np.nanargmax(res.scores[:, :, top])), res.scores.shape[:2])
    idx = clip_indices(int(res.starts[w]), cl.num_frames, stride_in_frames(cl.stride, cl.stride_unit, res.fps), 0,
                       res.num_frames - 1)
    with open_video(entry.path, backend=cl.decode_backend, fps=cl.frames_fps, threads=cl.decode_threads) as src:
        frames = src.get_frames(idx)
        boxes, mask = _video_boxes(pred, entry, idx, frames, src.fps, (src.height, src.width), {})
    out = cl.transform(frames, boxes, mask, view=int(v))
    batch = collate_clips([{"clip": out.clip, "boxes": out.boxes, "box_mask": out.box_mask, "target": torch.tensor(-1),
                            "video_id": entry.video_id, "video_index": 0, "clip_index": 0}], pred.max_boxes)
    t0, t1 = res.window_times()[w]
    target = torch.zeros(len(pred.classes)) if pred.multi_label else torch.tensor(-1)
    item = {"clip": batch["clips"][0], "boxes": batch["boxes"][0], "box_mask": batch["box_mask"][0], "target": target,
            "video_id": f"{entry.video_id}  clip {t0:.1f}-{t1:.1f} s" + (f", view {v}" if cl.test_views > 1 else "")}
    ex = explain(pred.model, item, pred.classes, multi_label=pred.multi_label)
    return draw(ex, path, max_frames=max_frames)
