"""Tiny media files for tests, demos and benchmarks: videos encoded with PyAV, frame folders.

Frames carry their own index so that a test can check which frame it got back:
:func:`index_frames` paints frame ``i`` with the grey level ``level(i)``.
"""

from __future__ import annotations

import os

import numpy as np


def level(i: np.ndarray | int, step: int = 8) -> np.ndarray:
    """Grey level of frame ``i`` in :func:`index_frames` (distinct for up to 256 / step frames)."""
    return (np.asarray(i) * step) % 256


def index_frames(n: int, height: int = 48, width: int = 64, step: int = 8) -> np.ndarray:
    """uint8[n, H, W, 3] frames, frame i uniformly grey at ``level(i, step)``."""
    lv = level(np.arange(n), step).astype(np.uint8)
    return np.broadcast_to(lv[:, None, None, None], (n, height, width, 3)).copy()


def write_video(path: str | os.PathLike, frames: np.ndarray, *, fps: float = 24, codec: str | None = None,
                gop: int = 12) -> str:
    """Encode uint8[N, H, W, 3] RGB frames to ``path`` (H.264 for .mp4, VP9 for .webm by default).

    H and W must be even (yuv420p). ``gop`` is the keyframe interval, small so that seeks matter.
    """
    import av
    from fractions import Fraction

    path = os.fspath(path)
    if codec is None:
        codec = "libvpx-vp9" if path.endswith(".webm") else "libx264"
    n, h, w, _ = frames.shape
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = gop
        for a in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder: str | os.PathLike, frames: np.ndarray, *, pattern: str = "{:05d}.jpg",
                       first: int = 1, quality: int = 95) -> str:
    """Write frames as ``folder/pattern.format(first + i)`` (Charades: ``"<id>-{:06d}.jpg"``)."""
    from PIL import Image

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    for i, a in enumerate(frames):
        Image.fromarray(a).save(os.path.join(folder, pattern.format(first + i)), quality=quality)
    return folder
