"""Datasets in the real formats (docs/formats.md) and a generic manifest format.

Every dataset is a :class:`ClipDataset`: a list of :class:`VideoRecord` (annotation order kept,
the Charades metric depends on it), the class names, and the clip / box / target logic shared by
all kinds. The kind-specific part is only reading the annotation files. The builders
(:func:`charades`, :func:`something_v2`, :func:`something_v1`, :func:`manifest`) take their kind's
options object (:mod:`strg.data.options`); ``strg.data.build_dataset`` is how they are called.

Item layout: docs/DESIGN.md, "The batch". In test mode the dataset enumerates
``videos x test_clips x test_views`` items, video-major: item ``i`` is video
``i // (clips * views)``, and ``clip_index = i % (clips * views)`` (clip-major, then view).

Bad samples (missing/corrupt video, no proposals entry, ...) raise :class:`DataError` naming the
file or id; with ``on_error="skip"`` the item is logged and returned as ``None``, and
:func:`strg.data.collate.collate_clips` counts it in ``batch["num_skipped"]``. Annotation files
are read when the dataset is built, so an unparsable line or unknown class fails at once.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from strg.data.decode import DECODE_BACKENDS, open_video, torchcodec_cuda_problem
from strg.data.options import (
    CharadesOptions,
    ClipOptions,
    ManifestOptions,
    SomethingV1Options,
    SomethingV2Options,
)
from strg.data.proposals import ProposalStore, select_boxes
from strg.data.sampling import (
    clip_indices,
    clip_span,
    random_clip_start,
    stride_in_frames,
    uniform_clip_starts,
)
from strg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform
from strg.errors import ConfigError, DataError

_MAX_CONSECUTIVE_SKIPS = 20  # training under on_error='skip': then the dataset is broken, stop
logger = logging.getLogger("strg.data")

__all__ = ["ClipDataset", "VideoRecord", "charades", "something_v2", "something_v1", "manifest"]


@dataclass
class VideoRecord:
    """One annotated video.

    Attributes:
        video_id: the dataset's id.
        path: video file or frame folder.
        label: single-label class index; -1 when unlabeled (e.g. a test split).
        labels: multi-label class indices present in the whole video.
        actions: Charades ``(class, start s, end s)`` rows, float64[A, 3], or None.
        start, end: optional segment of the video in seconds (manifest).
        source: "file:line" or "file: id ..." for error messages.
    """

    video_id: str
    path: str
    label: int = -1
    labels: tuple[int, ...] = ()
    actions: np.ndarray | None = None
    start: float | None = None
    end: float | None = None
    source: str = ""


class ClipDataset(Dataset):
    """Clips + boxes + targets from a list of videos (see the module docstring).

    Args:
        videos: the records, annotation order.
        classes: class names (``len(classes)`` = number of classes).
        multi_label: multi-hot float targets (Charades) instead of class indices.
        training: one random clip per video per epoch; else every test clip x view.
        transform: the joint frame/box transform.
        num_frames: T, frames per clip.
        stride, stride_unit: between clip frames, in "frames" or "seconds".
        test_clips: clips per video in test mode.
        proposals: proposals store path, or None for clips without boxes (k = 0).
        max_boxes: boxes per frame taken from the store (best scores first).
        proposal_tolerance: nearest-frame fallback in frames (None: half the store's interval).
        flip_map: Tensor[C] class index -> class index after a horizontal flip, or None.
        on_error: "raise" or "skip" (see module docstring).
        decode_backend, decode_threads: see :func:`strg.data.decode.open_video`.
        frames_fps: frame rate of frame folders.
    """

    def __init__(
        self,
        videos: list[VideoRecord],
        classes: list[str],
        *,
        multi_label: bool,
        training: bool,
        transform: ClipTransform,
        num_frames: int = 32,
        stride: float = 4.0,
        stride_unit: str = "frames",
        test_clips: int = 1,
        proposals: str | None = None,
        max_boxes: int = 50,
        proposal_tolerance: float | None = None,
        flip_map: torch.Tensor | None = None,
        on_error: str = "raise",
        decode_backend: str = "auto",
        decode_threads: int = 1,
        frames_fps: float = 24.0,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if stride_unit not in ("frames", "seconds"):
            raise ConfigError(f"stride_unit must be 'frames' or 'seconds', not {stride_unit!r}")
        if num_frames < 1 or stride <= 0 or test_clips < 1 or max_boxes < 0:
            raise ConfigError("num_frames, stride and test_clips must be positive, max_boxes >= 0")
        if decode_backend not in DECODE_BACKENDS:
            raise ConfigError(f"decode_backend must be one of {', '.join(DECODE_BACKENDS)}; not {decode_backend!r}")
        if decode_backend == "torchcodec-cuda" and torchcodec_cuda_problem() is not None:  # before any video
            raise ConfigError(f"decode_backend=torchcodec-cuda: cannot decode on the GPU: {torchcodec_cuda_problem()}")
        self.videos = videos
        self.classes = classes
        self.multi_label = multi_label
        self.training = training
        self.transform = transform
        self.num_frames = int(num_frames)
        self.stride = float(stride)
        self.stride_unit = stride_unit
        self.test_clips = int(test_clips)
        self.test_views = transform.test_views
        self.max_boxes = int(max_boxes)
        self.proposal_tolerance = proposal_tolerance
        self.flip_map = flip_map
        self.on_error = on_error
        self.decode_backend = decode_backend
        self.decode_threads = int(decode_threads)
        self.frames_fps = float(frames_fps)
        self.store = ProposalStore(proposals, mode="r") if proposals else None

    # -- indexing ------------------------------------------------------------------------------

    @property
    def clips_per_video(self) -> int:
        """Items per video: 1 in training, ``test_clips * test_views`` in testing."""
        return 1 if self.training else self.test_clips * self.test_views

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def __getitem__(self, index: int) -> dict | None:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        video_index, clip_index = divmod(index, self.clips_per_video)
        clip, view = divmod(clip_index, self.test_views)
        skipped = 0
        while True:
            try:
                item = self._load(video_index, clip_index, clip, view)
                item["num_skipped"] = skipped
                return item
            except DataError as e:
                if self.on_error == "raise":
                    raise
                logger.warning("skipping video %s (item %d): %s", self.videos[video_index].video_id, index, e)
                skipped += 1
                if not self.training:
                    return None  # evaluation: the video is reported, and scored as missing
                # Training: take another random video instead of returning nothing, so that no
                # micro-batch is ever empty (an empty one would skip DDP's gradient all-reduce on
                # this rank and desynchronise the ranks).
                if skipped >= _MAX_CONSECUTIVE_SKIPS:
                    raise DataError(
                        f"{skipped} videos in a row could not be read (last: {self.videos[video_index].path}: {e}); "
                        "check the dataset"
                    ) from e
                video_index = int(torch.randint(len(self.videos), ()))

    # -- one item ------------------------------------------------------------------------------

    def _load(self, video_index: int, clip_index: int, clip: int, view: int) -> dict:
        rec = self.videos[video_index]
        # a per-item generator drawn from torch's RNG: DataLoader seeds torch per worker, so a
        # seeded run is reproducible
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item())) if self.training else None
        with open_video(rec.path, backend=self.decode_backend, fps=self.frames_fps, threads=self.decode_threads) as src:
            first, last = self._segment(rec, src.num_frames, src.fps)
            stride = stride_in_frames(self.stride, self.stride_unit, src.fps)
            span = clip_span(self.num_frames, stride)
            length = last - first + 1
            if self.training:
                start = random_clip_start(length, span, rng)
            else:
                start = int(uniform_clip_starts(length, span, self.test_clips)[clip])
            idx = clip_indices(start, self.num_frames, stride, first, last)  # (T,)
            frames = src.get_frames(idx)  # (T, H, W, 3)
            fps, size = src.fps, (src.height, src.width)
        boxes, mask = self._boxes(rec, idx, fps, size)
        out = self.transform(frames, boxes, mask, view=view, generator=rng)
        return {
            "clip": out.clip,
            "boxes": out.boxes,
            "box_mask": out.box_mask,
            "target": self._target(rec, idx, fps, out.flipped),
            "video_id": rec.video_id,
            "video_index": video_index,
            "clip_index": clip_index,
        }

    def _segment(self, rec: VideoRecord, num_frames: int, fps: float) -> tuple[int, int]:
        """First and last usable frame (inclusive) of the record's segment."""
        first, last = 0, num_frames - 1
        if rec.start is not None:
            first = int(math.floor(rec.start * fps))
        if rec.end is not None:
            last = min(last, int(math.ceil(rec.end * fps)) - 1)
        if not 0 <= first <= last:
            raise DataError(
                f"{rec.source}: segment [{rec.start}, {rec.end}] s lies outside video {rec.path} "
                f"({num_frames} frames at {fps:g} fps)"
            )
        return first, last

    def _boxes(
        self, rec: VideoRecord, idx: np.ndarray, fps: float, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (Tensor[T, K, 4]) in pixels of the decoded frames and mask (Tensor[T, K])."""
        t = idx.shape[0]
        if self.store is None:
            return torch.zeros(t, 0, 4), torch.zeros(t, 0, dtype=torch.bool)
        stored = self.store.get(rec.video_id)  # DataError naming the store and id if missing
        want = idx
        if stored["fps"] and abs(stored["fps"] - fps) > 1e-3 * fps:
            # proposals indexed at another frame rate (e.g. 24 fps RGB frames vs the mp4): by time
            want = np.round(idx * (stored["fps"] / fps)).astype(np.int64)
        boxes, mask = select_boxes(stored, want, self.max_boxes, self.proposal_tolerance)
        boxes = torch.from_numpy(boxes) * self._box_scale(rec, stored["frame_size"], size)
        return boxes, torch.from_numpy(mask)

    def _box_scale(self, rec: VideoRecord, stored: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """x1 y1 x2 y2 factors from the store's frame size to the decoded one; unknown (0) sides
        take the other side's factor; a different aspect ratio is an error, not a guess."""
        (sh, sw), (h, w) = stored, size
        fy = h / sh if sh > 0 else None
        fx = w / sw if sw > 0 else None
        if fx is None and fy is None:
            fx = fy = 1.0
        fx = fy if fx is None else fx
        fy = fx if fy is None else fy
        if abs(fx / fy - 1.0) > 0.02:
            raise DataError(
                f"{self.store.path}: proposals of video {rec.video_id!r} are for {sw}x{sh} frames, "
                f"but {rec.path} is {w}x{h} (another aspect ratio)"
            )
        return torch.tensor([fx, fy, fx, fy], dtype=torch.float32)

    def video_target(self, video_index: int) -> torch.Tensor:
        """The evaluation target of a whole video, without decoding it (for videos that failed)."""
        return self._target(self.videos[video_index], None, None, False)

    def _target(self, rec: VideoRecord, idx: np.ndarray | None, fps: float | None, flipped: bool) -> torch.Tensor:
        """Training (``idx`` given): the actions overlapping the clip; else the whole video's."""
        if not self.multi_label:
            label = rec.label
            if flipped and label >= 0 and self.flip_map is not None:
                label = int(self.flip_map[label])
            return torch.tensor(label, dtype=torch.int64)
        target = torch.zeros(len(self.classes), dtype=torch.float32)
        if rec.actions is not None and len(rec.actions):
            acts = rec.actions  # (A, 3): class, start, end
            if self.training and idx is not None:
                # the actions whose interval overlaps the clip's time span (Charades, docs/data.md)
                t0, t1 = idx.min() / fps, (idx.max() + 1) / fps
                acts = acts[(acts[:, 1] < t1) & (acts[:, 2] > t0)]
            target[torch.from_numpy(acts[:, 0].astype(np.int64))] = 1.0
        elif rec.labels:
            target[list(rec.labels)] = 1.0
        if flipped and self.flip_map is not None:
            target = torch.zeros_like(target).index_put_((self.flip_map,), target)
        return target


# ------------------------------------------------------------------------------------------------
# reading annotation files


def _read_lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e


def _read_json(path: str):
    text = "\n".join(_read_lines(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e


def _resolve(root: str, path: str | None, default: str) -> str:
    return os.path.join(root, default) if path is None else (path if os.path.isabs(path) else os.path.join(root, path))


def _check_fields(row: dict, header: Sequence[str], where: str) -> None:
    """A CSV row (``csv.DictReader``) must have as many fields as the header: a short row would
    leave its last columns (e.g. Charades ``actions``) silently empty."""
    if None in row:
        raise DataError(f"{where}: more fields ({len(header) + len(row[None])}) than header columns ({len(header)})")
    missing = [k for k in header if row.get(k) is None]
    if missing:
        raise DataError(
            f"{where}: fewer fields ({len(header) - len(missing)}) than header columns ({len(header)}): "
            f"no {', '.join(missing)}"
        )


def _check_unique(videos: list[VideoRecord], path: str) -> None:
    seen: dict[str, str] = {}
    for v in videos:
        if v.video_id in seen:
            raise DataError(f"{v.source}: video id {v.video_id!r} appears twice (first at {seen[v.video_id]})")
        seen[v.video_id] = v.source


def read_charades_classes(path: str) -> tuple[list[str], list[str]]:
    """Charades classes file (``c008 Opening a door``): (ids, names) in file order."""
    ids, names = [], []
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) != 2 or not parts[0]:
            raise DataError(f"{path}:{n}: expected 'cNNN class name', got {line!r}")
        if parts[0] in ids:
            raise DataError(f"{path}:{n}: class id {parts[0]!r} appears twice")
        ids.append(parts[0])
        names.append(parts[1].strip())
    if not ids:
        raise DataError(f"{path}: no classes")
    return ids, names


def read_charades_csv(path: str, class_ids: list[str], video_path) -> list[VideoRecord]:
    """Charades v1 CSV (docs/formats.md): ``actions`` = ``cNNN start end`` joined by ';'."""
    index = {c: i for i, c in enumerate(class_ids)}
    _read_lines(path)  # existence / encoding check with a clear message
    videos = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"id", "actions"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}:1: header lacks column(s) {sorted(missing)}")
        try:
            for row in reader:
                where = f"{path}:{reader.line_num}"
                _check_fields(row, reader.fieldnames, where)
                vid = (row.get("id") or "").strip()
                if not vid:
                    raise DataError(f"{where}: malformed line (no id)")
                acts = []
                for a in filter(None, (s.strip() for s in (row["actions"] or "").split(";"))):
                    parts = a.split()
                    if len(parts) != 3:
                        raise DataError(f"{where}: video {vid}: action {a!r} is not 'class start end'")
                    if parts[0] not in index:
                        raise DataError(f"{where}: video {vid}: unknown class {parts[0]!r}")
                    try:
                        s, e = float(parts[1]), float(parts[2])
                    except ValueError:
                        raise DataError(f"{where}: video {vid}: action {a!r} has non-numeric times") from None
                    if not (math.isfinite(s) and math.isfinite(e)) or e < s:
                        raise DataError(f"{where}: video {vid}: action {a!r} ends before it starts")
                    acts.append((index[parts[0]], s, e))
                arr = np.asarray(acts, dtype=np.float64).reshape(-1, 3)
                labels = tuple(sorted({int(c) for c in arr[:, 0]}))
                videos.append(VideoRecord(vid, video_path(vid), labels=labels, actions=arr, source=where))
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: {e}") from e
    if not videos:
        raise DataError(f"{path}: no videos")
    _check_unique(videos, path)
    return videos


def read_something_v2(
    path: str, labels_path: str, video_path, *, labelled: bool | None = None
) -> tuple[list[VideoRecord], list[str]]:
    """Something-Something v2 JSON; the class is the template without brackets (docs/formats.md).

    ``labelled``: True (train / validation) requires a ``template`` in every entry, False (test)
    takes ids only; None accepts both, but not a mix of the two in one file."""
    table = _read_json(labels_path)
    if not isinstance(table, dict) or not table:
        raise DataError(f"{labels_path}: expected a JSON object template -> class index")
    classes: list[str | None] = [None] * len(table)
    for name, value in table.items():
        try:
            i = int(value)
        except (TypeError, ValueError):
            raise DataError(f"{labels_path}: class {name!r} has index {value!r}, not an integer") from None
        if not 0 <= i < len(table) or classes[i] is not None:
            raise DataError(f"{labels_path}: class index {value!r} of {name!r} is out of range or repeated")
        classes[i] = name
    index = {c: i for i, c in enumerate(classes)}
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a JSON list of videos")
    videos, first = [], None
    for n, e in enumerate(entries):
        if not isinstance(e, dict) or "id" not in e:
            raise DataError(f"{path}: entry {n} has no 'id'")
        vid = str(e["id"])
        where = f"{path}: id {vid}"
        label = -1
        if "template" in e:
            if not isinstance(e["template"], str):
                raise DataError(f"{where}: 'template' {e['template']!r} is not a string")
            name = e["template"].replace("[", "").replace("]", "")
            if name not in index:
                raise DataError(f"{where}: unknown class {name!r} (not in {labels_path})")
            label = index[name]
        elif "label" in e:
            raise DataError(f"{where}: entry has a 'label' but no 'template'")
        first = _check_labelled(labelled, label >= 0, first, where, "'template'")
        videos.append(VideoRecord(vid, video_path(vid), label=label, source=where))
    if not videos:
        raise DataError(f"{path}: no videos")
    _check_unique(videos, path)
    return videos, classes


def read_something_v1(
    path: str, labels_path: str, video_path, *, labelled: bool | None = None
) -> tuple[list[VideoRecord], list[str]]:
    """Something-Something v1: classes one per line; ``id;label`` lines (test: ``id`` only).
    ``labelled`` as in :func:`read_something_v2`."""
    classes = [c.strip() for c in _read_lines(labels_path) if c.strip()]
    if len(set(classes)) != len(classes) or not classes:
        raise DataError(f"{labels_path}: class names must be unique and non-empty")
    index = {c: i for i, c in enumerate(classes)}
    videos, first = [], None
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.strip().split(";")
        vid = parts[0].strip()
        if not vid or len(parts) > 2:
            raise DataError(f"{path}:{n}: expected 'id;label', got {line!r}")
        label = -1
        if len(parts) == 2:
            if parts[1] not in index:
                raise DataError(f"{path}:{n}: video {vid}: unknown class {parts[1]!r}")
            label = index[parts[1]]
        first = _check_labelled(labelled, label >= 0, first, f"{path}:{n}", "label")
        videos.append(VideoRecord(vid, video_path(vid), label=label, source=f"{path}:{n}"))
    if not videos:
        raise DataError(f"{path}: no videos")
    _check_unique(videos, path)
    return videos, classes


def _check_labelled(labelled: bool | None, has_label: bool, first: tuple[str, bool] | None, where: str,
                    what: str) -> tuple[str, bool]:
    """Labelled splits need a label on every entry; an unlabelled entry among labelled ones is a
    damaged line, not a test video (it would train as class -1 or silently lose its labels).

    Args:
        labelled: True: every entry needs a label; False or None: labels optional, but with None
            all entries must agree with the first.
        has_label: whether this entry has one.
        first: (source, has_label) of the file's first entry; None for the first entry itself.
    Returns:
        ``first`` for the next call.
    """
    if labelled and not has_label:
        raise DataError(f"{where}: no {what} (this split needs a label on every entry)")
    if first is None:
        return where, has_label
    if labelled is None and has_label != first[1]:
        raise DataError(
            f"{where}: {'has a' if has_label else 'has no'} {what}, unlike the first entry ({first[0]}); "
            "labelled and unlabelled entries cannot be mixed"
        )
    return first


def _float_or_none(value, where: str, key: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {key} {value!r} is not a number of seconds") from None
    if not math.isfinite(x) or x < 0:
        raise DataError(f"{where}: {key} {value!r} must be a non-negative number of seconds")
    return x


def read_manifest(
    path: str, classes: list[str], root: str, multi_label: bool, *, labelled: bool | None = None
) -> list[VideoRecord]:
    """A CSV (header ``path,labels[,id,start,end]``) or JSON Lines manifest (docs/data.md).

    ``labelled`` as in :func:`read_something_v2` (True for training). An entry has a label when
    its ``labels`` is not empty; with ``multi_label`` an explicitly empty one (``""``, ``[]``:
    no action in the video) counts as given, a missing key or field does not."""
    index = {c: i for i, c in enumerate(classes)}
    rows: list[tuple[str, dict]] = []
    if path.endswith((".jsonl", ".json")):
        for n, line in enumerate(_read_lines(path), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object per line")
            rows.append((f"{path}:{n}", obj))
    else:
        _read_lines(path)
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or ()):
                raise DataError(f"{path}:1: header needs a 'path' column (and 'labels' for labelled data)")
            try:
                for row in reader:
                    _check_fields(row, reader.fieldnames, f"{path}:{reader.line_num}")
                    rows.append((f"{path}:{reader.line_num}", row))
            except csv.Error as e:
                raise DataError(f"{path}:{reader.line_num}: {e}") from e
    videos, first = [], None
    for where, row in rows:
        rel = row.get("path")
        if not rel or not isinstance(rel, str):
            raise DataError(f"{where}: no 'path'")
        full = rel if os.path.isabs(rel) else os.path.join(root, rel)
        raw = row.get("labels", row.get("label"))
        names = raw if isinstance(raw, list) else [s.strip() for s in str(raw or "").split(";") if s.strip()]
        unknown = [s for s in names if s not in index]
        if unknown:
            raise DataError(f"{where}: unknown class {unknown[0]!r}")
        ids = sorted({index[s] for s in names})
        if not multi_label and len(ids) > 1:
            raise DataError(f"{where}: several labels {names} but multi_label is off")
        first = _check_labelled(labelled, bool(ids) or (multi_label and raw is not None), first, where, "labels")
        vid = str(row.get("id") or os.path.splitext(os.path.basename(rel.rstrip("/")))[0])
        start = _float_or_none(row.get("start"), where, "start")
        end = _float_or_none(row.get("end"), where, "end")
        if start is not None and end is not None and end <= start:
            raise DataError(f"{where}: end {end} is not after start {start}")
        videos.append(
            VideoRecord(vid, full, label=ids[0] if (ids and not multi_label) else -1, labels=tuple(ids),
                        start=start, end=end, source=where)
        )  # fmt: skip
    if not videos:
        raise DataError(f"{path}: no videos")
    _check_unique(videos, path)  # ids name the rows of the predictions file
    return videos


def read_flip_map(path: str, classes: list[str]) -> torch.Tensor:
    """JSON ``{"class": "mirrored class", ...}`` -> Tensor[C] index map (made symmetric)."""
    table = _read_json(path)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected a JSON object class -> mirrored class")
    index = {c: i for i, c in enumerate(classes)}
    perm = torch.arange(len(classes))
    for a, b in table.items():
        for name in (a, b):
            if name not in index:
                raise ConfigError(f"{path}: unknown class {name!r}")
        ia, ib = index[a], index[b]
        for x, y in ((ia, ib), (ib, ia)):
            if perm[x] != x and perm[x] != y:
                raise ConfigError(f"{path}: class {classes[x]!r} is mapped to two different classes")
            perm[x] = y
    return perm


# ------------------------------------------------------------------------------------------------
# builders: ``fn(options, *, split, training)``, the options declared in strg/data/options.py


def _split_name(split: str, names: dict[str, str], kind: str) -> str:
    if split not in names:
        raise ConfigError(f"{kind}: unknown split {split!r} (expected one of {', '.join(names)})")
    return names[split]


def _clip_dataset(kind: str, videos, classes, o: ClipOptions, *, multi_label: bool, training: bool,
                  needs_flip_map: bool, frames_fps: float = 24.0) -> ClipDataset:
    """The :class:`ClipDataset` of ``videos`` with the options every video kind shares."""
    transform = ClipTransform(
        training=training, train_short_side=o.train_short_side, crop_size=o.crop_size,
        test_short_side=o.test_short_side, test_views=o.test_views, flip=o.flip,
        mean=IMAGENET_MEAN if o.mean is None else o.mean, std=IMAGENET_STD if o.std is None else o.std,
    )
    flip_map = None
    if o.flip_label_map:
        flip_map = read_flip_map(o.flip_label_map, classes)
    elif o.flip and needs_flip_map and training:
        raise ConfigError(
            f"{kind}: horizontal flip turns 'left' into 'right' here; set flip_label_map (a JSON class -> "
            "mirrored class map) or leave flip off"
        )
    return ClipDataset(
        videos, classes, multi_label=multi_label, training=training, transform=transform, flip_map=flip_map,
        num_frames=o.num_frames, stride=o.stride, stride_unit=o.stride_unit, test_clips=o.test_clips,
        proposals=o.proposals, max_boxes=o.max_boxes, proposal_tolerance=o.proposal_tolerance, on_error=o.on_error,
        decode_backend=o.decode_backend, decode_threads=o.decode_threads, frames_fps=frames_fps,
    )


def charades(o: CharadesOptions, *, split: str, training: bool) -> ClipDataset:
    """Charades v1 (multi-label, 157 classes). Splits: "train" (Charades_v1_train.csv) and
    "val"/"test" (Charades_v1_test.csv, the set the paper reports)."""
    csv_name = _split_name(split, {"train": "train", "val": "test", "test": "test"}, "charades")
    if o.source not in ("video", "frames"):
        raise ConfigError(f"charades: source must be 'video' or 'frames', not {o.source!r}")
    ids, names = read_charades_classes(_resolve(o.root, o.classes_file, "Charades_v1_classes.txt"))
    vdir = _resolve(o.root, o.video_dir, "Charades_v1" if o.source == "video" else "Charades_v1_rgb")
    ext = o.video_ext if o.source == "video" else ""  # frames: the folder <id>/
    videos = read_charades_csv(
        _resolve(o.root, o.annotation_file, f"Charades_v1_{csv_name}.csv"), ids, lambda v: os.path.join(vdir, v + ext)
    )
    return _clip_dataset("charades", videos, names, o, multi_label=True, training=training, needs_flip_map=False,
                         frames_fps=o.frames_fps)


_SOMETHING_SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def something_v2(o: SomethingV2Options, *, split: str, training: bool) -> ClipDataset:
    """Something-Something v2 (174 classes, webm at 12 fps). Splits "train", "val"/"validation",
    "test" (ids only: targets -1). Files default to ``root/labels/something-something-v2-*.json``
    and ``root/20bn-something-something-v2/<id>.webm``."""
    name = _split_name(split, _SOMETHING_SPLITS, "something_v2")
    labels_dir = "labels" if os.path.isdir(os.path.join(o.root, "labels")) else ""
    vdir = _resolve(o.root, o.video_dir, "20bn-something-something-v2")
    videos, classes = read_something_v2(
        _resolve(o.root, o.annotation_file, os.path.join(labels_dir, f"something-something-v2-{name}.json")),
        _resolve(o.root, o.labels_file, os.path.join(labels_dir, "something-something-v2-labels.json")),
        lambda v: os.path.join(vdir, v + o.video_ext),
        labelled=name != "test",
    )
    return _clip_dataset("something_v2", videos, classes, o, multi_label=False, training=training, needs_flip_map=True)


def something_v1(o: SomethingV1Options, *, split: str, training: bool) -> ClipDataset:
    """Something-Something v1 (174 classes, JPEG frames ``%05d.jpg`` from 1, 12 fps). Files default
    to ``root/something-something-v1-{train,validation,test}.csv``, ``...-labels.csv`` and
    ``root/20bn-something-something-v1/<id>/``."""
    name = _split_name(split, _SOMETHING_SPLITS, "something_v1")
    vdir = _resolve(o.root, o.video_dir, "20bn-something-something-v1")
    videos, classes = read_something_v1(
        _resolve(o.root, o.annotation_file, f"something-something-v1-{name}.csv"),
        _resolve(o.root, o.labels_file, "something-something-v1-labels.csv"),
        lambda v: os.path.join(vdir, v),
        labelled=name != "test",
    )
    return _clip_dataset("something_v1", videos, classes, o, multi_label=False, training=training, needs_flip_map=True,
                         frames_fps=o.frames_fps)


def manifest(o: ManifestOptions, *, split: str, training: bool) -> ClipDataset:
    """Your own videos (docs/data.md): ``manifest`` is a .csv or .jsonl path, where ``{split}`` is
    replaced by the split name; ``classes_file`` has one class name per line; relative video paths
    are resolved against ``root`` (default: the manifest's folder)."""
    if not o.manifest or not o.classes_file:
        raise ConfigError("manifest: set both 'manifest' (a .csv/.jsonl file) and 'classes_file'")
    path = o.manifest.replace("{split}", split)
    classes = [c.strip() for c in _read_lines(o.classes_file) if c.strip()]
    if not classes or len(set(classes)) != len(classes):
        raise DataError(f"{o.classes_file}: class names must be unique and there must be at least one")
    base = o.root if o.root is not None else os.path.dirname(os.path.abspath(path))
    videos = read_manifest(path, classes, base, o.multi_label, labelled=True if training else None)
    return _clip_dataset("manifest", videos, classes, o, multi_label=o.multi_label, training=training,
                         needs_flip_map=False, frames_fps=o.frames_fps)
