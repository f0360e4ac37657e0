"""The ``random`` dataset kind: synthetic clips generated on the fly.

``data.kind: random`` is a synthetic, in-memory dataset that needs no files: every item is a clip
whose colour encodes its class, with a few random boxes. It lets ``strg train configs/tiny_cpu.yaml``
run anywhere in seconds (tests, CI, first steps) and loss visibly fall. It is not the relational
generator of ``strg synth``.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from strg.data.datasets import VideoRecord
from strg.data.options import RandomOptions
from strg.errors import ConfigError


class RandomClips(Dataset):
    """Synthetic clips; item dicts as in docs/DESIGN.md ("The batch").

    Item ``i`` (``video = i // num_clips``, ``clip = i % num_clips``) is a deterministic function
    of (seed, video, clip), so runs are reproducible without touching the global RNG. The class of
    a video shifts the mean of each colour channel, so a small model can learn it.
    """

    def __init__(
        self,
        *,
        num_videos: int,
        num_classes: int,
        frames: int,
        size: int,
        boxes_per_frame: int,
        multi_label: bool,
        num_clips: int,
        seed: int,
        palette_seed: int | None = None,
    ):
        self.videos = [VideoRecord(f"video{v:05d}", path="") for v in range(num_videos)]
        self.classes = [f"class {c}" for c in range(num_classes)]
        self.multi_label = multi_label
        self.frames, self.size, self.k = frames, size, boxes_per_frame
        self.max_boxes = boxes_per_frame
        self.num_clips, self.seed = num_clips, seed
        # the class colours: one palette for all splits of a seed, so that what is learnt on train holds on val
        g = torch.Generator().manual_seed(seed if palette_seed is None else palette_seed)
        self.palette = torch.randn(num_classes, 3, generator=g)  # (C, 3) class colours

    def __len__(self) -> int:
        return len(self.videos) * self.num_clips

    def labels(self, video: int) -> list[int]:
        c = len(self.classes)
        first = (video * 7 + self.seed) % c
        return [first, (first + 1 + video // c) % c] if self.multi_label else [first]

    def __getitem__(self, index: int) -> dict:
        video, clip_index = divmod(index, self.num_clips)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        labels = self.labels(video)
        colour = self.palette[labels].mean(0)  # (3,)
        t, s, k = self.frames, self.size, self.k
        clip = 0.5 * torch.randn(3, t, s, s, generator=g) + colour[:, None, None, None]  # (3, T, S, S)
        xy = torch.rand(t, k, 2, generator=g) * (s / 2)  # (T, k, 2) top-left corners
        wh = torch.rand(t, k, 2, generator=g) * (s / 2) + 2.0
        boxes = torch.cat([xy, (xy + wh).clamp(max=s - 1)], dim=-1)  # (T, k, 4) x1 y1 x2 y2
        box_mask = torch.ones(t, k, dtype=torch.bool)
        if self.multi_label:
            target = torch.zeros(len(self.classes))
            target[labels] = 1.0
        else:
            target = torch.tensor(labels[0], dtype=torch.int64)
        return {
            "clip": clip,
            "boxes": boxes,
            "box_mask": box_mask,
            "target": target,
            "video_id": self.videos[video].video_id,
            "video_index": video,
            "clip_index": clip_index,
        }


def random_clips(o: RandomOptions, *, split: str, training: bool) -> RandomClips:
    """The ``random`` dataset kind (see the module docstring). ``split`` changes the seed of the
    clips and labels, so train and val differ, not the class colours; ``test_clips`` clips per
    video when ``training`` is False."""
    for key in ("num_videos", "num_classes", "frames", "size", "test_clips"):
        if getattr(o, key) < 1:
            raise ConfigError(f"data.{key} must be >= 1 for the random kind, got {getattr(o, key)}")
    if o.boxes_per_frame < 0:
        raise ConfigError(f"data.boxes_per_frame must be >= 0, got {o.boxes_per_frame}")
    split_seed = {"train": 0, "val": 1, "test": 2}.get(split, 3)
    return RandomClips(
        num_videos=o.num_videos,
        num_classes=o.num_classes,
        frames=o.frames,
        size=o.size,
        boxes_per_frame=o.boxes_per_frame,
        multi_label=o.multi_label,
        num_clips=1 if training else o.test_clips,
        seed=o.seed * 10 + split_seed,
        palette_seed=o.seed,
    )
