"""Import the Something-Else boxes (ground truth for Something-Something v2) into a proposals store.

Something-Else (docs/formats.md) ships as several JSON files, each a dict keyed by video
id; each value is a list with one entry per annotated frame::

    {"name": "<id>/0001.jpg",                       # 1-based frame number of the 12 fps video
     "labels": [{"box2d": {"x1":..,"y1":..,"x2":..,"y2":..},   # pixels of the 240-px-tall frame
                 "category": "...", "standard_category": "0000" | "hand", "gt_annotation": "..."}],
     "gt_placeholders": [...], "nr_instances": n}

All files are merged into one :class:`~strg.data.proposals.ProposalStore`, so ground-truth boxes
and detector proposals take the same path into the model. Ground-truth boxes have score 1 and keep
their annotation order; a label may carry an optional ``"score"`` (detector proposals written in
this format, e.g. by ``strg synth``), and boxes are then stored best first. Frame indices are
0-based (``0001.jpg`` -> frame 0) at 12 fps.

The JSON gives no frame width. With ``video_root`` the importer reads each video's size from its
header; otherwise the store records height 240 and width 0 ("unknown"), and readers scale boxes
by the height ratio only, which is right for any aspect-preserving resize of the frames.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from strg.data.decode import decoder_errors
from strg.data.proposals import ProposalStore, validate_boxes
from strg.errors import DataError

logger = logging.getLogger("strg.data")

#: Something-Something v2 frame rate and frame height (docs/formats.md)
SOMETHING_FPS = 12.0
SOMETHING_HEIGHT = 240

_FRAME_NUMBER = re.compile(r"(\d+)\.\w+$")

__all__ = ["import_something_else", "parse_video_entry"]


def parse_video_entry(
    video_id: str, frames: object, *, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One video's Something-Else entry as arrays.

    Returns:
        frames (int64[F]) 0-based, boxes (float32[F, K, 4]), scores (float32[F, K]; 1 where a
        label has no ``score``), num_boxes (int64[F]); K = the most boxes in one frame (>= 1).
    """
    if not isinstance(frames, list):
        raise DataError(f"{where}: video {video_id!r}: expected a list of frames")
    indices, per_frame, seen = [], [], set()
    for n, fr in enumerate(frames):
        if not isinstance(fr, dict) or not isinstance(fr.get("name"), str):
            raise DataError(f"{where}: video {video_id!r}: frame entry {n} has no 'name'")
        m = _FRAME_NUMBER.search(fr["name"])
        if m is None or int(m.group(1)) < 1:
            raise DataError(f"{where}: video {video_id!r}: frame name {fr['name']!r} has no 1-based frame number")
        labels = fr.get("labels", [])
        if not isinstance(labels, list):
            raise DataError(f"{where}: video {video_id!r}: {fr['name']}: 'labels' is not a list")
        rows = []
        for lab in labels:
            try:
                b = lab["box2d"]
                score = float(lab.get("score", 1.0))
                rows.append([float(b["x1"]), float(b["y1"]), float(b["x2"]), float(b["y2"]), score])
            except (KeyError, TypeError, ValueError, AttributeError):
                raise DataError(
                    f"{where}: video {video_id!r}: {fr['name']}: label without a valid box2d (or score)"
                ) from None
        if m.group(1) and int(m.group(1)) in seen:
            raise DataError(f"{where}: video {video_id!r}: frame {fr['name']!r} appears twice")
        seen.add(int(m.group(1)))
        indices.append(int(m.group(1)) - 1)
        per_frame.append(rows)
    k = max([len(r) for r in per_frame] + [1])
    table = np.zeros((len(per_frame), k, 5), dtype=np.float32)  # x1 y1 x2 y2 score
    num = np.array([len(r) for r in per_frame], dtype=np.int64)
    for f, rows in enumerate(per_frame):
        if rows:
            table[f, : len(rows)] = rows
    return np.asarray(indices, dtype=np.int64), table[..., :4].copy(), table[..., 4].copy(), num


def _frame_size(video_root: str | None, video_id: str, ext: str, height: int) -> tuple[int, int]:
    if video_root is None:
        return height, 0
    import av

    path = os.path.join(video_root, video_id + ext)
    if not os.path.isfile(path):
        raise DataError(f"{path}: video file not found (needed for the frame size of video {video_id!r})")
    with decoder_errors(path, f"cannot read the frame size of video {video_id!r}"), av.open(path) as c:
        ctx = c.streams.video[0].codec_context
        return int(ctx.height), int(ctx.width)


def import_something_else(
    json_paths: Sequence[str | os.PathLike],
    store_path: str | os.PathLike,
    *,
    append: bool = False,
    video_root: str | None = None,
    video_ext: str = ".webm",
    frame_height: int = SOMETHING_HEIGHT,
    fps: float = SOMETHING_FPS,
    clip_boxes: bool = True,
    on_error: str = "raise",
    progress: bool = True,
) -> dict:
    """Merge Something-Else JSON files into one proposals store, all or nothing.

    The store at ``store_path`` changes only when the whole import succeeds: a new store is
    written to a temporary file and renamed over it at the end (:class:`ProposalStore` mode
    ``"w"``); with ``append`` every video goes in one SQLite transaction. An error (or an import
    in which every video was skipped) leaves the existing store as it was.

    Args:
        json_paths: the annotation files (e.g. ``bounding_box_smthsmth_part1.json`` ... ``part4``).
        store_path: the store to write (replaced unless ``append``).
        append: add to / replace entries of an existing store instead of starting a new one.
        video_root: folder of the ``<id><video_ext>`` videos, to record each frame's real width.
        frame_height: frame height the boxes refer to when ``video_root`` is not given.
        fps: frame rate of the annotated frames.
        clip_boxes: clip coordinates that stick out of the frame to its border (annotations
            drawn slightly past the edge); when False such a box is an error.
        on_error: "raise" (stop at the first bad video) or "skip" (log it and go on).
        progress: show a tqdm progress bar.

    Returns:
        counts: ``videos``, ``frames``, ``boxes`` written, ``clipped`` boxes, ``skipped`` videos.

    Raises:
        DataError naming the file and video id: unparsable JSON or entry, a box with x2 < x1 or
        not finite, the same video in two files; and when no video could be imported.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if not json_paths:
        raise DataError("import_something_else: no JSON files given")
    counts = {"videos": 0, "frames": 0, "boxes": 0, "clipped": 0, "skipped": 0}
    options = {"video_root": video_root, "video_ext": video_ext, "frame_height": frame_height, "fps": fps,
               "clip_boxes": clip_boxes}  # fmt: skip
    try:
        _import_files(json_paths, store_path, append, on_error, progress, counts, options)
    except DataError as e:
        raise DataError(f"{e} ({os.fspath(store_path)} was not changed)") from e
    if counts["clipped"]:
        logger.info("clipped %d boxes to their frame", counts["clipped"])
    return counts


def _import_files(json_paths, store_path, append: bool, on_error: str, progress: bool, counts: dict,
                  options: dict) -> None:
    """The loop of :func:`import_something_else`: one transaction, or one new file, for all."""
    seen: dict[str, str] = {}
    with ProposalStore(store_path, mode="a" if append else "w") as store, store.batch():
        for jp in map(os.fspath, json_paths):
            data = _read_json_object(jp)
            for vid, entry in tqdm(data.items(), desc=os.path.basename(jp), unit="video", disable=not progress):
                vid = str(vid)
                if vid in seen:
                    raise DataError(f"{jp}: video {vid!r} is also in {seen[vid]}")
                seen[vid] = jp
                try:
                    added = _import_video(store, vid, entry, where=jp, **options)
                except DataError as e:
                    if on_error == "raise":
                        raise
                    logger.warning("skipping video %s: %s", vid, e)
                    counts["skipped"] += 1
                    continue
                for key, n in added.items():
                    counts[key] += n
        if not counts["videos"]:
            raise DataError(
                f"{', '.join(map(os.fspath, json_paths))}: no video could be imported ({counts['skipped']} skipped)"
            )


def _read_json_object(path: str) -> dict:
    """A Something-Else file: a JSON object keyed by video id."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by video id")
    return data


def _import_video(
    store: ProposalStore, vid: str, entry: object, *, where: str, video_root: str | None, video_ext: str,
    frame_height: int, fps: float, clip_boxes: bool,
) -> dict:
    """Parse, clip and store one video's entry; returns what it added to the counts."""
    frames, boxes, scores, num = parse_video_entry(vid, entry, where=where)
    h, w = _frame_size(video_root, vid, video_ext, frame_height)
    valid = np.arange(boxes.shape[1])[None, :] < num[:, None]  # (F, K)
    clipped = 0
    if clip_boxes:
        # only finite coordinates are clipped: NaN or inf stays and is refused by store.put
        hi = np.array([w if w > 0 else np.inf, h if h > 0 else np.inf] * 2, dtype=np.float32)
        finite = np.isfinite(boxes).all(axis=-1, keepdims=True)
        new = np.where(finite, np.clip(boxes, 0.0, hi), boxes)
        clipped = int((finite[..., 0] & (new != boxes).any(axis=-1))[valid].sum())
        boxes = new
    # checked here to name the JSON file (frames 1-based as in its file names); put checks again
    validate_boxes(boxes, valid, (h, w), where=f"{where}: video {vid!r}", frames=frames + 1)
    store.put(vid, frames=frames, boxes=boxes, scores=scores, num_boxes=num, frame_size=(h, w), fps=fps)
    return {"videos": 1, "frames": len(frames), "boxes": int(num.sum()), "clipped": clipped}
