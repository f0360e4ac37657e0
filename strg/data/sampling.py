"""Which frames a clip takes: one random clip in training, N uniformly spaced clips in testing.

A clip is ``T`` frames ``stride`` frames apart (paper section 6.1: 32 frames at about 6 fps, every
4th frame of a 24 fps video). The stride may be given in seconds, so that videos of other frame
rates cover the same time span: ``stride_frames = stride_seconds * fps`` (fractional strides are
rounded per frame, not accumulated). A video shorter than the clip repeats its last frame.
"""

from __future__ import annotations

import numpy as np

__all__ = ["clip_indices", "clip_span", "stride_in_frames", "uniform_clip_starts", "random_clip_start"]


def stride_in_frames(stride: float, unit: str, fps: float) -> float:
    """Stride in frames of a video at ``fps`` from a stride in ``unit`` ("frames" or "seconds")."""
    if unit == "frames":
        return float(stride)
    if unit == "seconds":
        return float(stride) * float(fps)
    raise ValueError(f"stride unit must be 'frames' or 'seconds', not {unit!r}")


def clip_span(num_frames: int, stride: float) -> int:
    """Frames covered by a clip of ``num_frames`` frames at ``stride`` (first to last, inclusive)."""
    return int(round((num_frames - 1) * stride)) + 1


def clip_indices(start: int, num_frames: int, stride: float, first: int, last: int) -> np.ndarray:
    """Frame indices of a clip.

    Args:
        start: offset of the clip's first frame from ``first``.
        num_frames: T.
        stride: frames between clip frames (may be fractional).
        first, last: the usable frames ``[first, last]`` (a segment of the video, inclusive).

    Returns:
        int64[T]; indices past ``last`` repeat ``last`` (short videos repeat their last frame).
    """
    idx = first + start + np.round(np.arange(num_frames) * stride).astype(np.int64)
    return np.minimum(idx, last)


def random_clip_start(length: int, span: int, rng: np.random.Generator) -> int:
    """A uniformly random start offset of a clip covering ``span`` frames of ``length``."""
    return int(rng.integers(0, max(length - span, 0) + 1))


def uniform_clip_starts(length: int, span: int, num_clips: int) -> np.ndarray:
    """Start offsets of ``num_clips`` uniformly spaced clips: clip ``i`` is centred on
    ``(i + 0.5) / num_clips`` of the room the clip can move in (one clip: the middle)."""
    room = max(length - span, 0)
    return np.round(room * (np.arange(num_clips) + 0.5) / num_clips).astype(np.int64)
