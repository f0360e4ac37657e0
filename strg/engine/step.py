"""One training iteration (paper section 6.1) and the data it reads.

:func:`train_batches` gives the micro-batches of a segment of iterations; :class:`TrainStep` runs
one iteration: ``accum`` micro-batches of ``batch_per_device`` clips forward and backward (DDP
synchronises the gradients on the last), the loss averaged over all processes and checked (a NaN
or infinite loss stops training before the weights change), then the SGD step. Loss: one sigmoid
BCE per class for multi-label data (Charades), softmax cross-entropy otherwise.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from strg.data.box_augment import augment_boxes
from strg.engine import distributed as dist_lib
from strg.engine.evaluator import autocast_context, forward, pin_batches, to_device
from strg.engine.sample_keys import KeyedCollate, KeyedItems
from strg.errors import StrgError


class TrainingDiverged(StrgError, RuntimeError):
    """The loss became NaN or infinite; the message names the iteration and the last checkpoint."""


def train_batches(dataset, *, first: int, stop: int, global_batch: int, batch_per_device: int, seed: int, info,
                  num_workers: int, collate_fn):
    """Micro-batches for iterations [first, stop), a fresh loader per segment between checkpoints.
    Each item is read with the global generators seeded by its position in the data stream, and
    its batch carries that key for its dropout mask (:mod:`strg.engine.sample_keys`), so a resumed
    run, and a run on any number of processes or workers, sees the same data and augmentation."""
    sampler = dist_lib.IterationBatchSampler(
        len(dataset), global_batch=global_batch, batch_per_device=batch_per_device,
        rank=info.rank, world_size=info.world_size, seed=seed, start=first, stop=stop, with_positions=True,
    )
    gen = torch.Generator().manual_seed(seed * 1_000_003 + first * 101 + info.rank)
    loader = DataLoader(KeyedItems(dataset, seed), batch_sampler=sampler, num_workers=num_workers,
                        collate_fn=KeyedCollate(collate_fn), pin_memory=pin_batches(dataset, info.device),
                        generator=gen, persistent_workers=False)
    return iter(loader)


class TrainStep:
    """One iteration of ``model`` (possibly DDP-wrapped; ``bare`` is the model inside)."""

    def __init__(self, model, bare, opt, *, accum: int, loss: str, amp: str, info, box_jitter: float = 0.0,
                 box_drop: float = 0.0):
        self.model, self.bare, self.opt, self.info = model, bare, opt, info
        self.accum, self.loss_kind, self.amp = accum, loss, amp
        self.box_jitter, self.box_drop = box_jitter, box_drop  # strg/data/box_augment.py
        # Modules with every parameter frozen (the I3D part in stage `graph`) stay in eval mode, so
        # that non-frozen BatchNorm does not update their statistics: "we fix the I3D features" (6.1).
        parts = (bare.backbone, getattr(bare, "reduce", None))
        self.fixed = [m for m in parts if m is not None and not any(p.requires_grad for p in m.parameters())]

    def train_mode(self) -> None:
        self.model.train()
        for m in self.fixed:
            m.eval()

    def __call__(self, stream, iteration: int, last_checkpoint) -> tuple[float, float, int]:
        """Run 0-based ``iteration`` on the next ``accum`` micro-batches of ``stream``.
        Returns (mean loss over all processes, lr used, items skipped)."""
        loss_sum, skipped = torch.zeros((), device=self.info.device), 0
        for a in range(self.accum):
            batch = next(stream)
            skipped += batch.get("num_skipped", 0)
            sync = a == self.accum - 1 or not self.info.enabled
            with (nullcontext() if sync else self.model.no_sync()):
                loss = self._loss(batch, iteration)
                self.opt.backward(loss / self.accum)
            loss_sum += loss.detach() / self.accum
        loss_value = float(dist_lib.all_reduce_mean(loss_sum, self.info))  # one sync per iteration
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"the loss is {loss_value} at iteration {iteration + 1}; stopped without updating the weights. "
                f"Last good checkpoint: {last_checkpoint or 'none written yet'}. Lower train.base_lr, add "
                f"train.warmup_iters or train.grad_clip, or use train.amp=bf16 instead of fp16"
            )
        return loss_value, self.opt.step(), skipped

    def _loss(self, batch: dict, iteration: int) -> torch.Tensor:
        if "clips" not in batch and "features" not in batch:  # every item of this micro-batch was skipped
            if self.info.enabled:  # no forward: DDP would skip this rank's all-reduce
                raise StrgError(
                    f"iteration {iteration + 1}: every item of a micro-batch was skipped; under DDP that "
                    "desynchronises the processes. strg's datasets replace bad videos in training; "
                    "a custom dataset must not return None while training"
                )
            return sum(p.sum() for p in self.opt.params) * 0.0  # one process: a no-op step
        batch = to_device(batch, self.info.device)
        if self.bare.uses_boxes and (self.box_jitter or self.box_drop):
            batch = self._augment_boxes(batch)
        with autocast_context(self.info.device, self.amp):
            logits = forward(self.model, batch, self.bare.uses_boxes)  # (b, C)
        logits = logits.float()
        if self.loss_kind == "bce":  # section 6.1: one sigmoid per class (Charades)
            return F.binary_cross_entropy_with_logits(logits, batch["targets"].float())
        return F.cross_entropy(logits, batch["targets"])  # softmax cross-entropy (Something-Something)

    def _augment_boxes(self, batch: dict) -> dict:
        """Random box shifts and dropped boxes (train.box_jitter, train.box_drop), keyed to the sample,
        the same for a clip whether its backbone output is cached or not."""
        if "features" in batch:  # cached backbone output: its frame is the map's extent in pixels
            stride = self.bare.backbone.spatial_stride
            frame = (batch["features"].shape[-2] * stride, batch["features"].shape[-1] * stride)
        else:
            frame = tuple(batch["clips"].shape[-2:])
        boxes, mask = augment_boxes(batch["boxes"], batch["box_mask"].bool(), batch["sample_keys"],
                                    frame_size=frame, jitter=self.box_jitter, drop=self.box_drop)
        return {**batch, "boxes": boxes, "box_mask": mask}
