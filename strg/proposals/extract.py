"""Run a proposal model over videos into a proposals store (the `strg proposals extract` loop).

Decoding runs in DataLoader workers: each worker opens its share of the videos, picks the frames
at the extraction rate and yields them in chunks of ``batch_size`` frames; the main process runs
the detector on each chunk (on the GPU when there is one) and, when a video's last chunk is in,
writes the video to the store in one transaction. So an interrupted run loses at most the
videos in progress, and a rerun skips every video already in the store.

A video that cannot be decoded is reported, skipped and listed in the result; the others are
written.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from strg.errors import DataError
from strg.progress import progress_bar

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class VideoEntry:
    """One video to process: its id in the store and a file or frame folder."""

    video_id: str
    path: Path


@dataclass
class ExtractResult:
    """What a run did. ``failed`` maps video id -> the reason it was skipped."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the store (resume)
    failed: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def frame_indices_at_rate(num_frames: int, fps: float, rate: float) -> np.ndarray:
    """Indices of the frames shown at times 0, 1/rate, 2/rate, ... (every frame if rate >= fps).

    Args:
        num_frames: frames in the video.
        fps: the video's frame rate.
        rate: extraction rate in frames per second.

    Returns:
        int64 array[F], increasing, unique, all < num_frames; frame ``floor(j * fps / rate)``.
    """
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    step = fps / rate
    if step <= 1.0:
        return np.arange(num_frames, dtype=np.int64)
    count = math.ceil(num_frames / step - 1e-9)
    indices = np.floor(np.arange(count) * step + 1e-6).astype(np.int64)
    return np.unique(indices[indices < num_frames])


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())


def find_videos(paths: Sequence[str | Path]) -> list[VideoEntry]:
    """Videos given on the command line: files, frame folders, or folders holding either.

    A video file's id is its name without the extension; a frame folder's id is its name.
    A folder is a frame folder itself if it directly holds images; otherwise its video files
    and frame sub-folders are taken (one level, sorted by name).
    """
    entries: list[VideoEntry] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            entries.append(VideoEntry(path.stem, path))
        elif _is_frame_folder(path):
            entries.append(VideoEntry(path.name, path))
        elif path.is_dir():
            found = [
                VideoEntry(p.stem if p.is_file() else p.name, p)
                for p in sorted(path.iterdir())
                if (p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS) or _is_frame_folder(p)
            ]
            if not found:
                raise DataError(f"{path}: no video files ({', '.join(VIDEO_EXTENSIONS)}) or frame folders in it")
            entries.extend(found)
        else:
            raise DataError(f"{path}: no such video file or folder")
    return check_unique_ids(entries)


def check_unique_ids(entries: list[VideoEntry]) -> list[VideoEntry]:
    """``entries``, unless two share a video id (a DataError naming both paths)."""
    seen: dict[str, Path] = {}
    for e in entries:
        if e.video_id in seen:
            raise DataError(f"video id {e.video_id!r} is given twice: {seen[e.video_id]} and {e.path}")
        seen[e.video_id] = e.path
    return entries


class FrameChunks(IterableDataset):
    """Yields the frames of each video at ``rate`` fps, ``chunk_size`` frames at a time.

    Items are dicts. A chunk: ``video_id``, ``chunk`` (0-based), ``num_chunks``, ``indices``
    (int64 array[n]), ``frames`` (uint8 Tensor[n, H, W, 3]), ``fps`` (the video's own frame
    rate: the time base of ``indices``, as the store expects). A failure: ``video_id`` and
    ``error`` (a message); earlier chunks of that video must be dropped. With several DataLoader
    workers, worker i takes videos i, i + W, i + 2W, ...
    """

    def __init__(self, videos: Sequence[VideoEntry], *, rate: float, chunk_size: int,
                 source_fps: float | None = None, opener: Callable | None = None) -> None:
        super().__init__()
        self.videos = list(videos)
        self.rate = float(rate)
        self.chunk_size = int(chunk_size)
        self.source_fps = source_fps
        self.opener = opener

    def _open(self, path: Path):
        if self.opener is not None:
            return self.opener(path)
        from strg.data.decode import open_video

        return open_video(path, fps=self.source_fps)  # fps: used for frame folders only

    def _chunks(self, video: VideoEntry) -> Iterator[dict]:
        with self._open(video.path) as src:
            fps = float(src.fps)
            indices = frame_indices_at_rate(src.num_frames, fps, self.rate)
            if len(indices) == 0:
                raise DataError(f"{video.path}: no frames")
            parts = np.array_split(indices, math.ceil(len(indices) / self.chunk_size))
            for c, part in enumerate(parts):
                frames = src.get_frames(part.tolist())
                yield {"video_id": video.video_id, "chunk": c, "num_chunks": len(parts), "indices": part,
                       "frames": frames, "fps": fps}

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        mine = self.videos if info is None else self.videos[info.id :: info.num_workers]
        for video in mine:
            try:
                yield from self._chunks(video)
            except Exception as e:  # a corrupt video must not end the run: report it, go on
                yield {"video_id": video.video_id, "error": f"{type(e).__name__}: {e}"}


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding only; the detector runs in the main process


def _concat(chunks: list[dict]) -> dict:
    chunks = sorted(chunks, key=lambda c: c["chunk"])
    return {
        "frames": np.concatenate([c["indices"] for c in chunks]).astype(np.int64),
        "boxes": np.concatenate([c["boxes"] for c in chunks]),
        "scores": np.concatenate([c["scores"] for c in chunks]),
        "num_boxes": np.concatenate([c["num_boxes"] for c in chunks]).astype(np.int64),
        "frame_size": chunks[0]["frame_size"],
        "fps": chunks[0]["fps"],
    }


def _write_video(store, vid: str, chunks: list[dict], result: ExtractResult, bar) -> None:
    """Store one video's proposals in one transaction; invalid boxes from the proposer make it a
    failed video, of which nothing is written."""
    try:
        store.put(vid, **_concat(chunks))
    except DataError as e:
        result.failed[vid] = f"{type(e).__name__}: {e}"
        bar.write(f"skipping {vid}: {e}", file=sys.stderr)
    else:
        result.written.append(vid)
    bar.update(1)


def extract_proposals(
    videos: Sequence[VideoEntry],
    store_path: str | Path,
    proposer: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]],
    *,
    rate: float = 6.0,
    batch_size: int = 16,
    num_workers: int = 4,
    device: str | torch.device | None = None,
    amp: bool = False,
    source_fps: float | None = None,
    progress: bool = True,
    opener: Callable | None = None,
) -> ExtractResult:
    """Write the proposals of every video not yet in the store at ``store_path``.

    Args:
        videos: what to process; ids already in the store are skipped (resume).
        store_path: the proposals store (created if missing).
        proposer: frames (uint8 Tensor[N, H, W, 3]) -> boxes (Tensor[N, K, 4], original pixels),
            scores (Tensor[N, K]), num_boxes (Tensor[N]); e.g. :func:`build_rpn_proposer`.
        rate: extraction rate in frames per second (a video slower than this gives every frame).
        batch_size: frames per detector call.
        num_workers: DataLoader decoding workers (0: decode in this process).
        device: where the detector runs; default CUDA when available, else CPU.
        amp: run the detector under float16 autocast (CUDA only).
        source_fps: frame rate of frame folders (default: open_video's, 24 fps as Charades).
        opener: ``path -> video source`` (default :func:`strg.data.decode.open_video`).
    """
    from strg.data.proposals import ProposalStore

    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(proposer, torch.nn.Module):
        proposer = proposer.to(device)
    result = ExtractResult()
    start = time.perf_counter()
    with ProposalStore(store_path, mode="a") as store:
        done = set(store.keys())
        todo = [v for v in videos if v.video_id not in done]
        result.skipped = [v.video_id for v in videos if v.video_id in done]
        loader = DataLoader(
            FrameChunks(todo, rate=rate, chunk_size=batch_size, source_fps=source_fps, opener=opener),
            batch_size=None,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            worker_init_fn=_worker_init if num_workers > 0 else None,
        )
        use_amp = amp and device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
        pending: dict[str, list[dict]] = {}
        bar = progress_bar(total=len(todo), unit="video", desc="proposals", disable=not progress, dynamic_ncols=True)
        with bar:
            for item in loader:
                vid = item["video_id"]
                if "error" in item:
                    pending.pop(vid, None)
                    result.failed[vid] = item["error"]
                    bar.write(f"skipping {vid}: {item['error']}", file=sys.stderr)
                    bar.update(1)
                    continue
                frames = item["frames"].to(device, non_blocking=True)
                item["indices"] = np.asarray(item["indices"], dtype=np.int64)  # the loader made it a tensor
                with autocast:
                    boxes, scores, num_boxes = proposer(frames)
                item.update(boxes=boxes.float().cpu().numpy(), scores=scores.float().cpu().numpy(),
                            num_boxes=num_boxes.cpu().numpy(), frame_size=tuple(frames.shape[1:3]))
                del item["frames"]
                result.frames += len(frames)
                chunks = pending.setdefault(vid, [])
                chunks.append(item)
                if len(chunks) == item["num_chunks"]:
                    _write_video(store, vid, pending.pop(vid), result, bar)
                bar.set_postfix(frames_per_s=f"{result.frames / (time.perf_counter() - start):.1f}", refresh=False)
    result.seconds = time.perf_counter() - start
    return result
