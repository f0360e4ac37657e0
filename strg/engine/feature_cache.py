"""The frozen backbone's output for every training clip, computed once (``train.cache_features``).

In stage ``graph`` the I3D is frozen (paper section 6.1, "we fix the I3D features"), so its output
for a given input never changes: computing it once and training the head on it saves the
backbone's forward pass at every iteration (on the demo's data a graph head trains 6.6-8.1x
faster per iteration: 16-21 ms instead of 127-137, docs/demo.md).

**Augmentation on the cached map.** With strg's video datasets (a :class:`ClipTransform`), the
cache holds the backbone's output for the *whole* training frame resized to the training short
side S (``data.train_short_side: [S, S]``, one scale), not for one random crop, plus the output
for the mirrored frame when ``data.flip`` is on (two views per clip). Every time a clip is drawn,
the training crop and flip are taken on the cached map and its boxes (:class:`AugmentedFeatures`):
a view (mirrored or not) at random, then a ``crop_size`` square whose position is drawn uniformly
among the positions on the backbone's stride grid (offsets 0, s, 2s, ... pixels with the crop
inside the frame, s = ``backbone.spatial_stride``), cut from the map as the crop_size / s cells
there; the boxes are shifted by the offset, clipped to the crop and masked when less than
``min_box_size`` pixels are left, as :class:`ClipTransform` does. So any aspect ratio works (a
4:3 frame is no longer refused) and the head sees as many views as without the cache.

What this equals (the documented equivalence): for a backbone whose output is shifted by one
cell when its input is shifted by s pixels (true of convolutions and poolings of total stride s
away from the borders), the cropped map equals the backbone's output on the crop, and the
mirrored view is exactly the backbone on the mirrored frame. For the I3D the cells at the crop's
border differ: their receptive field sees the frame around the crop, where the backbone run on
the crop sees its zero padding (the cached training sees each crop with its context, like
fully-convolutional testing, section 6.1). The crop positions are the stride grid's (e.g. 2
horizontal positions instead of 22 for a 64-px crop of an 85 x 64 frame); the scale is fixed;
the resize of the whole frame followed by the crop equals the transform's resized crop up to
rounding the crop region to whole pixels. With one position and no flip (square frames of side
S = crop_size, the demo) the cache is the training clips' output itself, and training is the
same as without the cache (tested).

Other datasets (no ClipTransform) are cached as they read, and must give the same clip at every
read (checked on four items spread over the dataset; a check, not a proof).

Only for small data: the cache holds C x T' x H' x W' numbers per clip and view in memory (the
demo: 2,400 clips x 256 x 8 x 4 x 4, 300 MiB; the paper's configuration would need 25 MB per
clip), one process (no DDP), and the clip's frames must be the same at every read: videos no
longer than the clip (no temporal jitter). ``train.cache_dir`` also saves the cache there and
reuses it when the backbone's weights, the data settings and the dataset are the same (the
demo's graph runs share one).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from strg.data.transforms import ClipTransform, TransformResult
from strg.engine.evaluator import autocast_context
from strg.errors import ConfigError
from strg.progress import progress_bar

__all__ = [
    "AugmentedFeatures",
    "CachedFeatures",
    "build_feature_cache",
    "check_repeatable",
    "collate_features",
    "full_frame_views",
]


class CachedFeatures(Dataset):
    """Items ``{"features", "boxes", "box_mask", "target"}`` from tensors in memory.

    Args:
        features (Tensor[N, C, T', H', W']): the backbone's output per clip.
        boxes (Tensor[N, T, K, 4]), box_mask (Tensor[N, T, K]): padded as the collate function did.
        targets (Tensor[N] or Tensor[N, num_classes]).
        classes: the class names of the dataset the clips came from.
    """

    def __init__(self, features, boxes, box_mask, targets, classes):
        self.features, self.boxes, self.box_mask, self.targets = features, boxes, box_mask, targets
        self.classes = classes

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i], "boxes": self.boxes[i], "box_mask": self.box_mask[i],
                "target": self.targets[i]}


def collate_features(items: list[dict]) -> dict:
    """Stack :class:`CachedFeatures` items into the engine's batch (``features`` instead of ``clips``)."""
    return {
        "features": torch.stack([it["features"] for it in items]),  # (B, C, T', H', W')
        "boxes": torch.stack([it["boxes"] for it in items]),  # (B, T, K, 4)
        "box_mask": torch.stack([it["box_mask"] for it in items]),  # (B, T, K)
        "targets": torch.stack([it["target"] for it in items]),
        "num_skipped": 0,
    }


def check_repeatable(dataset, source: str, *, probes: int = 4, full_frame: bool = False) -> None:
    """Raise ConfigError unless ``probes`` items spread over the dataset (the first, the last and
    some between) each give the same clip and boxes twice. A check, not a proof: a dataset that
    jitters only some of its videos can slip through (docs/engine.md). ``full_frame``: the
    dataset is a :func:`full_frame_views` view (crop and flip are already taken care of)."""
    n = len(dataset)
    for i in sorted({round(k * (n - 1) / max(1, probes - 1)) for k in range(probes)}):
        a, b = dataset[i], dataset[i]
        if a is None or b is None:
            raise ConfigError(f"{source}: train.cache_features: training item {i} could not be read; "
                              "fix or remove that video first")
        if not (torch.equal(a["clip"], b["clip"]) and torch.equal(a["boxes"], b["boxes"])):
            if full_frame:  # crop and flip are taken on the cached map: what is left is the clip's time
                hint = ("the frames of its clip are drawn at random times (a video longer than data.num_frames x "
                        "data.stride); the cache keeps one clip per video, so use videos (or segments) no longer "
                        "than the clip")
            else:  # a dataset of its own: only it knows what it randomises
                hint = "this dataset randomises its training items; make them the same at every read"
            raise ConfigError(
                f"{source}: train.cache_features needs training clips that are the same every time, but training "
                f"item {i} came out different in two reads: {hint}, or set train.cache_features=false"
            )


class _FullFrame:
    """The training transform's frames without its random crop: the whole frame resized to short
    side S (the test path of :class:`ClipTransform`, full frame), mirrored first when ``mirror``."""

    def __init__(self, transform: ClipTransform, short_side: int, mirror: bool):
        self.full = copy.copy(transform)
        self.full.training, self.full.test_short_side, self.full.test_views = False, int(short_side), 1
        self.mirror = mirror
        self.test_views = 1

    def __call__(self, frames, boxes, box_mask, *, view: int = 0, generator=None) -> TransformResult:
        if self.mirror:  # frames (T, H, W, 3); boxes x1 y1 x2 y2 -> W - x2, y1, W - x1, y2
            w = frames.shape[2]
            frames = frames.flip(2)
            boxes = torch.stack([w - boxes[..., 2], boxes[..., 1], w - boxes[..., 0], boxes[..., 3]], dim=-1)
        out = self.full(frames, boxes, box_mask)
        out.flipped = self.mirror
        return out


def full_frame_views(dataset, *, stride: int, source: str) -> list | None:
    """The views the cache runs the backbone on: shallow copies of ``dataset`` whose transform
    gives the whole frame at the training scale, unmirrored and (with ``flip``) mirrored.

    None when the dataset has no :class:`ClipTransform` (then it is cached as it reads).
    ConfigError for settings that the cached map cannot reproduce: a random scale, a crop size
    that is not a multiple of the backbone's stride.
    """
    transform = getattr(dataset, "transform", None)
    if not isinstance(transform, ClipTransform) or not getattr(dataset, "training", False):
        return None
    lo, hi = transform.train_short_side
    if lo != hi:
        raise ConfigError(
            f"{source}: train.cache_features takes the crop and flip on the cached map but cannot rescale it: "
            f"set one training scale, data.train_short_side=[S, S] (it is [{lo}, {hi}]), "
            "or set train.cache_features=false"
        )
    if transform.crop_size % stride:
        raise ConfigError(
            f"{source}: train.cache_features cuts the crop from the cached map in whole cells: data.crop_size "
            f"{transform.crop_size} must be a multiple of the backbone's stride {stride} "
            "(or set train.cache_features=false)"
        )
    views = []
    for mirror in ((False, True) if transform.flip else (False,)):
        view = copy.copy(dataset)
        view.transform = _FullFrame(transform, lo, mirror)
        views.append(view)
    return views


class AugmentedFeatures(Dataset):
    """Random crops and flips of cached full-frame maps (module docstring).

    Args:
        features: per clip, Tensor[V, C, T', H', W'] (V views: the frame, and its mirror with flip).
        boxes: per clip, Tensor[V, T, K, 4] in pixels of the resized full frame; box_mask Tensor[V, T, K].
        targets: per clip, Tensor[V] or Tensor[V, num_classes] (a mirrored view's label may differ).
        frame_sizes (Tensor[N, 2]): (H, W) of each resized full frame in pixels.
        crop_size, stride: the training crop and the backbone's stride, in pixels.
        min_box_size: boxes narrower or lower than this after the crop are masked (ClipTransform's).

    Items ``{"features" (C, T', crop/s, crop/s), "boxes" (T, K, 4) in crop pixels, "box_mask", "target"}``.
    Random numbers come from torch's global generator, and only where there is a choice (a square
    frame of side crop_size without flip draws none).
    """

    def __init__(self, features, boxes, box_mask, targets, frame_sizes, *, crop_size: int, stride: int,
                 min_box_size: float, classes):
        self.features, self.boxes, self.box_mask, self.targets = features, boxes, box_mask, targets
        self.frame_sizes = frame_sizes
        self.crop_size, self.stride, self.min_box_size = int(crop_size), int(stride), float(min_box_size)
        self.classes = classes

    def __len__(self) -> int:
        return len(self.features)

    def _draw(self, n: int) -> int:
        return int(torch.randint(n, ())) if n > 1 else 0

    def __getitem__(self, i: int) -> dict:
        feats = self.features[i]  # (V, C, T', H', W')
        v = self._draw(feats.shape[0])
        h, w = (int(x) for x in self.frame_sizes[i])
        cells, s = self.crop_size // self.stride, self.stride
        oy = self._draw((h - self.crop_size) // s + 1)  # crop offset in cells: 0 .. (H - crop) // s
        ox = self._draw((w - self.crop_size) // s + 1)
        crop = feats[v, :, :, oy:oy + cells, ox:ox + cells]
        if crop.shape[-2:] != (cells, cells):
            raise RuntimeError(f"cached map {tuple(feats.shape[-2:])} too small for a {cells}-cell crop "
                               f"at ({oy}, {ox})")
        boxes = self.boxes[i][v] - boxes_offset(oy * s, ox * s)
        boxes = boxes.clamp(min=0, max=float(self.crop_size))
        wide = (boxes[..., 2] - boxes[..., 0]) >= self.min_box_size
        keep = wide & ((boxes[..., 3] - boxes[..., 1]) >= self.min_box_size)
        mask = self.box_mask[i][v] & keep
        return {"features": crop, "boxes": boxes.masked_fill(~mask[..., None], 0.0), "box_mask": mask,
                "target": self.targets[i][v]}


def boxes_offset(top: int, left: int) -> torch.Tensor:
    """The (x1, y1, x2, y2) shift of a crop at (top, left)."""
    return torch.tensor([left, top, left, top], dtype=torch.float32)


def _cache_key(backbone: torch.nn.Module, settings: dict, dataset, amp: str) -> str:
    """A hash of the backbone's weights, the settings (model and data sections, max_boxes), the
    videos of the dataset (their ids, when it lists them) and the mixed precision."""
    videos = [getattr(v, "video_id", None) for v in getattr(dataset, "videos", [])]
    h = hashlib.sha256()
    h.update(json.dumps({"settings": settings, "items": len(dataset), "videos": videos, "amp": amp},
                        sort_keys=True, default=str).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on Linux / macOS
        return None


def build_feature_cache(
    model,
    dataset,
    *,
    collate_fn,
    device: torch.device,
    amp: str,
    batch_size: int,
    num_workers: int,
    settings: dict,
    cache_dir: str | os.PathLike | None,
    progress: bool,
    log,
    source: str,
) -> CachedFeatures:
    """Run the (frozen) backbone once over ``dataset`` and keep its outputs, boxes and targets.

    ``amp`` is the training's mixed precision (``"none"``, ``"bf16"``, ``"fp16"``); the features are
    kept in the dtype the backbone gives under it, on the CPU. With ``cache_dir`` the result is saved as
    ``<cache_dir>/features-<key>.pt`` (atomically) and loaded from there when the key matches.
    """
    with torch.random.fork_rng(devices=[]):  # reading items here must not move training's random stream
        return _build(model, dataset, collate_fn=collate_fn, device=device, amp=amp, batch_size=batch_size,
                      num_workers=num_workers, settings=settings, cache_dir=cache_dir, progress=progress, log=log,
                      source=source)


@torch.no_grad()
def _build(model, dataset, *, collate_fn, device, amp, batch_size, num_workers, settings, cache_dir, progress, log,
           source):
    backbone = model.backbone
    views = full_frame_views(dataset, stride=int(backbone.spatial_stride), source=source)
    for view in views or [dataset]:
        check_repeatable(view, source, full_frame=views is not None)
    tag = {"cache": "full-frame views", "views": len(views)} if views else {"cache": "as read"}
    key = _cache_key(backbone, {**settings, **tag}, dataset, amp)
    path = Path(cache_dir) / f"features-{key}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if not all(len(saved[k]) == len(dataset) for k in ("features", "boxes", "box_mask", "targets")):
                raise ValueError(f"it holds {len(saved['features'])} clips, the dataset {len(dataset)}")
            log.info(f"train.cache_features: the backbone's output of {len(dataset)} training clips from {path}")
            return _dataset(saved, dataset, views, backbone)
        except Exception as e:  # a broken cache file is recomputed, not fatal
            log.info(f"train.cache_features: {path} is unreadable ({type(e).__name__}: {e}); computing it again")
    was_training = backbone.training
    backbone.eval()
    t0 = time.time()
    if views is None:
        saved = _run_as_read(backbone, dataset, collate_fn=collate_fn, device=device, amp=amp, batch_size=batch_size,
                             num_workers=num_workers, progress=progress, source=source)
    else:
        saved = _run_views(backbone, views, collate_fn=collate_fn, device=device, amp=amp, batch_size=batch_size,
                           num_workers=num_workers, progress=progress, source=source)
    backbone.train(was_training)
    cached = _dataset(saved, dataset, views, backbone)
    feats = saved["features"]
    size = sum(f.numel() * f.element_size() for f in (feats if isinstance(feats, list) else [feats]))
    shape = tuple(feats[0].shape) if isinstance(feats, list) else tuple(feats.shape[1:])
    log.info(f"train.cache_features: the backbone's output of {len(cached)} training clips, "
             f"{shape} each{' (views, C, T, H, W): crops and flips taken on it' if views else ''} "
             f"({size / 2**20:.0f} MiB), in {time.time() - t0:.1f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            torch.save(saved, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        log.info(f"train.cache_features: saved to {path}")
    return cached


def _dataset(saved: dict, dataset, views, backbone):
    if views is None:
        return CachedFeatures(saved["features"], saved["boxes"], saved["box_mask"], saved["targets"], dataset.classes)
    t = dataset.transform
    return AugmentedFeatures(saved["features"], saved["boxes"], saved["box_mask"], saved["targets"],
                             saved["frame_sizes"],
                             crop_size=t.crop_size, stride=int(backbone.spatial_stride), min_box_size=t.min_box_size,
                             classes=dataset.classes)


def _check_memory(x: torch.Tensor, clips: int, source: str) -> None:
    """ConfigError when ``clips`` outputs like ``x[0]`` would take over a quarter of the memory."""
    limit = _memory_bytes()
    need = x[0].numel() * x.element_size() * clips
    if limit is not None and need > limit // 4:  # the batches and their concatenation: twice that at the end
        raise ConfigError(
            f"{source}: train.cache_features would hold {need / 2**30:.1f} GiB of backbone output "
            f"({clips} clips x {tuple(x.shape[1:])}), more than a quarter of this machine's memory "
            f"({limit / 2**30:.1f} GiB); set train.cache_features=false"
        )


def _run_as_read(backbone, dataset, *, collate_fn, device, amp, batch_size, num_workers, progress, source) -> dict:
    """The backbone on every item as the dataset gives it: stacked tensors."""
    # its own generator: the loader must not draw from the global RNG (the dropout masks of training)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_fn,
                        generator=torch.Generator().manual_seed(0))
    feats, boxes, masks, targets = [], [], [], []
    for batch in progress_bar(loader, desc="cache features", disable=not progress, dynamic_ncols=True):
        if "clips" not in batch or batch.get("num_skipped", 0):
            raise ConfigError(f"{source}: train.cache_features: some training videos could not be read; "
                              "fix or remove them first")
        with autocast_context(device, amp):
            x = backbone(batch["clips"].to(device))  # (b, C, T', H', W')
        if not feats:
            _check_memory(x, len(dataset), source)
        feats.append(x.cpu())
        boxes.append(batch["boxes"])
        masks.append(batch["box_mask"])
        targets.append(batch["targets"])
    return {"features": torch.cat(feats), "boxes": torch.cat(boxes), "box_mask": torch.cat(masks),
            "targets": torch.cat(targets)}


def _as_list(items: list) -> list:
    return items


def _run_views(backbone, views, *, collate_fn, device, amp, batch_size, num_workers, progress, source) -> dict:
    """The backbone on the full frame of every clip in each view: per-clip tensors (V, ...).

    Clips of one frame size are batched together; frames of other sizes (aspect ratios) each keep
    their own map size."""
    per_view, checked = [], False
    for v, view in enumerate(views):
        loader = DataLoader(view, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_as_list,
                            generator=torch.Generator().manual_seed(0))
        out = {"features": [], "boxes": [], "box_mask": [], "targets": [], "frame_sizes": []}
        desc = f"cache features (view {v + 1}/{len(views)})" if len(views) > 1 else "cache features"
        for items in progress_bar(loader, desc=desc, disable=not progress, dynamic_ncols=True):
            if any(it is None or it.get("num_skipped", 0) for it in items):
                raise ConfigError(f"{source}: train.cache_features: some training videos could not be read; "
                                  "fix or remove them first")
            groups: dict = {}
            for j, it in enumerate(items):
                groups.setdefault(tuple(it["clip"].shape), []).append(j)
            result: list = [None] * len(items)
            for idx in groups.values():
                batch = collate_fn([items[j] for j in idx])
                with autocast_context(device, amp):
                    x = backbone(batch["clips"].to(device)).cpu()  # (b, C, T', H', W')
                if not checked:
                    _check_memory(x, len(view) * len(views), source)
                    checked = True
                for n, j in enumerate(idx):
                    result[j] = (x[n], batch["boxes"][n], batch["box_mask"][n], batch["targets"][n],
                                 torch.tensor(batch["clips"].shape[-2:]))
            for feat, box, mask, target, size in result:
                names = ("features", "boxes", "box_mask", "targets", "frame_sizes")
                for name, value in zip(names, (feat, box, mask, target, size)):
                    out[name].append(value)
        per_view.append(out)
    saved = {name: [torch.stack([pv[name][i] for pv in per_view]) for i in range(len(per_view[0][name]))]
             for name in ("features", "boxes", "box_mask", "targets")}
    saved["frame_sizes"] = torch.stack(per_view[0]["frame_sizes"])  # (N, 2): the views share the frame size
    return saved
