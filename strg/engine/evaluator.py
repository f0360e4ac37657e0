"""Multi-clip evaluation (paper section 6.1 "Inference"): :func:`evaluate` (a config and a
checkpoint) and :func:`evaluate_model` (a model and a dataset), which training also calls.

A test dataset yields one item per (video, clip x view); ``clip_index`` numbers them. The scores
of a video's items are combined by max (the paper: "aggregated together by Max-Pooling over the
scores") or mean, then scored with the official Charades mAP (multi-label data) or top-1/top-5
(single-label data). Every rank scores its shard; the scores are gathered on all ranks.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from strg.config import RunConfig, load_config
from strg.data.collate import make_collate
from strg.data.decode import decodes_on_gpu
from strg.engine import checkpoint as ckpt_lib
from strg.engine import distributed as dist_lib
from strg.engine.backbone_source import apply_backbone_source
from strg.engine.build import boxes_per_frame, dataset_from_config, model_from_config
from strg.engine.distributed import DistInfo, ShardSampler, all_gather_objects
from strg.engine.stage_checks import check_backbone_settings
from strg.errors import ConfigError, DataError
from strg.metrics import charades_map, topk_accuracy, write_submission
from strg.progress import progress_bar

logger = logging.getLogger(__name__)


def autocast_context(device: torch.device, amp: str):
    """bf16 / fp16 autocast on GPU (or where asked for explicitly); nothing for ``none``."""
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto``: bf16 on a GPU that supports it, else none (CPU autocast is slow)."""
    if amp != "auto":
        return amp
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "none"


def pin_batches(dataset, device: torch.device) -> bool:
    """Pin batches in page-locked memory for the copy to a GPU, unless the dataset decodes on the GPU."""
    return device.type == "cuda" and not decodes_on_gpu(getattr(dataset, "decode_backend", "auto"))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def forward(model, batch: dict, uses_boxes: bool) -> torch.Tensor:
    """logits (Tensor[B, C]) of a collated batch; boxes only for the models that use them.

    A batch of cached backbone outputs (``features``, :mod:`strg.engine.feature_cache`) skips the
    backbone."""
    # training batches carry one key per sample: dropout keyed to the sample (engine/sample_keys.py)
    keyed = {"dropout_keys": batch["sample_keys"]} if "sample_keys" in batch else {}
    if "features" in batch:
        boxes = (batch["boxes"], batch["box_mask"]) if uses_boxes else ()
        return model(None, *boxes, backbone_features=batch["features"], **keyed)
    if uses_boxes:
        return model(batch["clips"], batch["boxes"], batch["box_mask"], **keyed)
    return model(batch["clips"], **keyed)


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    dataset,
    *,
    collate_fn,
    info: DistInfo,
    multi_label: bool,
    batch_size: int = 1,
    num_workers: int = 0,
    combine: str = "max",
    scores: str = "prob",
    amp: str = "none",
    max_videos: int | None = None,
    progress: bool = True,
    predictions_path: str | Path | None = None,
) -> dict:
    """Score ``dataset`` (all clips x views of every video) and compute the metrics.

    Args:
        model: the (possibly DDP-wrapped) model; put in eval mode here and restored afterwards.
        dataset: items as in docs/DESIGN.md; ``dataset.videos`` in annotation order.
        combine: ``max`` (paper) or ``mean`` over a video's clips.
        scores: ``prob`` combines sigmoid (multi-label) / softmax outputs, ``logit`` raw logits.
        max_videos: score only the first N videos (items are assumed video-major, as the datasets
            of strg.data and the ``random`` kind produce them).
        predictions_path: where rank 0 writes ``id score_1 ... score_C`` lines (Charades format).

    Returns:
        ``{"mAP", "wAP"}`` (multi-label) or ``{"top1", "top5"}`` (none for a split without
        labels, targets -1), plus ``num_videos``, ``num_clips`` and ``num_skipped``; metrics are
        fractions in [0, 1].
    """
    num_videos_total = len(dataset.videos)
    indices = range(len(dataset))
    if max_videos is not None and max_videos < num_videos_total:
        per_video = len(dataset) // max(num_videos_total, 1)
        indices = range(max_videos * per_video)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(indices, info.rank, info.world_size),
                        num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_batches(dataset, info.device))
    local = _score_shard(model, loader, info, amp=amp, probabilities=scores == "prob", multi_label=multi_label,
                         progress=progress)
    vids, all_scores, all_targets, skipped = _gather(local, info)
    present = set(all_targets)
    _add_failed_videos(dataset, all_targets, num_items=len(indices))
    order, video_scores = _combine(vids, all_scores, sorted(all_targets), present, combine)
    target = torch.stack([all_targets[v] for v in order])
    metrics = _metrics(video_scores, target, [v in present for v in order], multi_label)
    metrics.update(num_videos=len(order), num_clips=int(vids.numel()), num_skipped=int(skipped))
    if predictions_path is not None and info.is_main:
        keep = [i for i, v in enumerate(order) if v in present]  # failed videos stay out of the file
        ids = [dataset.videos[order[i]].video_id for i in keep]
        write_submission(predictions_path, ids, np.asarray(video_scores[keep].numpy()))
    return metrics


def _score_shard(model, loader, info: DistInfo, *, amp: str, probabilities: bool, multi_label: bool,
                 progress: bool) -> tuple:
    """This rank's clip scores: (video index Tensor[N], scores Tensor[N, C] float64 or None,
    {video index: target}, items skipped)."""
    bare = model.module if hasattr(model, "module") else model
    uses_boxes = getattr(bare, "uses_boxes", False)
    was_training = model.training
    model.eval()
    video_index, clip_scores, targets = [], [], {}
    skipped = 0
    bar = progress_bar(loader, desc="eval", disable=not (progress and info.is_main), leave=False, dynamic_ncols=True)
    for batch in bar:
        skipped += batch.get("num_skipped", 0)
        if "clips" not in batch:
            continue
        batch = to_device(batch, info.device)
        with autocast_context(info.device, amp):
            logits = forward(model, batch, uses_boxes)
        logits = logits.double()  # (B, C); float64 so that sigmoid(x) != 1.0 up to x ~ 36 (no new ties)
        if probabilities:
            logits = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)
        clip_scores.append(logits.cpu())
        video_index.append(batch["video_index"].cpu())
        for v, t in zip(batch["video_index"].tolist(), batch["targets"].cpu()):
            targets[v] = t
    model.train(was_training)
    return (
        torch.cat(video_index) if video_index else torch.zeros(0, dtype=torch.int64),
        torch.cat(clip_scores) if clip_scores else None,
        targets,
        skipped,
    )


def _gather(local: tuple, info: DistInfo) -> tuple:
    """Every rank's :func:`_score_shard` result, concatenated (on every rank)."""
    parts = all_gather_objects(local, info)
    vids = torch.cat([p[0] for p in parts])  # (N_clips,)
    all_scores = torch.cat([p[1] for p in parts if p[1] is not None]) if vids.numel() else None
    all_targets: dict = {}
    for p in parts:
        all_targets.update(p[2])
    skipped = sum(p[3] for p in parts)
    if all_scores is None:
        why = f"all {skipped} items were skipped (unreadable videos; see the data warnings)" if skipped else \
            "the split is empty"
        raise DataError(f"evaluation produced no scores: {why}")  # the data's fault: no traceback
    return vids, all_scores, all_targets, skipped


def _add_failed_videos(dataset, all_targets: dict, *, num_items: int) -> None:
    """Videos whose every clip failed (on_error="skip") are scored like ids missing from a
    submission in the official Charades script: -inf for every class, and counted as wrong in
    top-k. Their targets come from the annotations, without decoding (added to ``all_targets``)."""
    if not hasattr(dataset, "clips_per_video"):
        return
    failed = [v for v in range(num_items // max(dataset.clips_per_video, 1)) if v not in all_targets]
    if failed and hasattr(dataset, "video_target"):
        names = ", ".join(dataset.videos[v].video_id for v in failed[:10])
        warnings.warn(f"{len(failed)} videos could not be read and are scored -inf: {names}", stacklevel=2)
        for v in failed:
            all_targets[v] = dataset.video_target(v)


def _combine(vids: torch.Tensor, all_scores: torch.Tensor, order: list[int], present: set, combine: str) -> tuple:
    """Section 6.1: the clips of each video combined by max (or mean). ``order``: the video
    indices in annotation order. Returns (order, video scores Tensor[V, C]); failed videos -inf."""
    rows = torch.as_tensor(order)
    position = torch.full((max(order) + 1,), -1, dtype=torch.int64)
    position[rows] = torch.arange(len(order))
    slot = position[vids]  # (N_clips,) row of each clip's video
    c = all_scores.shape[1]
    if combine == "max":
        video_scores = torch.full((len(order), c), -torch.inf, dtype=all_scores.dtype)
        video_scores = video_scores.scatter_reduce(0, slot[:, None].expand(-1, c), all_scores, "amax")
    else:
        video_scores = torch.zeros(len(order), c, dtype=all_scores.dtype).index_add_(0, slot, all_scores)
        video_scores /= torch.bincount(slot, minlength=len(order))[:, None].clamp(min=1)
    video_scores[torch.tensor([v not in present for v in order])] = -torch.inf  # failed videos
    return order, video_scores


def _metrics(video_scores: torch.Tensor, target: torch.Tensor, read: list[bool], multi_label: bool) -> dict:
    """The official Charades mAP / wAP (multi-label) or top-1 / top-5 with unread videos wrong."""
    if multi_label:
        result = charades_map(video_scores.numpy(), target.numpy())
        return {"mAP": result["mAP"], "wAP": result["wAP"]}
    if (target < 0).any():  # a test split without labels (Something-Something "test"): predictions only
        return {}
    read = torch.tensor(read)
    metrics = topk_accuracy(video_scores[read].numpy(), target[read].numpy(), ks=(1, 5))
    return {k: v * int(read.sum()) / len(read) for k, v in metrics.items()}  # failed: wrong


def evaluate(
    config: str | os.PathLike | dict | RunConfig,
    checkpoint: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    run_dir: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    val_set=None,
    predictions: str | os.PathLike | None = None,
) -> dict:
    """Evaluate a checkpoint: multi-clip scores, metrics, and a Charades-format predictions file.

    Args:
        config: the run's config (e.g. ``<run>/config.yaml``); ``checkpoint``: a checkpoint file
            or a run folder (its newest checkpoint); None evaluates the config's model as built.
        split: overrides ``eval.split``. ``predictions``: the predictions file (default
            ``<run_dir>/predictions_<split>.txt`` when run_dir is given).
        val_set: a dataset to use instead of the config's.
    """
    cfg = load_config(config, list(overrides) + ([f"eval.split={split}"] if split is not None else []))
    for note in apply_backbone_source(cfg):
        logger.info(note)
    ev, t = cfg.eval, cfg.train
    if ev.split is None:
        raise ConfigError("eval.split is null: nothing to evaluate")
    info = dist_lib.setup(t.device)
    if val_set is None:
        val_set = dataset_from_config(cfg.data, ev.split, training=False)
    model = model_from_config(cfg, len(val_set.classes), starting_weights=checkpoint is None)
    if checkpoint is not None:
        path = ckpt_lib.resolve_init(checkpoint)
        ckpt = ckpt_lib.load_checkpoint(path)
        check_backbone_settings(ckpt.get("config"), cfg, path, what="the checkpoint")
        ckpt_lib.load_model_state(model, ckpt, path)
    model.to(info.device)
    if predictions is None and run_dir is not None:
        predictions = Path(run_dir) / f"predictions_{ev.split}.txt"
    return evaluate_model(
        model, val_set, collate_fn=make_collate(boxes_per_frame(cfg.data, val_set, model.uses_boxes)), info=info,
        multi_label=bool(val_set.multi_label), batch_size=ev.batch_per_device, num_workers=ev.num_workers,
        combine=ev.combine, scores=ev.scores, amp=resolve_amp(t.amp, info.device), max_videos=ev.max_videos,
        progress=t.progress, predictions_path=predictions,
    )
