"""The frozen backbone's output for every training clip, computed once (``train.cache_features``).

In stage ``graph`` the I3D is frozen (paper section 6.1, "we fix the I3D features"), so when the
training clips are the same every epoch (no random crop, scale, flip or temporal jitter), its
output for a clip never changes: computing it once and training the head on it gives the same
gradients as running the backbone every iteration, for a fraction of the time. On the demo's data
a graph head then trains 6.6-8.1x faster per iteration (16-21 ms instead of 127-137, docs/demo.md).

Only for small data: the cache holds B x C x T' x H' x W' numbers per clip in memory (the demo:
2,400 clips x 256 x 8 x 4 x 4, 300 MiB; the paper's configuration would need 25 MB per clip), one
process (no DDP), and training transforms that give the same clip every time (checked on four
clips spread over the dataset). ``train.cache_dir`` also saves the cache there and reuses it when the backbone's
weights, the data settings and the dataset are the same (the demo's four graph runs share one).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from strg.engine.evaluator import autocast_context
from strg.errors import ConfigError
from strg.progress import progress_bar

__all__ = ["CachedFeatures", "build_feature_cache", "collate_features", "check_repeatable"]


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
        return {"features": self.features[i], "boxes": self.boxes[i], "box_mask": self.box_mask[i], "target": self.targets[i]}


def collate_features(items: list[dict]) -> dict:
    """Stack :class:`CachedFeatures` items into the engine's batch (``features`` instead of ``clips``)."""
    return {
        "features": torch.stack([it["features"] for it in items]),  # (B, C, T', H', W')
        "boxes": torch.stack([it["boxes"] for it in items]),  # (B, T, K, 4)
        "box_mask": torch.stack([it["box_mask"] for it in items]),  # (B, T, K)
        "targets": torch.stack([it["target"] for it in items]),
        "num_skipped": 0,
    }


def check_repeatable(dataset, source: str, *, probes: int = 4) -> None:
    """Raise ConfigError unless ``probes`` items spread over the dataset (the first, the last and
    some between) each give the same clip and boxes twice. A check, not a proof: a dataset that
    jitters only some of its videos can slip through (docs/engine.md)."""
    n = len(dataset)
    for i in sorted({round(k * (n - 1) / max(1, probes - 1)) for k in range(probes)}):
        a, b = dataset[i], dataset[i]
        if a is None or b is None:
            raise ConfigError(f"{source}: train.cache_features: training item {i} could not be read; fix or remove that video first")
        if not (torch.equal(a["clip"], b["clip"]) and torch.equal(a["boxes"], b["boxes"])):
            raise ConfigError(
                f"{source}: train.cache_features needs training clips that are the same every time, but training "
                f"item {i} came out different in two reads: turn off the random augmentation (data.flip=false, "
                "data.train_short_side=[S, S] with data.crop_size=S, videos no longer than the clip) or set "
                "train.cache_features=false"
            )


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
           source) -> CachedFeatures:
    check_repeatable(dataset, source)
    backbone = model.backbone
    key = _cache_key(backbone, settings, dataset, amp)
    path = Path(cache_dir) / f"features-{key}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if not all(saved[k].shape[0] == len(dataset) for k in ("features", "boxes", "box_mask", "targets")):
                raise ValueError(f"it holds {saved['features'].shape[0]} clips, the dataset {len(dataset)}")
            log.info(f"train.cache_features: the backbone's output of {len(dataset)} training clips from {path}")
            return CachedFeatures(saved["features"], saved["boxes"], saved["box_mask"], saved["targets"], dataset.classes)
        except Exception as e:  # a broken cache file is recomputed, not fatal
            log.info(f"train.cache_features: {path} is unreadable ({type(e).__name__}: {e}); computing it again")
    was_training = backbone.training
    backbone.eval()
    # its own generator: the loader must not draw from the global RNG (the dropout masks of training)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_fn,
                        generator=torch.Generator().manual_seed(0))
    feats, boxes, masks, targets = [], [], [], []
    t0 = time.time()
    limit = _memory_bytes()
    for batch in progress_bar(loader, desc="cache features", disable=not progress, dynamic_ncols=True):
        if "clips" not in batch or batch.get("num_skipped", 0):
            raise ConfigError(f"{source}: train.cache_features: some training videos could not be read; fix or remove them first")
        with autocast_context(device, amp):
            x = backbone(batch["clips"].to(device))  # (b, C, T', H', W')
        feats.append(x.cpu())
        boxes.append(batch["boxes"])
        masks.append(batch["box_mask"])
        targets.append(batch["targets"])
        if len(feats) == 1 and limit is not None:
            need = x[0].numel() * x.element_size() * len(dataset)
            if need > limit // 4:  # the batches and their concatenation: twice that at the end
                raise ConfigError(
                    f"{source}: train.cache_features would hold {need / 2**30:.1f} GiB of backbone output "
                    f"({len(dataset)} clips x {tuple(x.shape[1:])}), more than a quarter of this machine's memory "
                    f"({limit / 2**30:.1f} GiB); set train.cache_features=false"
                )
    backbone.train(was_training)
    cached = CachedFeatures(torch.cat(feats), torch.cat(boxes), torch.cat(masks), torch.cat(targets), dataset.classes)
    size = cached.features.numel() * cached.features.element_size()
    log.info(f"train.cache_features: the backbone's output of {len(cached)} training clips, "
             f"{tuple(cached.features.shape[1:])} each ({size / 2**20:.0f} MiB), in {time.time() - t0:.1f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            torch.save({"features": cached.features, "boxes": cached.boxes, "box_mask": cached.box_mask,
                        "targets": cached.targets}, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        log.info(f"train.cache_features: saved to {path}")
    return cached
