"""Frames of many clips of one video, decoded in one forward pass, memory flat in the video's length.

``strg predict`` slides clips over videos of any length. Decoding every clip on its own would
decode the frames that overlapping clips share again and again (and seek for each one); holding
the whole video would use memory in proportion to its length. :class:`WindowStream` does
neither: the clips ("windows": frame indices, non-decreasing, e.g.
:func:`strg.data.sampling.clip_indices`) are visited in the order of their first frame; each
frame is decoded once, when the first window that needs it comes up, through the same
:class:`~strg.data.decode.FrameSource` the datasets use (PyAV decodes forward and seeks only to
skip a stretch behind a later keyframe), and it is dropped as soon as no later window starts at
or before it. So at any time it holds the frames of the windows in flight: the wanted frames
from the current window's first to the furthest last frame seen so far, at most the frames one
window spans when the windows all span the same number of frames, whatever the video's length
(``max_held`` records it; tested).

The frames returned for a window are exactly those ``src.get_frames(window)`` returns, the call
the datasets make for a clip, so predictions on a stream equal the evaluation's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from strg.data.decode import FrameSource

__all__ = ["WindowStream"]


class WindowStream:
    """Yield the frames of each window of one video, decoding every frame once.

    Args:
        src: an open frame source (:func:`strg.data.decode.open_video`).
        windows: frame indices of each window (int arrays, each non-decreasing, repeats allowed:
            a video shorter than a clip repeats its last frame).

    Iterating yields ``(w, frames)``, ``w`` the window's position in ``windows`` and ``frames``
    (uint8 Tensor[T_w, H, W, 3]), windows in the order of their first index (ties: given order).

    Attributes:
        decoded (int): frames decoded so far (each at most once).
        max_held (int): the most frames held at any time (the memory bound; see the module doc).
    """

    def __init__(self, src: FrameSource, windows: Sequence[np.ndarray]) -> None:
        self.src = src
        self.windows = [np.asarray(w, dtype=np.int64).reshape(-1) for w in windows]
        for i, w in enumerate(self.windows):
            if w.size == 0 or (np.diff(w) < 0).any():
                raise ValueError(f"window {i} must be a non-empty non-decreasing index array")
        self.decoded = 0
        self.max_held = 0

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        order = sorted(range(len(self.windows)), key=lambda i: int(self.windows[i][0]))
        wanted = np.unique(np.concatenate(self.windows))  # every frame any window uses, increasing
        held: dict[int, torch.Tensor] = {}  # frame index -> Tensor[H, W, 3]
        done = 0  # wanted[:done] are decoded
        for n, i in enumerate(order):
            w = self.windows[i]
            upto = int(np.searchsorted(wanted, w[-1], side="right"))
            if upto > done:  # the frames up to this window's end, later windows' ones in between too
                todo = wanted[done:upto]
                # one forward decode; each frame its own copy, so that dropping it frees it
                held.update(zip(todo.tolist(), (f.clone() for f in self.src.get_frames(todo).unbind(0))))
                self.decoded += int(todo.size)
                done = upto
            self.max_held = max(self.max_held, len(held))
            yield i, torch.stack([held[int(j)] for j in w])
            nxt = int(self.windows[order[n + 1]][0]) if n + 1 < len(order) else int(wanted[-1]) + 1
            for j in [j for j in held if j < nxt]:  # no later window starts before nxt
                del held[j]
